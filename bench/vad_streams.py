"""One trial of bench/voice.py's VAD capacity: ``N`` concurrent real-time streams of 20 ms
frames, each through its own Silero VAD and turn detector inline in one Trio thread, on one
core. Prints the worst lateness of any frame (ms) after the first second.

    python bench/vad_streams.py N SECONDS
"""

from __future__ import annotations

import os
import sys

import numpy as np
import trio

from voxbridge.config.model import VADConfig
from voxbridge.voice.audio import FRAME_BYTES
from voxbridge.voice.turns import TurnDetector
from voxbridge.voice.vad import SileroVAD


async def main(streams: int, seconds: float) -> None:
    noise = (np.random.default_rng(1).normal(0, 2000, 16000 * 2)).astype("<i2").tobytes()
    worst = 0.0
    detectors = [TurnDetector(SileroVAD(), VADConfig()) for _ in range(streams)]  # ~40 ms each
    start = trio.current_time() + 0.5

    async def stream(n: int) -> None:
        nonlocal worst
        detector = detectors[n]
        due = start + n * 0.02 / streams  # spread over the frame period, as real clients are
        i = 0
        while due < start + seconds:
            await trio.sleep_until(due)
            await detector.push(noise[i : i + FRAME_BYTES])
            i = (i + FRAME_BYTES) % (len(noise) - FRAME_BYTES)
            if due > start + 1.0:  # after a second of warming up
                worst = max(worst, trio.current_time() - due)  # late, plus the work itself
            due += 0.02

    async with trio.open_nursery() as nursery:
        for n in range(streams):
            nursery.start_soon(stream, n)
    print(f"{worst * 1000:.2f}")


if __name__ == "__main__":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    trio.run(main, int(sys.argv[1]), float(sys.argv[2]))
