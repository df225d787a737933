"""Speech for tests, made at test time with espeak-ng (the library espeakng-loader ships), never
downloaded or committed."""

from __future__ import annotations

import functools
from pathlib import Path

from voxbridge.voice import espeak_tts
from voxbridge.voice.audio import RATE, Resampler, wav_bytes


@functools.cache
def say(
    text: str, rate: int = RATE, pad: float = 0.5, speed: float = 0.85, *, ssml: bool = False
) -> bytes:
    """``text`` spoken (en-us, a little slow: pocketsphinx hears it better), as ``s16le`` mono at
    ``rate``, with ``pad`` seconds of silence either side; ``ssml``: ``text`` is SSML (a
    ``<break time="1s"/>`` pauses mid-sentence, the sentence's melody kept)."""

    spoken = espeak_tts.synthesize(text, "en-us", speed, ssml=ssml)  # usable anywhere
    silence = bytes(2 * int(pad * rate))
    return silence + Resampler(espeak_tts.sample_rate(), rate)(spoken, last=True) + silence


def wav_file(path: Path, *parts: bytes, rate: int = RATE) -> Path:
    """A WAV of ``parts`` (``s16le`` mono at ``rate``) one after the other."""
    path.write_bytes(wav_bytes(b"".join(parts), rate))
    return path
