"""Routing one message to the agent's brain, and the answer as a stream of text deltas.

n8n answers when it is ``mode: primary``; else the LLM does, and n8n (``mode: fallback``) takes
over when the LLM fails before its first delta. The answer is produced by a task of its own
into a bounded channel, so the consumer reads at its own pace (back-pressure reaches the HTTP
stream) and leaving the ``async with`` block cancels the request at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Protocol

import httpx
import trio

from ..config.model import Agent, reveal
from ..errors import BrainError
from .llm import Emit, LLMClient
from .messages import Message, Turn
from .n8n import N8nClient
from .notes import notes
from .text import scrub

__all__ = ["Answer", "Ready", "Think", "think"]

log = logging.getLogger("voxbridge.brain")

_BUFFER = 256  # deltas the producer may run ahead of a slow consumer


class Answer:
    """An answer as it arrives: ``async for delta in answer`` gives each piece of text.

    The iteration ends when the answer is complete (:attr:`done`); it raises
    :class:`~voxbridge.errors.BrainError` where the brain failed (after the text so far).
    """

    def __init__(
        self,
        receive: trio.MemoryReceiveChannel[str | BrainError],
        before_first: Ready | None = None,
    ) -> None:
        self._receive = receive
        self._before_first = before_first
        self.text = ""
        """Everything delivered so far."""
        self.done = False
        """Whether the whole answer has been delivered."""

    def __aiter__(self) -> Answer:
        return self

    async def __anext__(self) -> str:
        if self._before_first is not None:
            ready, self._before_first = self._before_first, None
            await ready()
        try:
            item = await self._receive.receive()
        except trio.EndOfChannel:
            self.done = True
            raise StopAsyncIteration from None
        return self._take(item)

    def _take(self, item: str | BrainError) -> str:
        if isinstance(item, BrainError):
            raise item
        self.text += item
        return item

    def ready(self) -> str:
        """The deltas that have arrived already, without waiting (sets :attr:`done` when the
        answer is complete: a consumer can skip the "still typing" look).

        Raises:
            BrainError: the brain failed after those.
        """
        parts = []
        while True:
            try:
                parts.append(self._take(self._receive.receive_nowait()))
            except trio.WouldBlock:
                break
            except trio.EndOfChannel:
                self.done = True
                break
        return "".join(parts)


Ready = Callable[[], Awaitable[object]]
"""Awaited before an answer's first words are handed out (memory: the question is stored)."""


class Think(Protocol):
    """``think`` with the agent and its clients bound: what a channel is handed to answer with.
    ``stored`` is awaited before the answer's first words are handed out (the request is made
    at once): memory's promise that what was said before is kept before anything more is."""

    def __call__(
        self, message: Message, history: Sequence[Turn], *, stored: Ready | None = None
    ) -> AbstractAsyncContextManager[Answer]: ...


@asynccontextmanager
async def think(
    agent: Agent,
    message: Message,
    history: Sequence[Turn],
    *,
    http: httpx.AsyncClient,
    n8n: N8nClient | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    facts: Sequence[str] = (),
    before_first: Ready | None = None,
) -> AsyncIterator[Answer]:
    """The agent's answer to ``message``, as a stream (``history`` ends with the message).

    ``n8n`` is the agent's running n8n client, if it has one. ``facts``: what the agent
    remembers of the person (added to the system message; n8n gets them as ``facts``).
    ``before_first`` is awaited before the first words are handed out; the request is made at
    once, so whatever it waits for overlaps the brain's own time.

    Cancellation: leaving the block, or being cancelled inside it, cancels the brain's request
    at once; the consumer's own exception goes on unchanged.
    """
    send, receive = trio.open_memory_channel[str | BrainError](_BUFFER)
    answer = Answer(receive, before_first)
    failure: BaseException | None = None
    # Text that UTF-8 cannot carry would fail inside httpx's JSON encoding: repaired here,
    # whatever channel it came from (the chat and the terminal refuse it before, with words).
    message = replace(message, text=scrub(message.text))
    history = [replace(t, content=scrub(t.content)) for t in history]
    asked = _Asked(agent, message, history, http, n8n, logger, tuple(facts))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_produce, send, asked)
        try:
            yield answer
        except BaseException as exc:  # re-raised below, outside the nursery: not a group
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


@dataclass(frozen=True, slots=True)
class _Asked:
    """One question to the brain, with what it takes to answer it."""

    agent: Agent
    message: Message
    history: Sequence[Turn]
    http: httpx.AsyncClient
    n8n: N8nClient | None
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    facts: tuple[str, ...] = ()

    def system_prompt(self) -> str:
        """The agent's prompt, then what it remembers of the person."""
        prompt = reveal(self.agent.system_prompt)
        remembered = notes(self.facts)
        return f"{prompt}\n\n{remembered}".strip() if remembered else prompt


async def _produce(send: trio.MemorySendChannel[str | BrainError], asked: _Asked) -> None:
    async with send:
        try:
            whole = await _route(send.send, asked)
            if whole is not None:
                # Handed over and closed with no checkpoint between: the consumer sees a
                # complete answer at once (and Discord posts it without the cursor).
                send.send_nowait(whole)
        except BrainError as exc:
            await send.send(exc)


async def _route(emit: Emit, asked: _Asked) -> str | None:
    """Stream the answer through ``emit``, or return it whole (n8n answers all at once)."""
    agent, message, history = asked.agent, asked.message, asked.history
    section = agent.plugins.get("n8n")
    mode = str(section.settings.get("mode", "fallback")) if section and section.enabled else None
    n8n = asked.n8n if mode else None
    if mode == "primary":
        if n8n is None:
            raise BrainError("the n8n plugin (mode: primary) is not running")
        return await n8n.ask(agent, message, history, asked.facts)
    if agent.llm is None:
        if n8n is None:
            raise BrainError("this agent has no brain: give it an llm section or an n8n plugin")
        return await n8n.ask(agent, message, history, asked.facts)
    delivered = False

    async def counted(delta: str) -> None:
        nonlocal delivered
        delivered = True
        await emit(delta)

    try:
        whole = await LLMClient(asked.http).stream(
            agent.llm,
            asked.system_prompt(),
            history,
            counted,
            where=f"llm.base_url in {agent.where('llm.base_url')}",
        )
        if whole is not None and whole.strip():
            return whole
        if not delivered:
            raise BrainError("the LLM answered with an empty message")
    except BrainError as exc:
        if n8n is None or delivered:
            raise
        asked.logger.warning("⚠️ LLM failed (%s); asking n8n instead", exc)
        return await n8n.ask(agent, message, history, asked.facts)
    return None
