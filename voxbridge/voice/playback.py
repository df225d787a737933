"""The agent's voice in one turn: frames to the channel, and a pause that can be taken back.

A sound over the agent pauses its voice at once (:meth:`Voice.pause`): the frame being sent is
held back, the channel drops what it queued, and the frames the listener has not heard yet are
kept. If no words follow, :meth:`Voice.resume` plays those again first, so the answer goes on
where the listener stopped hearing it; if words follow, the turn is cancelled as a barge-in.

Which frames were heard is reckoned as a channel plays them: one after another from the moment
each is handed over, never before the previous one ends (the channel's lead is not heard yet).
A channel's player runs on its own clock (Discord's in disnake's thread), so the reckoning
takes back two frames more: 40 ms heard twice rather than a syllable lost.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import trio

from .output import Output

__all__ = ["Voice"]

_MARGIN = 2  # frames taken back beyond the reckoning

Played = Callable[[int], None]
"""Told ``1`` when the listener hears a frame, ``-1`` when a pause takes it back."""


class Voice:
    """Plays one turn's frames through ``output`` (20 ms at its rate)."""

    def __init__(self, output: Output) -> None:
        self._out = output
        self._frame = 0.02
        self.paused = False
        self._resumed = trio.Event()
        self._resumed.set()
        self._scope: trio.CancelScope | None = None
        # Frames handed over and when the listener begins to hear each: the unheard ones are
        # taken back by a pause. A pause only ever reaches back over the channel's lead.
        self._sent: collections.deque[tuple[float, bytes, Played]] = collections.deque(maxlen=50)
        self._heard_until = 0.0
        self._again: collections.deque[tuple[bytes, Played]] = collections.deque()

    async def play(self, frame: bytes, played: Played) -> None:
        """Send ``frame`` (after whatever a pause took back); while paused, wait."""
        while True:
            await self.drain()
            if await self._send(frame, played):
                return

    async def drain(self) -> None:
        """Wait out a pause and send again what it took back (before the turn may end)."""
        while self.paused or self._again:
            if self.paused:
                await self._resumed.wait()
                continue
            frame, played = self._again[0]
            if await self._send(frame, played):
                self._again.popleft()

    async def _send(self, frame: bytes, played: Played) -> bool:
        """Hand one frame over; False if a pause came first (it was not sent)."""
        if self.paused:
            return False
        with trio.CancelScope() as scope:
            self._scope = scope
            await self._out.play(frame)
            now = trio.current_time()
            starts = max(now, self._heard_until)
            self._heard_until = starts + self._frame
            self._sent.append((starts, frame, played))
            played(1)
        self._scope = None
        return not scope.cancelled_caught

    async def pause(self) -> None:
        """Stop at once, keeping what the listener has not heard yet."""
        if self.paused:
            return
        self.paused = True
        self._resumed = trio.Event()
        if self._scope is not None:
            self._scope.cancel()
        since = trio.current_time() - _MARGIN * self._frame
        unheard = [(frame, played) for starts, frame, played in self._sent if starts >= since]
        for _, played in unheard:
            played(-1)
        self._again.extendleft(reversed(unheard))
        self._sent.clear()
        self._heard_until = 0.0
        await self._out.clear()
        await self._out.event({"type": "paused"})

    async def resume(self) -> None:
        """Go on where the listener stopped hearing."""
        if not self.paused:
            return
        self.paused = False
        self._resumed.set()
        await self._out.event({"type": "resumed"})
