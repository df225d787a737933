"""Smart Turn v3: has the person finished speaking, or only paused?

Pipecat's end-of-turn model (an 8 MB ONNX, BSD-2-Clause; :mod:`.models` says where the file
comes from) hears the last 8 s of an utterance and gives the probability that it is complete.
Its input is prepared exactly as pipecat's ``LocalSmartTurnAnalyzerV3`` does: 16 kHz audio, the
last 8 s (zeros in front when shorter), normalized to zero mean and unit variance, as Whisper's
80-band log-mel features over 8 s (800 frames) — computed by faster-whisper's feature extractor
(it matches pipecat's own to 1e-5). Complete when the probability is above 0.5.

The model is loaded once per process and runs in a worker thread, never on the event loop;
questions from several streams take turns, each on two cores (~3 ms of features, 20-40 ms of
model here).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import trio

from .audio import RATE, samples, to_float

__all__ = ["SECONDS", "SmartTurn"]

SECONDS = 8  # of audio the model hears
_THREADS = min(2, os.cpu_count() or 1)  # 32 → 18-29 ms a question here
_lock = threading.Lock()
_sessions: dict[str, Any] = {}
_limiter = trio.CapacityLimiter(max(1, (os.cpu_count() or 1) // _THREADS))


def _load(path: Path) -> Any:
    with _lock:
        session = _sessions.get(str(path))
        if session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            options.intra_op_num_threads = _THREADS  # questions take turns, cores shared
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Log-mel features of near-silence drive the model into denormal floats: flushed
            # to zero, a question takes ~18 ms instead of ~90 ms, with the same answers.
            options.add_session_config_entry("session.set_denormal_as_zero", "1")
            session = _sessions[str(path)] = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        return session


def _features() -> Any:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(chunk_length=SECONDS)


class SmartTurn:
    """The model in ``path``; :meth:`complete` asks it about one utterance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._extractor: Any = None

    def load(self) -> None:
        """Load the model now (blocking; once per process)."""
        _load(self.path)
        if self._extractor is None:
            self._extractor = _features()

    def probability(self, pcm: bytes) -> float:
        """How likely the utterance in ``pcm`` (16 kHz ``s16le``) is finished (blocking)."""
        self.load()
        audio = to_float(samples(pcm))[-SECONDS * RATE :]
        audio = np.pad(audio, (SECONDS * RATE - len(audio), 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
        features = self._extractor(audio.astype(np.float32), padding=0)
        out = _load(self.path).run(None, {"input_features": features[None]})
        return float(out[0][0].item())

    async def complete(self, pcm: bytes) -> float:
        """:meth:`probability` in a worker thread."""
        p: float = await trio.to_thread.run_sync(self.probability, pcm, limiter=_limiter)
        return p
