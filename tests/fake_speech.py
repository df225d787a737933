"""Speech servers on 127.0.0.1 for tests: an OpenAI audio API (transcriptions, speech) and a
Wyoming server (ASR and TTS), each answering as planned and recording what it was asked.

The Wyoming server is the wyoming package's own encoder and decoder on a plain threaded socket
server: the real protocol implementation as the peer.
"""

from __future__ import annotations

import json
import socketserver
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fake_brains import Plan, _Recorder

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    from wyoming.asr import Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.event import read_event, write_event


def tone(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 330 * t) * 9000).astype("<i2").tobytes()


@dataclass
class FakeOpenAIAudio(_Recorder):
    """``POST /v1/audio/transcriptions`` and ``POST /v1/audio/speech``.

    Transcription steps: ``{"text": …}``, ``{"status": N}``, ``{"delay": s}``. Speech steps:
    ``{"seconds": s}`` of tone at ``rate`` in ``chunk``-byte pieces ``chunk_delay`` apart, the
    first after ``delay``, ``{"status": N}``, ``{"json": …}`` (not audio), ``{"hang": True}``
    (headers, then nothing).
    """

    stt: Plan = field(default_factory=lambda: Plan([{"text": "hello there"}]))
    tts: Plan = field(default_factory=lambda: Plan([{"seconds": 0.5}]))
    rate: int = 24_000
    uploads: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/audio/transcriptions", self._transcribe, methods=["POST"]),
                Route("/v1/audio/speech", _Speech(self), methods=["POST"]),
            ]
        )

    async def _transcribe(self, request: Request) -> Response:
        async with request.form() as form:
            upload: Any = form["file"]
            self.headers.append(dict(request.headers))
            self.uploads.append(
                {k: v for k, v in form.items() if k != "file"}
                | {"filename": upload.filename, "audio": await upload.read()}
            )
        self.record({"kind": "stt"})
        step = self.stt.next()
        if step.get("delay"):
            await trio.sleep(step["delay"])
        if step.get("status", 200) != 200:
            return JSONResponse({"error": "planned"}, status_code=step["status"])
        return JSONResponse({"text": step.get("text", "")})


class _Speech:
    def __init__(self, fake: FakeOpenAIAudio) -> None:
        self.fake = fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fake = self.fake
        await fake.take_json(Request(scope, receive), kind="tts")
        step = fake.tts.next()
        if step.get("status", 200) != 200:
            await JSONResponse({"error": "planned"}, status_code=step["status"])(
                scope, receive, send
            )
            return
        if "json" in step:
            await JSONResponse(step["json"])(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")],
            }
        )
        if step.get("hang"):
            await trio.sleep_forever()
        if step.get("delay"):
            await trio.sleep(step["delay"])
        audio = tone(float(step.get("seconds", 0.5)), fake.rate)
        chunk = int(step.get("chunk", 4801))  # odd on purpose: PCM split mid-sample
        for i in range(0, len(audio), chunk):
            await send(
                {"type": "http.response.body", "body": audio[i : i + chunk], "more_body": True}
            )
            if step.get("chunk_delay"):
                await trio.sleep(step["chunk_delay"])
        await send({"type": "http.response.body", "body": b""})


@dataclass
class FakeWyoming:
    """A Wyoming ASR + TTS server. ``transcript`` answers Transcribe; Synthesize gets
    ``seconds`` of tone at ``rate`` with ``channels``. ``mode`` ``"close"`` hangs up at once,
    ``"garbage"`` answers with bytes that are not Wyoming, ``"hang"`` never answers."""

    transcript: str = "turn on the lights"
    seconds: float = 0.4
    rate: int = 16_000
    channels: int = 1
    mode: str = "ok"
    received: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)
    port: int = 0

    @property
    def uri(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @contextmanager
    def serving(self) -> Iterator[FakeWyoming]:
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                if fake.mode == "close":
                    return
                if fake.mode == "garbage":
                    read_event(self.rfile)  # a request: answered with what is not Wyoming
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n\r\n" + bytes(range(256)) * 300)
                    self.rfile.read()  # until the client hangs up
                    return
                while (event := read_event(self.rfile)) is not None:
                    fake.received.append((event.type, event.data, len(event.payload or b"")))
                    if fake.mode == "hang":
                        continue
                    if event.type == "audio-stop":
                        write_event(Transcript(text=fake.transcript).event(), self.wfile)
                        return
                    if event.type == "synthesize":
                        self._speak()
                        return

            def _speak(self) -> None:
                audio = tone(fake.seconds, fake.rate)
                if fake.channels == 2:
                    mono = np.frombuffer(audio, "<i2")
                    audio = np.repeat(mono, 2).astype("<i2").tobytes()
                spec = {"rate": fake.rate, "width": 2, "channels": fake.channels}
                write_event(AudioStart(**spec).event(), self.wfile)
                step = 2 * fake.channels * fake.rate // 10
                for i in range(0, len(audio), step):
                    write_event(AudioChunk(audio=audio[i : i + step], **spec).event(), self.wfile)
                write_event(AudioStop().event(), self.wfile)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


def received_json(fake: FakeOpenAIAudio) -> list[dict[str, Any]]:
    """The JSON bodies of the speech requests (what was asked to be said)."""
    return [json.loads(json.dumps(r)) for r in fake.requests if r.get("kind") == "tts"]
