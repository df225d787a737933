"""The speech providers an agent's ``voice`` section names, made ready for a session.

``offline`` speech to text is Whisper when its model is at hand (no download needed), else
pocketsphinx, whose model ships in its wheel; ``whisper`` downloads the model first when it has
to (into ``<state dir>/models``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from ..config.model import SpeechConfig, VoiceConfig, reveal
from .espeak_tts import EspeakTTS
from .models import DEFAULT_WHISPER, download_whisper, smart_turn_model, whisper_at_hand
from .openai_audio import OpenAISTT, OpenAITTS
from .smart_turn import SmartTurn
from .speech import STT, TTS, SpeechError
from .sphinx_stt import SphinxSTT
from .vad import VAD, SileroVAD
from .whisper_stt import WhisperSTT
from .wyoming import WyomingSTT, WyomingTTS

__all__ = ["MODELS", "Providers", "open_providers"]

log = logging.getLogger("voxbridge.voice")

MODELS = Path(".voxbridge") / "models"
"""Where downloaded models go when no state directory is given."""


class Providers:
    """A session's STT and TTS, a VAD for each of its speakers, and Smart Turn when asked
    for."""

    def __init__(
        self, vad: Callable[[], VAD], stt: STT, tts: TTS, smart_turn: SmartTurn | None = None
    ) -> None:
        self.vad, self.stt, self.tts, self.smart_turn = vad, stt, tts, smart_turn


def _whisper(config: SpeechConfig, directory: Path) -> WhisperSTT:
    return WhisperSTT(directory, config.compute_type, config.threads, config.language)


def _stt(config: SpeechConfig, http: httpx.AsyncClient, models: Path) -> STT:
    if config.provider == "openai":
        return OpenAISTT(config, http)
    if config.provider == "wyoming":
        return WyomingSTT(config)
    name = reveal(config.model or DEFAULT_WHISPER)
    if config.provider == "whisper":
        return _whisper(config, download_whisper(name, models))
    found = whisper_at_hand(name, models)
    return SphinxSTT() if found is None else _whisper(config, found)


def _smart_turn(config: VoiceConfig) -> SmartTurn | None:
    if not config.vad.smart_turn:
        return None
    try:
        smart = SmartTurn(smart_turn_model(config.vad.smart_turn))
        smart.load()
    except SpeechError as exc:
        # Turns still end, on silence alone: the conversation goes on.
        log.error("❌ %s; turns end after end_of_turn of silence meanwhile", exc)
        return None
    return smart


def _tts(config: SpeechConfig, http: httpx.AsyncClient) -> TTS:
    if config.provider == "openai":
        return OpenAITTS(config, http)
    if config.provider == "wyoming":
        return WyomingTTS(config)
    return EspeakTTS(reveal(config.voice or "en-us"), config.speed or 1.0)


async def open_providers(
    config: VoiceConfig, http: httpx.AsyncClient, models: Path = MODELS
) -> Providers:
    """The parts ``config`` asks for; ``models``: where downloaded models are kept. Native
    engines load in a worker thread (tens of ms the first time; a Whisper model downloads
    there too, once), never on the event loop.

    Raises:
        SpeechError: the Whisper model is not a known size nor a directory, or could not be
            downloaded.
    """

    def make() -> Providers:
        SileroVAD()  # the first one loads the shared model
        stt = _stt(config.stt, http, models)
        return Providers(SileroVAD, stt, _tts(config.tts, http), _smart_turn(config))

    return await trio.to_thread.run_sync(make)
