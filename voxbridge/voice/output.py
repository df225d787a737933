"""Where a voice session's sound and events go: the channel's side of a session.

A channel (the web page's socket, a Discord voice connection, a file) implements
:class:`Output`. :class:`Pacer` keeps a channel's audio at real time with a small lead, so a
barge-in has little to take back.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from .audio import FRAME_SECONDS

__all__ = ["LEAD", "Output", "Pacer"]

LEAD = 0.1  # seconds of audio sent ahead of real time (the listener's jitter buffer)


class Output(Protocol):
    """A channel as a session sees it."""

    rate: int
    """The sample rate it takes audio at."""

    async def play(self, frame: bytes) -> None:
        """Send one 20 ms frame (``s16le`` mono at ``rate``); returns when it may take the next."""
        ...

    async def clear(self) -> None:
        """Drop what is queued or playing (a barge-in)."""
        ...

    async def event(self, event: dict[str, Any]) -> None:
        """Tell the listener something: ``transcript``, ``delta``, ``interrupted``, ``done``,
        ``error`` (SPEC §11)."""
        ...


class Pacer:
    """Spaces frames out at real time, ``lead`` seconds ahead of the listener."""

    def __init__(self, lead: float = LEAD) -> None:
        self._lead = lead
        self._start: float | None = None
        self._sent = 0

    async def wait(self) -> None:
        """Wait until the next frame is due, then count it."""
        now = trio.current_time()
        if self._start is None or now > self._start + self._sent * FRAME_SECONDS + FRAME_SECONDS:
            # First frame, or the stream ran dry (a pause): a new run starts now.
            self._start, self._sent = now, 0
        due = self._start + self._sent * FRAME_SECONDS - self._lead
        if due > now:
            await trio.sleep_until(due)
        else:
            await trio.lowlevel.checkpoint()
        self._sent += 1

    def reset(self) -> None:
        """Forget the current run (after a barge-in the next audio starts afresh)."""
        self._start, self._sent = None, 0
