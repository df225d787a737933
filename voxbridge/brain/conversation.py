"""One conversation's memory: what was said, and each answer as far as it reached the person."""

from __future__ import annotations

import itertools
from collections import deque

from .messages import Turn

__all__ = ["CUT_MARK", "Conversation"]

CUT_MARK = "…"
"""Ends an answer that was cut off (cancelled, interrupted, failed midway)."""

# Twice the schema's largest `history`: enough whatever the agent's setting becomes.
_KEEP = 2000


class Conversation:
    """The turns of one conversation (a Discord channel, a chat connection, a voice session)."""

    def __init__(self, keep: int = _KEEP) -> None:
        self._turns: deque[Turn] = deque(maxlen=keep)

    @property
    def turns(self) -> tuple[Turn, ...]:
        """Every turn kept, oldest first."""
        return tuple(self._turns)

    def context(self, history: int, question: str) -> list[Turn]:
        """What the brain is shown: the last ``history`` turns, then ``question``."""
        recent = list(itertools.islice(reversed(self._turns), history))  # the last, not all
        recent.reverse()
        return [*recent, Turn("user", question)]

    def spoke(self, text: str, *, cut: bool = False) -> None:
        """Remember something the agent said unasked (a greeting), as far as it went."""
        text = text.rstrip()
        if text or cut:
            self._turns.append(Turn("assistant", text + (CUT_MARK if cut else "")))

    def record(self, question: str, answer: str, *, cut: bool = False) -> None:
        """Remember an exchange. A ``cut`` answer is kept as far as it went, marked with ``…``
        (so the agent knows it was interrupted there); an answer that never started and was not
        cut (the brain failed) leaves no trace but the question."""
        self._turns.append(Turn("user", question))
        answer = answer.rstrip()
        if cut:
            self._turns.append(Turn("assistant", answer + CUT_MARK))
        elif answer:
            self._turns.append(Turn("assistant", answer))
