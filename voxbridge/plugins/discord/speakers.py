"""One speaker's voice packets → the pipeline's 16 kHz mono frames, in order, in real time.

Discord sends a speaker's Opus frames only while they talk (ending a burst with five silence
frames), over UDP: packets can arrive late, out of order or not at all. :class:`SpeakerStream`

- holds a packet that arrives ahead of a missing one for up to ``REORDER_WAIT``, then recovers
  the missing frame (Opus in-band FEC from the next packet when it is there, else concealment),
  so in-order packets pass with no added delay;
- drops what arrives after its place was filled, and restarts on a jump (a new burst);
- after the last packet, goes on producing silence in real time for ``tail`` seconds, because
  a turn ends on heard silence and Discord sends none; then it sleeps until the next packet;
- decodes with the speaker's own Opus decoder, straight to 16 kHz mono (:mod:`.opus`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from ...voice.audio import FRAME_BYTES, FRAME_SECONDS
from .opus import Decoder
from .rtp import Packet

__all__ = ["IDLE_AFTER", "REORDER_WAIT", "SpeakerStream"]

REORDER_WAIT = 0.04  # how long a gap may wait for its packet: two frames of jitter
IDLE_AFTER = 0.06  # no packet for this long: the speaker paused (or their packets are lost)
_MAX_CONCEAL = 5  # frames recovered in one gap; a longer one is a new burst
_SEQ = 1 << 16


class SpeakerStream:
    """Turns one speaker's packets, pushed as they arrive, into frames for ``hear``."""

    def __init__(self, hear: Callable[[bytes], Awaitable[None]], *, tail: float) -> None:
        self._hear = hear
        self._tail_frames = math.ceil(tail / FRAME_SECONDS)
        self._buffer: dict[int, Packet] = {}  # by extended sequence number
        self._next: int | None = None  # the extended sequence number due next
        self._arrived = trio.Event()
        self._news = False  # something arrived since the last _wait
        self._closed = False
        self._decoder = Decoder()
        self._pending = bytearray()
        self.counters = {"frames": 0, "recovered": 0, "late": 0}
        self._reported = dict(self.counters)

    def push(self, packet: Packet) -> None:
        """A packet arrived (call from the Trio thread)."""
        reference = self._next if self._next is not None else packet.sequence
        extended = reference + ((packet.sequence - reference + _SEQ // 2) % _SEQ) - _SEQ // 2
        if self._next is not None and extended < self._next:
            self.counters["late"] += 1  # its place was filled (recovered) already
            return
        self._buffer[extended] = packet
        self._news = True
        self._arrived.set()

    def news(self) -> dict[str, int]:
        """How much each counter grew since the last call."""
        grown = {
            k: v - self._reported[k] for k, v in self.counters.items() if v > self._reported[k]
        }
        self._reported = dict(self.counters)
        return grown

    def close(self) -> None:
        """The speaker left: finish what they said, then end the stream."""
        self._closed = True
        self._news = True
        self._arrived.set()

    async def run(self) -> None:
        """Produce frames until :meth:`close`."""
        while not self._closed:
            if self._buffer:
                await self._release()
            else:
                await self._pause()
        self._next = None
        await self._emit_silence(self._tail_frames)  # no pacing: nobody is talking

    async def _wait(self, seconds: float) -> bool:
        """Wait for a packet (or :meth:`close`); whether one came within ``seconds``."""
        return await self._wait_until(trio.current_time() + seconds)

    async def _wait_until(self, deadline: float) -> bool:
        """Wait for a packet (or :meth:`close`); whether one came before ``deadline``."""
        if not self._news:
            self._arrived = trio.Event()
            with trio.move_on_at(deadline):
                await self._arrived.wait()
        came, self._news = self._news, False
        return came

    async def _release(self) -> None:
        if self._next is None or min(self._buffer) - self._next > _MAX_CONCEAL:
            self._next = min(self._buffer)  # a new burst (or the first)
        packet = self._buffer.pop(self._next, None)
        if packet is None:  # a gap: give the missing packet a moment to arrive
            if not await self._wait(REORDER_WAIT) or self._next not in self._buffer:
                following = self._buffer.get(self._next + 1)
                self._next += 1
                self.counters["recovered"] += 1
                await self._emit(self._decoder.recover(following.payload if following else None))
            return
        self._next += 1
        await self._emit(self._decoder.decode(packet.payload))

    async def _pause(self) -> None:
        """No packet is waiting: the speaker paused. Silence counts toward the end of their turn
        only as it passes, so it is made in real time, then not at all."""
        paused = trio.current_time()
        if self._next is None or await self._wait_until(paused + IDLE_AFTER):
            if self._next is None:
                await self._wait(math.inf)
            return
        made = round(IDLE_AFTER / FRAME_SECONDS)
        await self._emit_silence(made)
        while made < self._tail_frames:
            # On the clock, not after each frame: the end of a turn must not drift late.
            if await self._wait_until(paused + (made + 1) * FRAME_SECONDS):
                return
            await self._emit_silence(1)
            made += 1
        self._next = None  # asleep: the next packet starts a new burst

    async def _emit_silence(self, frames: int) -> None:
        for _ in range(frames):
            await self._hear(bytes(FRAME_BYTES))

    async def _emit(self, pcm: bytes) -> None:
        self._pending += pcm  # whole 20 ms frames, but for a packet of another length
        while len(self._pending) >= FRAME_BYTES:
            frame = bytes(self._pending[:FRAME_BYTES])
            del self._pending[:FRAME_BYTES]
            self.counters["frames"] += 1
            await self._hear(frame)
