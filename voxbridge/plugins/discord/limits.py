"""``limits.per_user``: how much one person may ask (``10/min``), and the limiter that keeps it.

The limiter is GCRA (the generic cell rate algorithm, a token bucket kept as one number per
person): ``10/min`` lets a person send ten messages at once, then one every six seconds. Each
person costs one float, and people who have been quiet for a whole period are dropped, so a
large server never grows it without bound.

It lives with the agent, not with its bot: the runtime keeps it (``ctx.lasting``), so an edit
that restarts the bot neither resets anyone's allowance nor lets a burst through twice. A
restart of the whole process starts afresh: a limit is a courtesy to the LLM bill, not an
account balance, and writing every message's tick to the store would cost the message path
more than the limit saves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RATE_PATTERN", "Rate", "RateLimiter"]

_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0, "day": 86400.0}
RATE_PATTERN = r"^[1-9][0-9]{0,5}/(s|min|h|day)$"
"""The schema's pattern for a rate (the loader reports a mismatch with file:line)."""
_RATE = re.compile(RATE_PATTERN)
SWEEP_AT = 10_000  # people held before the quiet ones are dropped


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` messages per ``period`` seconds."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``10/min`` → Rate(10, 60.0).

        Raises:
            ValueError: not a rate (the schema refuses it before it gets here).
        """
        if not _RATE.match(text):
            raise ValueError(f"not a rate: {text!r} (expected N/s, N/min, N/h or N/day)")
        count, unit = text.split("/")
        return cls(int(count), _UNITS[unit])

    @property
    def interval(self) -> float:
        """Seconds one message adds to a person's account."""
        return self.period / self.count

    def __str__(self) -> str:
        unit = next(u for u, s in _UNITS.items() if s == self.period)
        return f"{self.count}/{unit}"

    def words(self) -> str:
        """``10 messages a minute``."""
        unit = {1.0: "a second", 60.0: "a minute", 3600.0: "an hour", 86400.0: "a day"}
        return f"{self.count} message{'s' if self.count != 1 else ''} {unit[self.period]}"


class RateLimiter:
    """Per-person allowance at a :class:`Rate` (see the module's docstring). Not thread-safe:
    it is used from the Trio thread only."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}  # person → when their account is empty again
        self._told: dict[str, float] = {}  # person → until when they were told to wait
        self._sweep_at = SWEEP_AT

    def take(self, person: str, rate: Rate, now: float) -> float:
        """Count a message of ``person`` at ``now`` (seconds, any monotonic clock): 0.0 if it is
        within the rate, else the seconds until one more would be (the message is not
        counted)."""
        due = max(self._due.get(person, now), now)
        wait = due + rate.interval - now - rate.period
        if wait > 0:
            return wait
        self._due[person] = due + rate.interval
        if len(self._due) > self._sweep_at:
            self._sweep(now)
        return 0.0

    def first_refusal(self, person: str, wait: float, now: float) -> bool:
        """Whether ``person``, refused for ``wait`` seconds, has not been told so already (one
        short reply per wait, not one per message: a flood must not be answered by a flood)."""
        if self._told.get(person, 0.0) > now:
            return False
        self._told[person] = now + wait
        return True

    def _sweep(self, now: float) -> None:
        self._due = {p: due for p, due in self._due.items() if due > now}
        self._told = {p: until for p, until in self._told.items() if until > now}
        self._sweep_at = max(SWEEP_AT, 2 * len(self._due))  # many active: not at every message

    def __len__(self) -> int:
        return len(self._due)
