"""Offline text to speech: espeak-ng, through the library and voice data that the
espeakng-loader wheel ships (no network, no system package).

espeak-ng has no Python binding of its synthesis API, so its C functions are declared here with
ctypes (speak_lib.h); it renders about a second of speech in a couple of milliseconds. The
library keeps global state: one synthesis at a time, in a worker thread.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import trio

from .speech import AudioSink, SpeechError

__all__ = ["EspeakTTS", "sample_rate", "synthesize"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_SSML = 0x10  # espeakSSML: the text is SSML (<break time="1s"/>, <prosody>...)
_RATE_PARAMETER = 1  # espeakRATE: words per minute
_NORMAL_WPM = 175
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_rate = 0
_chunks: list[bytes] = []


def _keep(wav: ctypes._Pointer[ctypes.c_short], count: int, events: int) -> int:
    if count > 0 and wav:
        _chunks.append(ctypes.string_at(wav, count * 2))
    return 0  # go on


_collect = _CALLBACK(_keep)  # kept referenced: the library calls it for as long as it lives


def _library() -> tuple[ctypes.CDLL, int]:
    """The library, initialised once; its sample rate."""
    global _lib, _rate
    if _lib is None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        home = str(Path(espeakng_loader.get_data_path()).parent).encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 200, home, 0)
        if rate <= 0:
            raise SpeechError("espeak-ng did not start (its voice data is missing?)")
        lib.espeak_SetSynthCallback(_collect)
        _lib, _rate = lib, rate
    return _lib, _rate


def synthesize(text: str, voice: str = "en-us", speed: float = 1.0, *, ssml: bool = False) -> bytes:
    """``text`` spoken, ``s16le`` mono at :func:`sample_rate` (blocking: a couple of ms);
    ``ssml``: ``text`` is SSML."""
    with _lock:
        lib, _ = _library()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SpeechError(f"espeak-ng has no voice '{voice}' (try en-us, en-gb, de, fr...)")
        lib.espeak_SetParameter(_RATE_PARAMETER, round(_NORMAL_WPM * speed), 0)
        data = text.encode("utf-8") + b"\0"
        _chunks.clear()
        flags = _CHARS_UTF8 | (_SSML if ssml else 0)
        if lib.espeak_Synth(data, len(data), 0, 0, 0, flags, None, None) != 0:
            raise SpeechError("espeak-ng could not speak that text")
        return b"".join(_chunks)


def sample_rate() -> int:
    """espeak-ng's output rate (loads the library)."""
    with _lock:
        return _library()[1]


class EspeakTTS:
    """espeak-ng's voice ``voice`` (en-us by default)."""

    name = "offline"

    def __init__(self, voice: str = "en-us", speed: float = 1.0) -> None:
        self._voice, self._speed = voice, speed
        self.rate: int = sample_rate()

    async def synthesize(self, text: str, sink: AudioSink) -> None:
        pcm = await trio.to_thread.run_sync(synthesize, text, self._voice, self._speed)
        if pcm:
            await sink(pcm)
