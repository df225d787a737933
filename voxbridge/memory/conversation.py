"""One conversation: what was said, and each answer as far as it reached the person — kept
in the process and, through the store, on disk.

Every channel that answers uses it the same way::

    conversation = await ctx.memory.conversation("discord:1234")
    exchange = conversation.ask(text, person="discord:42", name="Ann")
    turns = exchange.context(agent.history)
    async with ctx.think(message, turns, stored=exchange.stored) as answer:
        ...
    exchange.answered(answer.text, cut=not answer.done)

``ask`` records the question and queues its write; ``stored`` waits until it — and so every
turn of the conversation before it — is committed, and the brain awaits it before handing out
the answer's first words (the request goes out at once: the commit overlaps the brain's time).
So a turn is committed before the next message is answered, and a crash mid-answer keeps the
question. ``answered`` records the answer. Answers are ordered after their own question, not
after whatever was said in between, so a conversation where two people were answered at once
reads as whole exchanges.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from ..brain import Turn
from .backend import AddTurn, Write
from .records import ANSWER, QUESTION, StoredTurn, new_exchange

__all__ = ["CUT_MARK", "Conversation", "Exchange", "Journal"]

CUT_MARK = "…"
"""Ends an answer that was cut off (cancelled, interrupted, failed midway)."""

KEEP = 2000
"""Turns held in the process per conversation: twice the schema's largest ``history``."""
COMMIT_WAIT = 2.0
"""Seconds an answer waits, at most, for its question to be committed (while the store is
healthy; a failing store is not waited for)."""


class Journal(Protocol):
    """Where a durable conversation's turns go (the runtime's :class:`~.store.Store`)."""

    def put(self, write: Write) -> int: ...

    async def committed(self, seq: int) -> bool: ...


@dataclass(eq=False)
class Exchange:
    """A question being answered: its place in the conversation and who asked it."""

    conversation: Conversation
    number: int
    question: str
    person: str | None = None
    name: str | None = None

    def context(self, history: int) -> list[Turn]:
        """What the brain is shown: the last ``history`` turns before the question, then it."""
        return self.conversation.context(history, self)

    closed: bool = False
    seq: int = 0
    """The question's write (0: not written: the conversation lives in the process only)."""

    async def stored(self) -> None:
        """Wait, briefly and only while the store is healthy, until the question (and every
        turn of the conversation before it) is committed."""
        journal = self.conversation.journal
        if journal is not None and self.seq:
            with trio.move_on_after(COMMIT_WAIT):
                await journal.committed(self.seq)

    def answered(self, text: str, *, cut: bool = False) -> None:
        """Record the answer as far as it reached the person (once: later calls do nothing). A
        ``cut`` answer is kept marked with ``…`` (so the agent knows it was interrupted
        there); an answer that never started and was not cut (the brain failed) leaves only
        the question."""
        if not self.closed:
            self.closed = True
            self.conversation.answered(self, text, cut=cut)


class Conversation:
    """The turns of one conversation (a Discord channel, a web chat, a voice channel...).

    Without a journal it lives in the process only (``memory.conversations: false``, tests).
    """

    def __init__(
        self,
        agent: str = "",
        place: str = "",
        turns: Sequence[StoredTurn] = (),
        *,
        journal: Journal | None = None,
        learn: Callable[[Exchange, str], None] | None = None,
        clock: Callable[[], float] | None = None,
        loaded: int | None = None,
        partial: bool = False,
    ) -> None:
        self.agent, self.place = agent, place
        self.loaded = loaded
        """How many turns were asked of the store (None: none were)."""
        self.partial = partial
        """Loaded while the store was failing: the turns before are missing."""
        self.journal = journal
        """Where turns are written (None: in the process only)."""
        self._learn = learn
        self._clock = clock or time.time
        self._keys: list[tuple[int, int]] = []
        self._turns: list[Turn] = []
        self.busy = 0
        """Exchanges asked and not answered yet (the registry keeps such a conversation)."""
        for turn in turns:
            self._insert((turn.exchange, turn.part), Turn(turn.role, turn.text))

    @property
    def turns(self) -> tuple[Turn, ...]:
        """Every turn held, oldest first."""
        return tuple(self._turns)

    @property
    def durable(self) -> bool:
        """Whether turns are written to the store."""
        return self.journal is not None

    def _insert(self, key: tuple[int, int], turn: Turn) -> None:
        at = bisect.bisect(self._keys, key)
        if at and self._keys[at - 1] == key:
            return  # held already (a turn loaded and also still queued)
        self._keys.insert(at, key)
        self._turns.insert(at, turn)
        if len(self._keys) > KEEP:
            del self._keys[0], self._turns[0]

    def _record(self, turn: StoredTurn) -> int:
        """Hold ``turn`` and queue its write; the write's sequence number (0: none)."""
        self._insert((turn.exchange, turn.part), Turn(turn.role, turn.text))
        return self.journal.put(AddTurn(turn)) if self.journal is not None else 0

    def ask(self, text: str, *, person: str | None = None, name: str | None = None) -> Exchange:
        """Record a question (its write queued: see :meth:`Exchange.stored`); its exchange."""
        exchange = Exchange(self, new_exchange(), text, person, name)
        exchange.seq = self._record(
            StoredTurn(
                self.agent, self.place, exchange.number, QUESTION, text, self._clock(), person, name
            )
        )
        self.busy += 1
        return exchange

    def answered(self, exchange: Exchange, text: str, *, cut: bool = False) -> None:
        """Record ``exchange``'s answer (see :meth:`Exchange.answered`)."""
        self.busy = max(0, self.busy - 1)
        text = text.rstrip()
        if not (text or cut):
            return
        self._record(
            StoredTurn(
                self.agent,
                self.place,
                exchange.number,
                ANSWER,
                text + CUT_MARK if cut else text,
                self._clock(),
                cut=cut,
            )
        )
        if text and not cut and self._learn is not None:
            self._learn(exchange, text)

    def spoke(self, text: str, *, cut: bool = False) -> None:
        """Record something the agent said unasked (a greeting), as far as it went."""
        text = text.rstrip()
        if text or cut:
            self._record(
                StoredTurn(
                    self.agent,
                    self.place,
                    new_exchange(),
                    ANSWER,
                    text + CUT_MARK if cut else text,
                    self._clock(),
                    cut=cut,
                )
            )

    def context(self, history: int, exchange: Exchange) -> list[Turn]:
        """The last ``history`` turns before ``exchange``'s question, then the question."""
        end = bisect.bisect_left(self._keys, (exchange.number, QUESTION))
        start = max(0, end - history) if history > 0 else end
        return [*self._turns[start:end], Turn("user", exchange.question)]
