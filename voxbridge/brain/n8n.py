"""An agent's n8n workflow behind a webhook: the whole answer at once (one delta)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import trio

from ..config.duration import parse_duration
from ..config.model import Agent, reveal
from ..errors import BrainError
from ..secrets.crypto import Secret
from .messages import Message, Turn
from .retry import JITTER, RETRY_STATUS, Retry, retry_after, with_retries

__all__ = ["N8nClient", "parse_n8n"]


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
    """An agent's n8n webhook, through an HTTP client its owner (the n8n actor) holds."""

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
        self._rng = rng or JITTER
        self._base_delay = base_delay

    @classmethod
    def from_settings(
        cls,
        http: httpx.AsyncClient,
        settings: Mapping[str, Any],
        on_result: Callable[[str], None] = lambda _: None,
    ) -> N8nClient:
        """The client an ``n8n`` plugin section describes (``webhook_url``, ``timeout``)."""
        timeout = parse_duration(settings.get("timeout", 60.0))
        return cls(http, settings["webhook_url"], timeout, on_result)

    @property
    def timeout(self) -> float:
        """Seconds one call may take."""
        return self._timeout

    async def ask(
        self,
        agent: Agent,
        message: Message,
        history: Sequence[Turn],
        facts: Sequence[str] = (),
    ) -> str:
        """The workflow's reply. ``facts``: what the agent remembers of the person.

        Raises:
            BrainError: it failed or timed out after its retries (the URL is never quoted).
        """
        payload = {
            "sessionId": message.session_id,
            "userId": message.user_id,
            "username": message.username,
            "text": message.text,
            "conversationHistory": [{"role": t.role, "content": t.content} for t in history],
            "facts": list(facts),
            "agentConfig": {
                "name": agent.name,
                "systemPrompt": reveal(agent.system_prompt),
                "temperature": agent.llm.temperature if agent.llm else None,
                "model": reveal(agent.llm.model) if agent.llm else None,
            },
        }
        reply: list[str] = []

        async def attempt(scope: trio.CancelScope) -> None:
            response = await self._http.post(self._url.reveal(), json=payload)
            if response.status_code in RETRY_STATUS:
                raise Retry(f"HTTP {response.status_code}", retry_after(response))
            if response.status_code >= 400:
                raise BrainError(f"the n8n webhook refused: HTTP {response.status_code}")
            reply.append(parse_n8n(response))

        started = time.monotonic()
        try:
            await with_retries(
                "the n8n webhook", attempt, self._rng, self._timeout, self._base_delay
            )
        except BrainError as exc:
            self._on_result(f"last call failed: {exc}")
            raise
        self._on_result(f"last call answered in {1000 * (time.monotonic() - started):.0f} ms")
        return reply[0]
