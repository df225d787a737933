"""An OpenAI-compatible LLM server and an n8n-like webhook server, real HTTP on 127.0.0.1.

Both are Starlette apps served by hypercorn's Trio worker inside the test's nursery. Each
records the requests it received and answers as it is told (a reply, a status, a delay).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


async def serve_app(app: Starlette, *, task_status: trio.TaskStatus[str]) -> None:
    """Serve ``app`` on 127.0.0.1 (a free port); reports its base URL once listening."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None

    class Status:  # hypercorn reports every bind; the test wants the one URL
        def started(self, binds: list[str]) -> None:
            task_status.started(binds[0])

    await serve(app, config, task_status=Status(), mode="asgi")  # type: ignore[arg-type]


@dataclass
class Plan:
    """What the next requests get: each call pops one entry (the last one repeats)."""

    steps: list[dict[str, Any]] = field(default_factory=lambda: [{"reply": "hello"}])

    def next(self) -> dict[str, Any]:
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]


@dataclass(kw_only=True)
class _Recorder:
    """Requests received, and a way to wait for them."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    """``time.perf_counter()`` at each request's arrival."""
    headers: list[dict[str, str]] = field(default_factory=list)
    _arrived: trio.Event = field(default_factory=trio.Event)

    def record(self, body: dict[str, Any]) -> None:
        self.times.append(time.perf_counter())
        self.requests.append(body)
        self._arrived.set()
        self._arrived = trio.Event()

    async def take_json(self, request: Request, **extra: Any) -> dict[str, Any]:
        """Record a JSON request (its body with ``extra``, and its headers); the body."""
        body: dict[str, Any] = await request.json()
        self.headers.append(dict(request.headers))
        self.record(extra | body)
        return body

    async def wait_requests(self, count: int, limit_s: float = 10.0) -> None:
        """Wait until ``count`` requests have arrived."""
        with trio.fail_after(limit_s):
            while len(self.requests) < count:
                await self._arrived.wait()


NOTES = "You keep notes about the people"
"""How a request to learn facts (voxbridge.memory.facts) begins its system message."""


def bag_of_words(text: str, dims: int = 64) -> list[float]:
    """A deterministic embedding where texts sharing words (crudely stemmed) are near."""
    vector = [0.0] * dims
    for word in re.findall(r"[a-z]+", text.lower()):
        word = word.removesuffix("s")
        if len(word) < 3:
            continue
        digest = hashlib.sha256(word.encode()).digest()
        for i in range(dims):
            vector[i] += 1.0 if digest[i % 32] >> (i // 32) & 1 else -1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


@dataclass
class FakeLLM(_Recorder):
    """``POST /v1/chat/completions``: streams server-sent events when asked to stream (or JSON
    when ``stream_ok`` is False), honours a planned status, Retry-After and delay.

    Requests to learn facts (their system message begins with :data:`NOTES`) are answered from
    ``notes`` (the last one repeats; none: ``[]``) and recorded in ``note_requests``, apart from
    the conversation. ``POST /v1/embeddings`` answers :func:`bag_of_words` vectors, recorded in
    ``embedding_requests`` (``embeddings_fail``: it answers 500).

    A step may also say how the stream goes: ``chunks`` (the deltas; default: the reply's words),
    ``chunk_delay`` (seconds between them), ``break_after`` (drop the connection after that many
    chunks), ``error_after`` (an ``{"error": …}`` event after that many). It records when each
    answer's first chunk went out (``first_chunk_at``) and every client that hung up before the
    end (``disconnects``).

    Tools: a step with ``tool_calls`` (``[{"name": ..., "arguments": {...}}]``, ids made up
    when absent) streams them after its text as OpenAI does, each call's arguments in pieces
    across deltas (a JSON answer carries them whole); ``calls_done_at`` records when each
    such stream's last call piece went out. ``refuse_tools`` answers a request that has a
    ``tools`` field with that status, as a model without tool support does.
    """

    plan: Plan = field(default_factory=Plan)
    stream_ok: bool = True
    base_url: str = ""
    first_chunk_at: list[float] = field(default_factory=list)
    """``time.perf_counter()`` when each streamed answer's first chunk was sent."""
    disconnects: int = 0
    """Streams the client closed before the end."""
    chunks_sent: int = 0
    """Content chunks sent, over every stream."""
    _chunk: trio.Event = field(default_factory=trio.Event)
    hung_up: trio.Event = field(default_factory=trio.Event)
    """Set when a client hangs up mid-stream."""
    notes: list[str] = field(default_factory=list)
    note_requests: list[dict[str, Any]] = field(default_factory=list)
    embedding_requests: list[dict[str, Any]] = field(default_factory=list)
    embeddings_fail: bool = False
    calls_done_at: list[float] = field(default_factory=list)
    """``time.perf_counter()`` when each stream's last tool call piece was sent."""
    arrived_at: list[float] = field(default_factory=list)
    """``time.perf_counter()`` when each chat request reached the app, before its body is read
    (what the client's sending took, without this server's own parsing)."""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", _Endpoint(self), methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )

    async def _embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.embedding_requests.append(body)
        if self.embeddings_fail:
            return JSONResponse({"error": "planned"}, status_code=500)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": bag_of_words(text)}
            for i, text in enumerate(texts)
        ]
        return JSONResponse({"object": "list", "data": data, "model": body["model"]})

    def sent_chunk(self) -> None:
        self.chunks_sent += 1
        self._chunk.set()
        self._chunk = trio.Event()

    async def wait_chunks(self, count: int, limit_s: float = 10.0) -> None:
        """Wait until ``count`` content chunks have been sent, over every stream."""
        with trio.fail_after(limit_s):
            while self.chunks_sent < count:
                await self._chunk.wait()

    def note_reply(self, body: dict[str, Any]) -> str | None:
        """The answer to a request to learn facts, or None for any other request."""
        messages = body.get("messages") or [{}]
        if not str(messages[0].get("content", "")).startswith(NOTES):
            return None
        self.note_requests.append(body)
        if not self.notes:
            return "[]"
        return self.notes.pop(0) if len(self.notes) > 1 else self.notes[0]

    def chunks(self, step: dict[str, Any]) -> list[str]:
        if "chunks" in step:
            return [str(c) for c in step["chunks"]]
        if "tool_calls" in step and not step.get("reply"):
            return []
        return [word + " " for word in str(step.get("reply", "")).split(" ")]


