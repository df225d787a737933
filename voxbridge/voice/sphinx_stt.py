"""Offline speech to text: pocketsphinx and the en-US model its wheel ships (no network, no
download).

pocketsphinx holds the GIL while it decodes (about a second for a few seconds of speech), so it
runs in worker processes (trio-parallel), never on the event loop's process: a decoder there is
loaded once (~0.3 s) and reused. Its second "fwdflat" pass is off: it made the end of every
utterance cost ~270 ms more for no better accuracy here.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import trio
import trio_parallel

from .speech import SpeechError

__all__ = ["SphinxSTT", "decode"]

_decoder: Any = None  # in each worker process


def _load() -> Any:
    global _decoder
    if _decoder is None:
        from pocketsphinx import Decoder  # its native library and model load here

        _decoder = Decoder(samprate=16_000, loglevel="FATAL", fwdflat=False)
    return _decoder


def decode(pcm: bytes) -> str:
    """The words in 16 kHz ``s16le`` ``pcm`` (runs in a worker process)."""
    decoder = _load()
    decoder.start_utt()
    decoder.process_raw(pcm)
    decoder.end_utt()
    hyp = decoder.hyp()
    return str(hyp.hypstr) if hyp is not None else ""


def _ready() -> bool:
    return _load() is not None


_limiter = trio.CapacityLimiter(max(1, os.cpu_count() or 1))


class SphinxSTT:
    """pocketsphinx with its bundled US English model."""

    name = "offline"

    async def warm(self) -> None:
        """Start a worker and load its decoder now: the first utterance need not wait for it."""
        with contextlib.suppress(trio_parallel.BrokenWorkerError):
            await trio_parallel.run_sync(_ready, limiter=_limiter)

    async def transcribe(self, pcm: bytes) -> str:
        try:
            text: str = await trio_parallel.run_sync(decode, pcm, limiter=_limiter)
            return text
        except (RuntimeError, ValueError, trio_parallel.BrokenWorkerError) as exc:
            raise SpeechError(f"pocketsphinx could not decode: {exc}") from None
