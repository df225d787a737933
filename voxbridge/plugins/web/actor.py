"""The ``web`` actor: offers the agent's chat page and sockets to the status server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.resources import files
from typing import TYPE_CHECKING

import trio

from ...errors import PermanentFailure
from ..api import Context
from .chat import serve_chat
from .voice import serve_voice

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

__all__ = ["WebService", "run"]


class WebService:
    """What the status server serves for one agent while its web actor runs (see
    :class:`~voxbridge.plugins.api.WebEndpoints`). Conversations are the sockets' own; an
    answer in flight is tied to this service, so stopping the actor (the agent's file removed,
    the plugin disabled) stops its answers at once."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.stopped = False
        self._answers: set[trio.CancelScope] = set()
        self._voice_sessions = 0

    def page(self, name: str) -> str | None:
        if name != "chat":
            return None
        return files(__package__).joinpath("static/chat.html").read_text("utf-8")

    async def socket(self, name: str, websocket: WebSocket) -> bool:
        if name == "chat":
            await serve_chat(websocket, self)
        elif name == "voice":
            await serve_voice(websocket, self)
        else:
            return False
        return True

    @contextlib.contextmanager
    def answering(self) -> Iterator[trio.CancelScope]:
        """A scope for one answer, cancelled if this service stops while it runs."""
        scope = trio.CancelScope()
        if self.stopped:
            scope.cancel()
        self._answers.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._answers.discard(scope)

    @contextlib.contextmanager
    def voice_session(self) -> Iterator[trio.CancelScope]:
        """A voice session: counted in ``voice_sessions`` while it is open, and ended (its
        scope cancelled) when this service stops."""
        self._voice_sessions += 1
        self.ctx.count("voice_sessions", 1)
        try:
            with self.answering() as scope:
                yield scope
        finally:
            if not self.stopped:  # else stop() has taken it off the count already
                self._voice_sessions -= 1
                self.ctx.count("voice_sessions", -1)

    def stop(self) -> None:
        self.stopped = True
        for scope in self._answers:
            scope.cancel()
        # Off the count now, inside the actor's own task: a session's own clean-up may run
        # after the actor is gone (its counters forgotten) or started again.
        self.ctx.count("voice_sessions", -self._voice_sessions)
        self._voice_sessions = 0


async def run(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    """Offer the chat until cancelled.

    Raises:
        PermanentFailure: the status server is off (``--listen none``): there is nowhere to chat.
    """
    url = ctx.options.get("status_url")
    if not url:
        raise PermanentFailure(
            "the web plugin needs the status server: run without --listen none "
            "(or use `voxbridge chat` in a terminal)"
        )
    service = WebService(ctx)
    try:
        with ctx.provide(service):
            chat = f"{url}/chat/{ctx.agent_id}"
            ctx.note(f"chat at {chat}")
            ctx.log.info("💬 Chat with %s at %s", ctx.agent.name, chat)
            task_status.started()
            await trio.sleep_forever()
    finally:
        service.stop()
