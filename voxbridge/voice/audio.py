"""Audio as the voice pipeline carries it, and the few conversions it needs.

Inside the pipeline audio is 16-bit signed little-endian mono PCM (``s16le``) at 16 kHz, in
frames of 20 ms (SPEC §11). Channels bring other rates; :class:`Resampler` (soxr, streaming)
converts, and WAV files go through the standard library's ``wave``. No hand-written DSP.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

from ..errors import VoxbridgeError

__all__ = [
    "FRAME_BYTES",
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "MAX_RATE",
    "MIN_RATE",
    "RATE",
    "AudioError",
    "Resampler",
    "Wav",
    "read_wav",
    "samples",
    "seconds",
    "to_float",
    "wav_bytes",
]

RATE = 16_000
FRAME_SECONDS = 0.02
FRAME_SAMPLES = int(RATE * FRAME_SECONDS)  # 320
FRAME_BYTES = FRAME_SAMPLES * 2  # 640
MIN_RATE, MAX_RATE = 8_000, 48_000  # what audio coming in may be sampled at (Hz)

Samples = npt.NDArray[np.int16]


class AudioError(VoxbridgeError):
    """Raised for audio that cannot be used: a file that is not a WAV, a format the pipeline
    does not take. The message says what was found and what is expected."""


def samples(pcm: bytes) -> Samples:
    """``s16le`` bytes as an array (an odd trailing byte is dropped)."""
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")


def to_float(pcm: Samples) -> npt.NDArray[np.float32]:
    """Samples scaled to [-1, 1)."""
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def seconds(pcm: bytes, rate: int = RATE) -> float:
    """How long ``s16le`` mono ``pcm`` lasts."""
    return len(pcm) / 2 / rate


class Resampler:
    """Streaming ``s16le`` mono conversion from one rate to another (soxr): feed chunks of any
    size, get what is ready; the filter state carries across chunks, so no clicks at edges."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self._stream = (
            None
            if rate_in == rate_out
            else soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16", quality="HQ")
        )

    def __call__(self, pcm: bytes, *, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        out = self._stream.resample_chunk(samples(pcm), last=last)
        return bytes(np.ascontiguousarray(out, dtype="<i2").tobytes())


@dataclass(frozen=True, slots=True)
class Wav:
    """A WAV file's audio as ``s16le`` mono at its own rate."""

    pcm: bytes
    rate: int


def read_wav(data: bytes, name: str = "the file") -> Wav:
    """The audio of a WAV file (16-bit PCM, 8 to 48 kHz; stereo is mixed down).

    Raises:
        AudioError: not a WAV, not 16-bit PCM, or a sample rate out of range.
    """
    try:
        with wave.open(io.BytesIO(data)) as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioError(f"{name} is not a WAV file ({exc}): give a 16-bit PCM .wav") from None
    if width != 2:
        raise AudioError(
            f"{name} holds {8 * width}-bit samples: give 16-bit PCM "
            "(e.g. `sox in.wav -b 16 out.wav`)"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(
            f"{name} is sampled at {rate:,} Hz: give {MIN_RATE:,} to {MAX_RATE:,} Hz "
            f"(16,000 is best; e.g. `sox in.wav -r 16000 out.wav`)"
        )
    pcm = samples(frames)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype("<i2")
    return Wav(pcm.tobytes(), rate)


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """``s16le`` mono ``pcm`` as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()