def _calls(step: dict[str, Any]) -> list[dict[str, Any]]:
    """A step's tool calls in OpenAI's shape."""
    return [
        {
            "id": call.get("id", f"call_{n}"),
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}))},
        }
        for n, call in enumerate(step.get("tool_calls", []))
    ]


def _call_pieces(step: dict[str, Any]) -> list[dict[str, Any]]:
    """The deltas that stream a step's tool calls: the id and name first, then the arguments
    in three pieces each."""
    pieces: list[dict[str, Any]] = []
    for index, call in enumerate(_calls(step)):
        head = {"index": index, "id": call["id"], "type": "function"}
        pieces.append({**head, "function": {"name": call["function"]["name"], "arguments": ""}})
        args = call["function"]["arguments"]
        third = max(1, len(args) // 3)
        for start in range(0, len(args), third):
            pieces.append({"index": index, "function": {"arguments": args[start : start + third]}})
    return pieces


class _Endpoint:
    """A raw ASGI endpoint, so the stream can pause between events and see the client hang up
    (an async generator in a StreamingResponse would be left unfinished, and warned about,
    whenever a test cancels mid-answer)."""

    def __init__(self, fake: FakeLLM) -> None:
        self.fake = fake

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        fake = self.fake
        arrived = time.perf_counter()
        request = Request(scope, receive)
        body = await request.json()
        note = fake.note_reply(body)
        if note is not None:
            reply = {"choices": [{"message": {"role": "assistant", "content": note}}]}
            await JSONResponse(reply)(scope, receive, send)
            return
        fake.headers.append(dict(request.headers))
        fake.arrived_at.append(arrived)
        fake.record(body)
        step = fake.plan.next()
        if step.get("delay"):
            await trio.sleep(step["delay"])
        if step.get("refuse_tools") and body.get("tools"):
            refused = JSONResponse(
                {"error": "registry/model does not support tools"},
                status_code=step["refuse_tools"],
            )
            await refused(scope, receive, send)
            return
        if step.get("status", 200) != 200:
            headers = {"Retry-After": str(step["retry_after"])} if "retry_after" in step else {}
            planned = JSONResponse(
                {"error": "planned"}, status_code=step["status"], headers=headers
            )
            await planned(scope, receive, send)
            return
        chunks = fake.chunks(step)
        if not (body.get("stream") and fake.stream_ok):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(chunks)}
            if step.get("tool_calls"):
                message["tool_calls"] = _calls(step)
            reply = {"choices": [{"message": message}]}
            await JSONResponse(reply)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        ending = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                if ending:
                    return  # the client may close once it has the end: no hang-up
                fake.disconnects += 1
                fake.hung_up.set()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self._stream(send, step, chunks)
            tail = 'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
            ending = True
            await send({"type": "http.response.body", "body": tail.encode()})
            nursery.cancel_scope.cancel()

    async def _stream(self, send: Any, step: dict[str, Any], chunks: list[str]) -> None:
        async def event(data: str) -> None:
            await send({"type": "http.response.body", "body": data.encode(), "more_body": True})

        await event(": a comment line, ignored\n\n")
        for n, text in enumerate(chunks):
            if n == step.get("break_after"):
                raise RuntimeError("planned: the connection breaks")
            if n == step.get("error_after"):
                await event('data: {"error": {"message": "planned: model overloaded"}}\n\n')
                break
            if n and step.get("chunk_delay"):
                await trio.sleep(step["chunk_delay"])
            self.fake.sent_chunk()
            await event(f"data: {json.dumps({'choices': [{'delta': {'content': text}}]})}\n\n")
            if n == 0:
                self.fake.first_chunk_at.append(time.perf_counter())
        pieces = _call_pieces(step)
        for piece in pieces:
            await event(
                f"data: {json.dumps({'choices': [{'delta': {'tool_calls': [piece]}}]})}\n\n"
            )
        if pieces:
            self.fake.calls_done_at.append(time.perf_counter())


@dataclass
class FakeN8n(_Recorder):
    """``POST /webhook/<path>``: answers with the planned body (any JSON shape or plain text)."""

    plan: Plan = field(default_factory=lambda: Plan([{"json": {"output": "from n8n"}}]))
    base_url: str = ""

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/webhook/{path}", self._hook, methods=["POST"])])

    async def _hook(self, request: Request) -> Response:
        self.record(await request.json())
        step = self.plan.next()
        if step.get("delay"):
            await trio.sleep(step["delay"])
        if step.get("status", 200) != 200:
            return PlainTextResponse("planned failure", status_code=step["status"])
        if "text" in step:
            return PlainTextResponse(step["text"])
        return JSONResponse(step["json"])


async def start_fake(nursery: trio.Nursery, fake: FakeLLM | FakeN8n) -> str:
    """Serve ``fake`` in ``nursery``; returns (and stores) its base URL."""
    fake.base_url = await nursery.start(serve_app, fake.app())
    return fake.base_url
