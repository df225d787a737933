"""How an agent thinks: its OpenAI-compatible LLM, its n8n workflow, and the routing between.

* The LLM (the agent's ``llm`` section): ``POST {base_url}/chat/completions`` with the system
  prompt and the conversation, streamed (server-sent events) or not, over the runtime's pooled
  client; 429 and 5xx are retried with backoff honouring ``Retry-After``.
* n8n (the ``n8n`` plugin): the agent's workflow behind a webhook, reached through the client
  the n8n actor owns; ``mode: primary`` answers every message, ``mode: fallback`` answers when
  the LLM fails.

Failures become :class:`~voxbridge.errors.BrainError` with a message for the operator that never
quotes a key or a webhook URL.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from ..config.model import Agent, LLMConfig, reveal
from ..errors import BrainError
from ..secrets.crypto import Secret
from .api import Context

__all__ = ["MAX_TRIES", "LLMClient", "Message", "N8nClient", "Turn", "parse_n8n", "think"]

log = logging.getLogger("voxbridge.brain")

MAX_TRIES = 3
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation: ``role`` is ``user`` or ``assistant``."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Message:
    """What the brain is asked about: who said what, where (the session)."""

    session_id: str
    user_id: str
    username: str
    text: str


class _Retry(Exception):
    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.after = reason, after


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


async def _with_retries(
    what: str,
    call: Callable[[], Awaitable[str]],
    rng: random.Random,
    per_try_s: float,
    base_delay: float,
) -> str:
    """``call()`` up to MAX_TRIES times, waiting ``base_delay``, twice that … (with jitter), or
    what Retry-After says."""
    last = "no attempt"
    for attempt in range(MAX_TRIES):
        try:
            with trio.fail_after(per_try_s):
                return await call()
        except _Retry as exc:
            last, wait = exc.reason, exc.after
        except trio.TooSlowError:
            last, wait = f"no answer within {per_try_s:g}s", None
        except httpx.TransportError as exc:
            last, wait = f"{type(exc).__name__} (cannot reach it)", None
        if attempt + 1 < MAX_TRIES:
            await trio.sleep(
                wait if wait is not None else base_delay * 2**attempt * (1 + rng.random())
            )
    raise BrainError(f"{what}: {last} (after {MAX_TRIES} tries)")


class LLMClient:
    """Chat completions against an OpenAI-compatible endpoint."""

    def __init__(
        self, http: httpx.AsyncClient, rng: random.Random | None = None, base_delay: float = 0.5
    ) -> None:
        self._http = http
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._base_delay = base_delay

    async def complete(self, llm: LLMConfig, system_prompt: str, history: Sequence[Turn]) -> str:
        """The assistant's reply to ``history``.

        Raises:
            BrainError: the endpoint refused, failed or timed out after its retries.
        """
        url = reveal(llm.base_url).rstrip("/") + "/chat/completions"
        headers = {"Accept": "text/event-stream, application/json"}
        if llm.api_key is not None:
            headers["Authorization"] = f"Bearer {llm.api_key.reveal()}"
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": t.role, "content": t.content} for t in history]
        body: dict[str, Any] = {"model": reveal(llm.model), "messages": messages, "stream": True}
        if llm.temperature is not None:
            body["temperature"] = llm.temperature
        if llm.max_tokens is not None:
            body["max_tokens"] = llm.max_tokens

        async def call() -> str:
            async with self._http.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code in _RETRY_STATUS:
                    raise _Retry(f"HTTP {response.status_code}", _retry_after(response))
                if response.status_code >= 400:
                    detail = (await response.aread())[:200].decode("utf-8", "replace")
                    raise BrainError(
                        f"the LLM endpoint refused: HTTP {response.status_code} {detail.strip()}"
                    )
                if "text/event-stream" in response.headers.get("content-type", ""):
                    return await _read_stream(response)
                data = json.loads(await response.aread())
                return str(data["choices"][0]["message"]["content"])

        try:
            return await _with_retries(
                "the LLM endpoint", call, self._rng, llm.timeout, self._base_delay
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise BrainError(f"the LLM endpoint answered in an unknown shape ({exc!r})") from None


async def _read_stream(response: httpx.Response) -> str:
    parts: list[str] = []
    done = False
    # Read to the end rather than break at [DONE]: httpx's nested byte/text/line generators
    # are only closed cleanly (under Trio) when exhausted.
    async for line in response.aiter_lines():
        if done or not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        chunk = json.loads(data)
        delta = chunk["choices"][0].get("delta", {}) if chunk.get("choices") else {}
        parts.append(delta.get("content") or "")
    return "".join(parts)


def parse_n8n(response: httpx.Response) -> str:
    """The reply text in any shape n8n workflows answer with: ``{response|output|text}``,
    ``[{output|response|text}]``, ``["text"]`` or a plain-text body.

    Raises:
        BrainError: a JSON body without any of those.
    """
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("response", "output", "text"):
            if isinstance(data.get(key), str):
                return str(data[key])
    raise BrainError("the n8n workflow answered without response, output or text")


class N8nClient:
    """An agent's n8n webhook, through an HTTP client its actor owns."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: Secret,
        timeout: float,
        on_result: Callable[[str], None] = lambda _: None,
        rng: random.Random | None = None,
        base_delay: float = 0.5,
    ) -> None:
        self._http = http
        self._url = url
        self._timeout = timeout
        self._on_result = on_result
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._base_delay = base_delay

    async def ask(self, agent: Agent, message: Message, history: Sequence[Turn]) -> str:
        """The workflow's reply.

        Raises:
            BrainError: it failed or timed out after its retries (the URL is never quoted).
        """
        payload = {
            "sessionId": message.session_id,
            "userId": message.user_id,
            "username": message.username,
            "text": message.text,
            "conversationHistory": [{"role": t.role, "content": t.content} for t in history],
            "agentConfig": {
                "name": agent.name,
                "systemPrompt": reveal(agent.system_prompt),
                "temperature": agent.llm.temperature if agent.llm else None,
                "model": reveal(agent.llm.model) if agent.llm else None,
            },
        }

        async def call() -> str:
            response = await self._http.post(self._url.reveal(), json=payload)
            if response.status_code in _RETRY_STATUS:
                raise _Retry(f"HTTP {response.status_code}", _retry_after(response))
            if response.status_code >= 400:
                raise BrainError(f"the n8n webhook refused: HTTP {response.status_code}")
            return parse_n8n(response)

        started = time.monotonic()
        try:
            text = await _with_retries(
                "the n8n webhook", call, self._rng, self._timeout, self._base_delay
            )
        except BrainError as exc:
            self._on_result(f"last call failed: {exc}")
            raise
        self._on_result(f"last call answered in {1000 * (time.monotonic() - started):.0f} ms")
        return text


async def think(ctx: Context, message: Message, history: Sequence[Turn]) -> str:
    """Route one message to the agent's brain: n8n if primary, else the LLM, falling back to
    n8n when the LLM fails and n8n is the fallback.

    ``history`` ends with the user's message.

    Raises:
        BrainError: nothing could answer.
    """
    agent = ctx.agent
    section = agent.plugins.get("n8n")
    mode = str(section.settings.get("mode", "fallback")) if section and section.enabled else None
    found = ctx.fleet.service(agent.id, "n8n") if mode else None
    n8n = found if isinstance(found, N8nClient) else None
    if mode == "primary":
        if n8n is None:
            raise BrainError("the n8n plugin (mode: primary) is not running")
        return await n8n.ask(agent, message, history)
    if agent.llm is not None:
        try:
            return await LLMClient(ctx.fleet.http()).complete(
                agent.llm, reveal(agent.system_prompt), history
            )
        except BrainError as exc:
            if n8n is None:
                raise
            ctx.log.warning("⚠️ LLM failed (%s); asking n8n instead", exc)
            return await n8n.ask(agent, message, history)
    if n8n is not None:
        return await n8n.ask(agent, message, history)
    raise BrainError("this agent has no brain: give it an llm section or an n8n plugin")
