"""The speech providers an agent's ``voice`` section names, made ready for a session."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import trio

from ..config.model import SpeechConfig, VoiceConfig, reveal
from .espeak_tts import EspeakTTS
from .openai_audio import OpenAISTT, OpenAITTS
from .speech import STT, TTS
from .sphinx_stt import SphinxSTT
from .vad import VAD, SileroVAD
from .wyoming import WyomingSTT, WyomingTTS

__all__ = ["Providers", "open_providers"]


class Providers:
    """A session's STT and TTS, and a VAD for each of its speakers."""

    def __init__(self, vad: Callable[[], VAD], stt: STT, tts: TTS) -> None:
        self.vad, self.stt, self.tts = vad, stt, tts


def _stt(config: SpeechConfig, http: httpx.AsyncClient) -> STT:
    if config.provider == "openai":
        return OpenAISTT(config, http)
    if config.provider == "wyoming":
        return WyomingSTT(config)
    return SphinxSTT()


def _tts(config: SpeechConfig, http: httpx.AsyncClient) -> TTS:
    if config.provider == "openai":
        return OpenAITTS(config, http)
    if config.provider == "wyoming":
        return WyomingTTS(config)
    return EspeakTTS(reveal(config.voice or "en-us"), config.speed or 1.0)


async def open_providers(config: VoiceConfig, http: httpx.AsyncClient) -> Providers:
    """The parts ``config`` asks for. Native engines load in a worker thread (tens of ms the
    first time), never on the event loop."""

    def make() -> Providers:
        SileroVAD()  # the first one loads the shared model
        return Providers(SileroVAD, _stt(config.stt, http), _tts(config.tts, http))

    return await trio.to_thread.run_sync(make)
