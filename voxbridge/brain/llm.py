"""An OpenAI-compatible chat completions endpoint, streamed (server-sent events).

``POST {base_url}/chat/completions`` with the system prompt and the conversation, over a pooled
httpx client. Deltas are handed on as each event arrives. 429 and 5xx are retried honouring
``Retry-After``, as are timeouts and unreachable hosts — but only until the first delta: once
text has been delivered, a failure is reported, not retried. A server that answers with plain
JSON (no stream) gives the whole reply as one delta.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from ..config.model import LLMConfig, reveal
from ..errors import BrainError
from ..secrets.crypto import Secret
from .messages import Turn
from .retry import JITTER, RETRY_STATUS, Retry, retry_after, with_retries
from .tools import ToolCall

__all__ = ["Emit", "LLMClient", "Round", "shown_url"]

Emit = Callable[[str], Awaitable[None]]
log = logging.getLogger("voxbridge.brain")

_NO_TOOLS: set[tuple[str, str]] = set()
"""(endpoint, model) pairs that refused a request with ``tools``: asked without from then on."""


@dataclass(frozen=True, slots=True)
class Round:
    """One request's reply: the text handed to ``emit`` (or, from a server that does not
    stream, ``whole``), and the tool calls the LLM asked for, if any."""

    text: str
    whole: str | None
    calls: tuple[ToolCall, ...] = ()


def shown_url(url: str | Secret, field: str = "llm.base_url") -> str:
    """A URL as it may appear in a message: no credentials, no query (keys hide there), and
    nothing at all of one that was encrypted (``field`` names it instead)."""
    if isinstance(url, Secret):
        return f"the (encrypted) {field}"
    return _shown(url, field)


@functools.lru_cache(maxsize=256)
def _shown(url: str, field: str) -> str:
    # Cached: parsing the URL again for every message was a measurable part of each one.
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return f"{field} (not a valid URL)"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}".rstrip("/")


@functools.lru_cache(maxsize=256)
def _endpoint(base_url: str) -> httpx.URL:
    """The chat completions URL, parsed once (httpx would parse a string on every request)."""
    return httpx.URL(base_url.rstrip("/") + "/chat/completions")


class LLMClient:
    """Chat completions against an OpenAI-compatible endpoint."""

    def __init__(
        self, http: httpx.AsyncClient, rng: random.Random | None = None, base_delay: float = 0.5
    ) -> None:
        self._http = http
        self._rng = rng or JITTER
        self._base_delay = base_delay

    async def stream(
        self,
        llm: LLMConfig,
        system_prompt: str,
        history: Sequence[Turn],
        emit: Emit,
        *,
        where: str = "llm.base_url",
    ) -> str | None:
        """Hand the assistant's reply to ``history`` to ``emit``, delta by delta — or, when the
        server answers in one piece (plain JSON, no stream), return it whole, so the caller can
        hand it over as complete at once.

        ``where`` names the setting to fix in messages (``llm.base_url in agents.d/x.yaml``).

        Raises:
            BrainError: the endpoint refused, failed or timed out after its retries, or the
                stream broke off after text was delivered (not retried).

        Cancellation: the HTTP request is closed at once.
        """
        done = await self.stream_round(llm, system_prompt, history, emit, where=where)
        return done.whole

    async def stream_round(
        self,
        llm: LLMConfig,
        system_prompt: str,
        history: Sequence[Turn],
        emit: Emit,
        *,
        where: str = "llm.base_url",
        tools: Sequence[Mapping[str, Any]] = (),
        final: bool = False,
        more: Sequence[Mapping[str, Any]] = (),
    ) -> Round:
        """Like :meth:`stream`, offering ``tools`` (the OpenAI ``tools`` field) and going on
        with ``more`` messages after ``history`` (the calls of earlier rounds and their
        results); ``final``: the tools stay listed but may not be called (``tool_choice:
        none``), the LLM has to answer. The tool calls it asks for are assembled across the
        streamed deltas.

        An endpoint that refuses a request because of its ``tools`` (a model without tool
        support) is asked again without them, and from then on never offered any.

        Raises:
            BrainError: as :meth:`stream`.
        """
        key = (reveal(llm.base_url), reveal(llm.model))
        if tools and key not in _NO_TOOLS:
            try:
                return await self._round(
                    llm, system_prompt, history, emit, where, tools, final, more
                )
            except _ToolsRefused as exc:
                _NO_TOOLS.add(key)
                log.warning(
                    "⚠️ the LLM at %s refused tools (%s); asking without them", exc.shown, exc
                )
        return await self._round(llm, system_prompt, history, emit, where, (), False, more)

    async def _round(
        self,
        llm: LLMConfig,
        system_prompt: str,
        history: Sequence[Turn],
        emit: Emit,
        where: str,
        tools: Sequence[Mapping[str, Any]],
        final: bool,
        more: Sequence[Mapping[str, Any]],
    ) -> Round:
        url = _endpoint(reveal(llm.base_url))
        shown = shown_url(llm.base_url)
        headers = {"Accept": "text/event-stream, application/json"}
        if llm.api_key is not None:
            headers["Authorization"] = f"Bearer {llm.api_key.reveal()}"
        messages: list[Mapping[str, Any]] = (
            [{"role": "system", "content": system_prompt}] if system_prompt else []
        )
        messages += [{"role": t.role, "content": _content(t)} for t in history]
        messages += more
        model = reveal(llm.model)
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if tools:
            body["tools"] = list(tools)
            if final:
                body["tool_choice"] = "none"
        if llm.temperature is not None:
            body["temperature"] = llm.temperature
        if llm.max_tokens is not None:
            body["max_tokens"] = llm.max_tokens
        # Read timeout per chunk: a long answer may take minutes, a silent gap may not.
        timeout = httpx.Timeout(llm.timeout, connect=min(10.0, llm.timeout))
        delivered = 0
        text: list[str] = []
        whole: list[str] = []
        calls = _Calls()

        async def attempt(scope: trio.CancelScope) -> None:
            nonlocal delivered
            calls.clear()  # a retried request starts its tool calls afresh
            async with self._http.stream(
                "POST", url, json=body, headers=headers, timeout=timeout
            ) as response:
                if response.status_code in RETRY_STATUS:
                    raise Retry(f"HTTP {response.status_code}", retry_after(response))
                if response.status_code >= 400:
                    refusal = await _refusal(response, shown, model, where, llm.api_key is not None)
                    said = (await response.aread()).lower()  # read once: httpx keeps it
                    if tools and response.status_code in (400, 404, 422) and b"tool" in said:
                        raise _ToolsRefused(refusal, shown)
                    raise BrainError(refusal)
                try:
                    if "text/event-stream" not in response.headers.get("content-type", ""):
                        message = json.loads(await response.aread())["choices"][0]["message"]
                        whole.append(str(message.get("content") or ""))
                        calls.take_whole(message.get("tool_calls") or [])
                        return
                    async with contextlib.aclosing(_deltas(response, calls)) as deltas:
                        async for delta in deltas:
                            if not delivered:
                                scope.deadline = math.inf  # answering: no retries, no deadline
                            delivered += len(delta)
                            text.append(delta)
                            await emit(delta)
                except _ErrorEvent as exc:
                    raise BrainError(f"the LLM at {shown} reported an error: {exc}") from None
                except (httpx.TransportError, ValueError, KeyError, TypeError, IndexError) as exc:
                    if not delivered:
                        if isinstance(exc, httpx.TransportError):
                            raise
                        raise BrainError(
                            f"the LLM at {shown} answered in an unknown shape ({exc!r})"
                        ) from None
                    raise BrainError(
                        f"the LLM at {shown} broke off after {delivered} characters "
                        f"({type(exc).__name__})"
                    ) from None

        await with_retries(
            f"the LLM at {shown}",
            attempt,
            self._rng,
            llm.timeout,
            self._base_delay,
            unreachable_hint=(
                ". Start it (Ollama: `ollama serve`, then `ollama pull "
                f"{model}`) or set {where} to a running OpenAI-compatible server"
            ),
        )
        return Round("".join(text), whole[0] if whole else None, calls.done())


class _ToolsRefused(BrainError):
    """The endpoint refused a request because of its ``tools``."""

    def __init__(self, message: str, shown: str) -> None:
        super().__init__(message)
        self.shown = shown


class _Calls:
    """Tool calls assembled from streamed deltas: each delta carries a piece of one call,
    named by its ``index`` (the id and name come first, the arguments in fragments)."""

    def __init__(self) -> None:
        self._parts: dict[int, list[str]] = {}

    def clear(self) -> None:
        self._parts.clear()

    def take(self, deltas: list[Any]) -> None:
        for n, delta in enumerate(deltas):
            index = delta.get("index", n)
            part = self._parts.setdefault(int(index), ["", "", ""])
            function = delta.get("function") or {}
            part[0] = delta.get("id") or part[0]
            part[1] += function.get("name") or ""
            part[2] += function.get("arguments") or ""

    def take_whole(self, calls: list[Any]) -> None:
        self.take([{**c, "index": n} for n, c in enumerate(calls)])

    def done(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(part[0] or f"call_{index}", part[1], part[2])
            for index, part in sorted(self._parts.items())
            if part[1]
        )


def _content(turn: Turn) -> str | list[dict[str, Any]]:
    """A turn's ``content``: its text, or with images OpenAI's content parts (text first)."""
    if not turn.images:
        return turn.content
    parts: list[dict[str, Any]] = [{"type": "text", "text": turn.content}] if turn.content else []
    parts += [{"type": "image_url", "image_url": {"url": i.data_url()}} for i in turn.images]
    return parts


async def _refusal(
    response: httpx.Response, shown: str, model: str, where: str, keyed: bool
) -> str:
    detail = (await response.aread())[:200].decode("utf-8", "replace").strip()
    message = f"the LLM at {shown} refused: HTTP {response.status_code} {detail}".rstrip()
    if response.status_code == 404:
        message += (
            f". Is {where} right (it ends in /v1 for most servers) and is the model "
            f"'{model}' there (Ollama: `ollama pull {model}`)?"
        )
    elif response.status_code in (401, 403):
        message += (
            ". Check llm.api_key" if keyed else ". The server wants a key: set llm.api_key"
        ) + " (then `voxbridge encrypt` the file)"
    return message


class _ErrorEvent(Exception):
    """An ``{"error": ...}`` event in the stream (OpenRouter and vLLM send them mid-answer)."""


async def _deltas(response: httpx.Response, calls: _Calls) -> Any:
    """The text deltas of a server-sent event stream; tool call pieces go to ``calls``."""
    done = False
    failed: str | None = None
    # Read to the end rather than stop at [DONE] or an error: httpx's nested byte/text/line
    # generators are only closed at once (under Trio) when exhausted; otherwise Trio finalizes
    # them later, with a ResourceWarning.
    async for line in response.aiter_lines():
        if done or failed or not line.startswith("data:"):
            continue  # comments, event names, keep-alives
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            failed = str(error.get("message", error) if isinstance(error, dict) else error)
            continue
        choices = chunk.get("choices") or []
        delta = (choices[0].get("delta") or {}) if choices else {}
        if delta.get("tool_calls"):
            calls.take(delta["tool_calls"])
        if delta.get("content"):
            yield delta["content"]
    if failed:
        raise _ErrorEvent(failed[:200])
