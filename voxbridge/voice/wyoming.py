"""Speech through Home Assistant's Wyoming protocol (the ``wyoming`` package's events).

A request is one TCP connection to ``tcp://host:port``: STT sends Transcribe, AudioStart,
AudioChunk…, AudioStop and reads a Transcript; TTS sends Synthesize and reads AudioStart,
AudioChunk…, AudioStop. The package's I/O helpers are asyncio's; here its events are written
with its own encoder and read back over a Trio stream (a JSON header line, then the data and
payload bytes it announces).
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import trio
from wyoming.asr import Transcribe, Transcript
from wyoming.event import Event, write_event
from wyoming.tts import Synthesize, SynthesizeVoice

with warnings.catch_warnings():
    # wyoming.audio imports the standard library's audioop (deprecated) for helpers not used here
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    from wyoming.audio import AudioChunk, AudioStart, AudioStop

from ..config.model import SpeechConfig, reveal
from .audio import RATE, Resampler, samples
from .speech import AudioSink, SpeechError

__all__ = ["WyomingSTT", "WyomingTTS"]

_CHUNK = 2 * RATE // 10  # 100 ms of 16 kHz audio per AudioChunk
_MAX_HEADER = 64 * 1024  # a header line longer than this is not Wyoming
_MAX_BODY = 16 * 1024 * 1024


def _address(uri: str) -> tuple[str, int]:
    host, _, port = uri.removeprefix("tcp://").rpartition(":")
    return host, int(port)


class _Connection:
    """One Wyoming conversation over a TCP stream."""

    def __init__(self, stream: trio.SocketStream, shown: str, timeout: float) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._shown = shown
        self._timeout = timeout

    async def send(self, event: Event) -> None:
        out = io.BytesIO()
        write_event(event, out)
        try:
            with trio.fail_after(self._timeout):
                await self._stream.send_all(out.getvalue())
        except (trio.BrokenResourceError, trio.TooSlowError):
            raise SpeechError(
                f"the Wyoming server at {self._shown} closed the connection (or stopped reading)"
            ) from None

    async def _fill(self, wanted: int) -> None:
        with trio.fail_after(self._timeout):
            while len(self._buffer) < wanted:
                chunk = await self._stream.receive_some(65536)
                if not chunk:
                    raise SpeechError(f"the Wyoming server at {self._shown} closed the connection")
                self._buffer += chunk

    async def _line(self) -> bytes:
        with trio.fail_after(self._timeout):
            while (end := self._buffer.find(b"\n")) < 0:
                if len(self._buffer) > _MAX_HEADER:
                    raise SpeechError(f"the server at {self._shown} does not speak Wyoming")
                chunk = await self._stream.receive_some(65536)
                if not chunk:
                    raise SpeechError(f"the Wyoming server at {self._shown} closed the connection")
                self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    async def _take(self, size: int) -> bytes:
        if not 0 <= size <= _MAX_BODY:
            raise SpeechError(f"the Wyoming server at {self._shown} announced {size} bytes")
        await self._fill(size)
        taken = bytes(self._buffer[:size])
        del self._buffer[:size]
        return taken

    async def receive(self) -> Event:
        try:
            header: dict[str, Any] = json.loads(await self._line())
            data = dict(header.get("data") or {})
            if header.get("data_length"):
                data.update(json.loads(await self._take(int(header["data_length"]))))
            payload = (
                await self._take(int(header["payload_length"]))
                if header.get("payload_length")
                else None
            )
            return Event(type=str(header["type"]), data=data, payload=payload)
        except trio.TooSlowError:
            raise SpeechError(
                f"the Wyoming server at {self._shown}: no answer within {self._timeout:g}s"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SpeechError(
                f"the server at {self._shown} does not speak Wyoming ({type(exc).__name__})"
            ) from None


async def _connect(config: SpeechConfig, field: str) -> tuple[_Connection, trio.SocketStream]:
    uri = reveal(config.uri or "")
    shown = uri if not config.uri or isinstance(config.uri, str) else f"the (encrypted) {field}"
    host, port = _address(uri)
    try:
        with trio.fail_after(min(10.0, config.timeout)):
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as exc:
        reason = "timed out" if isinstance(exc, trio.TooSlowError) else exc.strerror or exc
        raise SpeechError(f"cannot reach the Wyoming server at {shown}: {reason}") from None
    return _Connection(stream, shown, config.timeout), stream


class WyomingSTT:
    """Speech to text through a Wyoming ASR server (faster-whisper, vosk...)."""

    name = "wyoming"

    def __init__(self, config: SpeechConfig) -> None:
        self._config = config

    async def transcribe(self, pcm: bytes) -> str:
        connection, stream = await _connect(self._config, "voice.stt.uri")
        async with stream:
            language = self._config.language
            await connection.send(Transcribe(language=language).event())
            await connection.send(AudioStart(rate=RATE, width=2, channels=1).event())
            for i in range(0, len(pcm), _CHUNK):
                chunk = AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[i : i + _CHUNK])
                await connection.send(chunk.event())
            await connection.send(AudioStop().event())
            while True:
                event = await connection.receive()
                if Transcript.is_type(event.type):
                    return Transcript.from_event(event).text or ""


class WyomingTTS:
    """Text to speech through a Wyoming TTS server (Piper...): its audio is resampled to
    ``sample_rate`` (default 22,050 Hz, Piper's) when the server announces another."""

    name = "wyoming"

    def __init__(self, config: SpeechConfig) -> None:
        self._config = config
        self.rate: int = config.sample_rate or 22_050

    async def synthesize(self, text: str, sink: AudioSink) -> None:
        connection, stream = await _connect(self._config, "voice.tts.uri")
        voice = SynthesizeVoice(name=reveal(self._config.voice)) if self._config.voice else None
        async with stream:
            await connection.send(Synthesize(text=text, voice=voice).event())
            resample: Resampler | None = None
            channels = 1
            while True:
                event = await connection.receive()
                if AudioStart.is_type(event.type):
                    start = AudioStart.from_event(event)
                    if start.width != 2:
                        raise SpeechError(
                            f"the Wyoming server sends {8 * start.width}-bit audio; "
                            "voxbridge takes 16-bit"
                        )
                    channels = max(1, start.channels)
                    resample = Resampler(start.rate, self.rate)
                elif AudioChunk.is_type(event.type):
                    if resample is None:
                        raise SpeechError("the Wyoming server sent audio before AudioStart")
                    pcm = event.payload or b""
                    if channels > 1:
                        frames = samples(pcm)
                        frames = frames[: len(frames) - len(frames) % channels]
                        pcm = frames.reshape(-1, channels).mean(axis=1).astype("<i2").tobytes()
                    out = resample(pcm)
                    if out:
                        await sink(out)
                elif AudioStop.is_type(event.type):
                    if resample is not None and (rest := resample(b"", last=True)):
                        await sink(rest)
                    return
