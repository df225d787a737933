"""Opus for Discord voice: libopus through disnake's binding, without a system library.

A fresh Linux machine has no libopus, and disnake looks only for a system one. PyAV's wheel
bundles a complete libopus (encoder, decoder, packet loss concealment, in-band FEC), so
:func:`load` points disnake at it.

:class:`Decoder` decodes straight to the pipeline's 16 kHz mono: Discord sends 48 kHz stereo,
and libopus renders any stream at any of its rates and channel counts itself, for less than
decoding it whole and then mixing down and resampling (a fifth less CPU in the Trio thread
for one speaker, measured). It also replaces ``disnake.opus.Decoder.decode``, which sizes its
buffer by the packet's channel count while the decoder writes its own: a mono packet into a
stereo decoder (Discord's silence frame is one) overflows the heap.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import disnake.opus

__all__ = ["RATE", "Decoder", "OpusUnavailable", "load"]

RATE = 16_000
"""The rate decoded to (the voice pipeline's), mono."""
_FRAME = RATE // 50  # samples in 20 ms
_MOST = RATE // 10  # samples in 120 ms, the longest Opus packet


class OpusUnavailable(RuntimeError):
    """No libopus could be loaded."""


@functools.cache
def load() -> None:
    """Load libopus once: PyAV's bundled copy, else the system's.

    Raises:
        OpusUnavailable: neither is there (install ``av``, or the system's libopus).
    """
    if disnake.opus.is_loaded():
        return
    try:
        import av
    except ImportError:
        candidates: list[Path] = []
    else:
        # The file name carries a build hash that changes between PyAV releases.
        base = Path(av.__file__).parent
        candidates = sorted(base.parent.glob("av.libs/libopus*.so*")) + sorted(
            base.glob(".dylibs/libopus*.dylib")
        )
    for candidate in candidates:
        try:
            disnake.opus.load_opus(str(candidate))
        except OSError:
            continue
        return
    if not disnake.opus._load_default():
        raise OpusUnavailable(
            "no libopus: install PyAV (pip install av), which bundles one, or the system's "
            "libopus (apt install libopus0)"
        )


class _Mono16k(disnake.opus.Decoder):
    SAMPLING_RATE = RATE  # read by disnake when it creates the decoder's state
    CHANNELS = 1


class Decoder:
    """One speaker's Opus decoder, to ``s16le`` mono at :data:`RATE`."""

    def __init__(self) -> None:
        load()
        self._decoder = _Mono16k()
        self._pcm = (ctypes.c_int16 * _MOST)()

    def decode(self, packet: bytes) -> bytes:
        """Decode one packet."""
        return self._run(packet, self._samples(packet), fec=False)

    def recover(self, following: bytes | None) -> bytes:
        """One frame in place of a lost packet: from the forward error correction data carried
        in ``following`` when that packet has arrived, else concealed (PLC)."""
        return self._run(following, _FRAME, fec=following is not None)

    @staticmethod
    def _samples(packet: bytes) -> int:
        lib = disnake.opus._lib
        frames: int = lib.opus_packet_get_nb_frames(packet, len(packet))
        per_frame: int = lib.opus_packet_get_samples_per_frame(packet, RATE)
        return max(0, frames) * per_frame

    def _run(self, packet: bytes | None, samples: int, *, fec: bool) -> bytes:
        samples = min(samples, _MOST) or _FRAME
        try:
            got: int = disnake.opus._lib.opus_decode(
                self._decoder._state,
                packet,
                len(packet) if packet else 0,
                ctypes.cast(self._pcm, disnake.opus.c_int16_ptr),
                samples,
                int(fec),
            )
        except disnake.opus.OpusError:  # a corrupt packet: its time passes as silence
            return bytes(2 * samples)
        return bytes(memoryview(self._pcm).cast("B")[: 2 * got])
