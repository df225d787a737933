"""An OpenAI-compatible LLM server and an n8n-like webhook server, real HTTP on 127.0.0.1.

Both are Starlette apps served by hypercorn's Trio worker inside the test's nursery. Each
records the requests it received and answers as it is told (a reply, a status, a delay).
"""

from __future__ import annotations

import json
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
    _arrived: trio.Event = field(default_factory=trio.Event)

    def record(self, body: dict[str, Any]) -> None:
        self.times.append(time.perf_counter())
        self.requests.append(body)
        self._arrived.set()
        self._arrived = trio.Event()

    async def wait_requests(self, count: int, limit_s: float = 10.0) -> None:
        """Wait until ``count`` requests have arrived."""
        with trio.fail_after(limit_s):
            while len(self.requests) < count:
                await self._arrived.wait()


@dataclass
class FakeLLM(_Recorder):
    """``POST /v1/chat/completions``: streams SSE when asked to stream (or JSON when
    ``stream_ok`` is False), honours a planned status, Retry-After and delay."""

    plan: Plan = field(default_factory=Plan)
    headers: list[dict[str, str]] = field(default_factory=list)
    stream_ok: bool = True
    base_url: str = ""

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.headers.append(dict(request.headers))
        self.record(body)
        step = self.plan.next()
        if step.get("delay"):
            await trio.sleep(step["delay"])
        if step.get("status", 200) != 200:
            headers = {"Retry-After": str(step["retry_after"])} if "retry_after" in step else {}
            return JSONResponse({"error": "planned"}, status_code=step["status"], headers=headers)
        reply = str(step.get("reply", ""))
        if body.get("stream") and self.stream_ok:
            # The whole event stream in one body: an async generator here would be left
            # unfinished (and warned about) whenever a test cancels mid-answer.
            return Response(self._sse(reply), media_type="text/event-stream")
        return JSONResponse({"choices": [{"message": {"role": "assistant", "content": reply}}]})

    @staticmethod
    def _sse(reply: str) -> bytes:
        events = [b": a comment line, ignored\n\n"]
        for word in reply.split(" "):
            chunk = {"choices": [{"delta": {"content": word + " "}}]}
            events.append(f"data: {json.dumps(chunk)}\n\n".encode())
        events.append(b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n')
        events.append(b"data: [DONE]\n\n")
        return b"".join(events)


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
