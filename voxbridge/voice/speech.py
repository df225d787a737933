"""What a speech provider is: small protocols for speech-to-text and text-to-speech.

Providers (offline engines, the OpenAI audio API, Wyoming servers) implement these; the voice
session only ever sees them. A provider that fails raises :class:`SpeechError` with a message for
people (it never quotes a key).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ..errors import VoxbridgeError

__all__ = ["STT", "TTS", "AudioSink", "SpeechError"]

AudioSink = Callable[[bytes], Awaitable[None]]
"""Takes the next piece of synthesized audio (``s16le`` mono, at the TTS's ``rate``)."""


class SpeechError(VoxbridgeError):
    """Raised when a speech provider (STT or TTS) cannot do its part: unreachable, refused,
    timed out, or answered with something that is not what was asked for."""


class STT(Protocol):
    """Speech to text."""

    name: str
    """For messages and metrics: ``offline``, ``openai``, ``wyoming``."""

    async def transcribe(self, pcm: bytes) -> str:
        """The words in one utterance of 16 kHz ``s16le`` mono audio ("" when there are none).

        Raises:
            SpeechError: the provider failed.
        """
        ...


class TTS(Protocol):
    """Text to speech, streamed: audio is handed on as it is made."""

    name: str
    rate: int
    """The sample rate of the audio it makes."""

    async def synthesize(self, text: str, sink: AudioSink) -> None:
        """Speak ``text`` into ``sink``, piece by piece.

        Raises:
            SpeechError: the provider failed.
        """
        ...
