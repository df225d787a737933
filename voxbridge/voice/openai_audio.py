"""Speech through the OpenAI audio API — what OpenAI, speaches, Kokoro-FastAPI and Chatterbox
servers speak.

* STT: ``POST {base_url}/audio/transcriptions``, multipart: the utterance as a WAV file.
* TTS: ``POST {base_url}/audio/speech`` with ``response_format: pcm`` (raw ``s16le`` mono, 24 kHz
  unless ``sample_rate`` says otherwise), read as a stream and handed on as it arrives.

Failures are retried like the LLM's (429 and 5xx honouring Retry-After, timeouts, unreachable
hosts) until the first audio; errors name the server but never the key.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import trio

from ..brain.llm import shown_url
from ..brain.retry import JITTER, RETRY_STATUS, Retry, retry_after, with_retries
from ..config.model import SpeechConfig, reveal
from ..errors import BrainError
from .audio import RATE, wav_bytes
from .speech import AudioSink, SpeechError

__all__ = ["OpenAISTT", "OpenAITTS"]

DEFAULT_RATE = 24_000  # OpenAI's "pcm" format


def _headers(config: SpeechConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key.reveal()}"} if config.api_key else {}


async def _refusal(response: httpx.Response, shown: str, config: SpeechConfig) -> str:
    detail = (await response.aread())[:200].decode("utf-8", "replace").strip()
    message = f"the speech server at {shown} refused: HTTP {response.status_code} {detail}"
    if response.status_code in (401, 403):
        message += ". Check its api_key" if config.api_key else ". It wants a key: set api_key"
    elif response.status_code == 404:
        model = reveal(config.model or "")
        message += f". Is base_url right (it ends in /v1) and is the model '{model}' there?"
    return message.rstrip()


async def _retrying(what: str, config: SpeechConfig, attempt: Any) -> None:
    try:
        await with_retries(what, attempt, JITTER, config.timeout, 0.5)
    except BrainError as exc:  # the retry helper speaks of brains; this is speech
        raise SpeechError(str(exc)) from None


class _Endpoint:
    """One route of an OpenAI-compatible speech server."""

    name = "openai"
    _path = ""
    _field = ""

    def __init__(self, config: SpeechConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http
        self._url = reveal(config.base_url or "").rstrip("/") + self._path
        self._shown = shown_url(config.base_url or "", self._field)


class OpenAISTT(_Endpoint):
    """Speech to text over ``/audio/transcriptions``."""

    _path, _field = "/audio/transcriptions", "voice.stt.base_url"

    async def transcribe(self, pcm: bytes) -> str:
        config = self._config
        data = {"model": reveal(config.model or ""), "response_format": "json"}
        if config.language:
            data["language"] = config.language
        files = {"file": ("utterance.wav", wav_bytes(pcm, RATE), "audio/wav")}
        text: list[str] = []

        async def attempt(scope: trio.CancelScope) -> None:
            response = await self._http.post(
                self._url, data=data, files=files, headers=_headers(config), timeout=config.timeout
            )
            if response.status_code in RETRY_STATUS:
                raise Retry(f"HTTP {response.status_code}", retry_after(response))
            if response.status_code >= 400:
                raise BrainError(await _refusal(response, self._shown, config))
            try:
                body = response.json()
                text.append(str(body["text"]) if isinstance(body, dict) else str(body))
            except (ValueError, KeyError) as exc:
                raise BrainError(
                    f"the speech server at {self._shown} answered without text ({exc!r})"
                ) from None

        await _retrying(f"the speech server at {self._shown}", config, attempt)
        return text[0]


class OpenAITTS(_Endpoint):
    """Text to speech over ``/audio/speech``, streamed as raw PCM."""

    _path, _field = "/audio/speech", "voice.tts.base_url"

    def __init__(self, config: SpeechConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config, http)
        self.rate: int = config.sample_rate or DEFAULT_RATE

    async def synthesize(self, text: str, sink: AudioSink) -> None:
        config = self._config
        body: dict[str, Any] = {
            "model": reveal(config.model or ""),
            "input": text,
            "voice": reveal(config.voice or "alloy"),
            "response_format": "pcm",
        }
        if config.speed:
            body["speed"] = config.speed
        timeout = httpx.Timeout(config.timeout, connect=min(10.0, config.timeout))
        delivered = 0

        async def attempt(scope: trio.CancelScope) -> None:
            nonlocal delivered
            async with self._http.stream(
                "POST", self._url, json=body, headers=_headers(config), timeout=timeout
            ) as response:
                if response.status_code in RETRY_STATUS:
                    raise Retry(f"HTTP {response.status_code}", retry_after(response))
                if response.status_code >= 400:
                    raise BrainError(await _refusal(response, self._shown, config))
                kind = response.headers.get("content-type", "")
                if kind.startswith(("application/json", "text/")):
                    raise BrainError(
                        f"the speech server at {self._shown} sent {kind}, not audio: does it "
                        "take response_format pcm?"
                    )
                odd = b""
                try:
                    async for chunk in response.aiter_bytes():
                        chunk, odd = odd + chunk, b""
                        if len(chunk) % 2:
                            chunk, odd = chunk[:-1], chunk[-1:]
                        if not chunk:
                            continue
                        if not delivered:
                            scope.deadline = math.inf  # speaking: no retries, no deadline
                        delivered += len(chunk)
                        await sink(chunk)
                except httpx.TransportError as exc:
                    if not delivered:
                        raise
                    raise BrainError(
                        f"the speech server at {self._shown} broke off ({type(exc).__name__})"
                    ) from None

        await _retrying(f"the speech server at {self._shown}", config, attempt)
        if not delivered:
            raise SpeechError(f"the speech server at {self._shown} sent no audio")
