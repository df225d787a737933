"""``WS /api/agents/<agent-id>/chat``: a conversation over a WebSocket (SPEC §10, §14).

Client → server: first, optionally, ``{"type": "hello", "conversation": "<id>"}`` (1 to 64 of
``A-Za-z0-9_-``) to go on with a stored conversation — the server answers ``{"type":
"history", "turns": [{"role": "user"|"assistant", "text": "…"}, …]}`` with its last ``history``
turns; without it, a new conversation. Then ``{"type": "message", "text": "…"}``, and
``{"type": "cancel"}`` to stop the answer in flight. Server → client: ``{"type": "delta",
"text": "…"}`` as the answer arrives (and ``{"type": "tool", "name": "server.tool", "state":
"start"|"done"|"error"}`` as the agent's tools work), then ``{"type": "done"}``, or ``{"type":
"error", "message": "…"}``. Anything malformed gets an error event and the connection goes
on; messages sent while an answer is running wait their turn (a few at most). A slow reader
slows its own answer down, nobody else's.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

import trio

from ...brain import Message, ToolUse
from ...brain.text import invalid_unicode
from ...errors import BrainError
from ...memory import Conversation

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from .actor import WebService

__all__ = ["MAX_FRAME", "MAX_TEXT", "QUEUE", "serve_chat"]

MAX_FRAME = 64 * 1024  # bytes of one client message
MAX_TEXT = 16_000  # characters of one question
QUEUE = 4  # questions that may wait while an answer runs
_OUTBOX = 64  # events waiting for a slow client before the answer waits for it
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def new_conversation_id() -> str:
    """An id for a new web conversation: unguessable, since whoever has it can read it."""
    return secrets.token_urlsafe(16)


class _Session:
    def __init__(self, websocket: WebSocket, service: WebService) -> None:
        self.websocket = websocket
        self.agent_id = service.ctx.agent_id
        self.fleet = service.ctx.fleet
        self.conversation_id: str | None = None  # chosen by a hello, or at the first message
        self.outbox, self._pending = trio.open_memory_channel[dict[str, Any]](_OUTBOX)
        # Questions, and the hello before them (as None): answered in order, one at a time.
        self.questions, self._asked = trio.open_memory_channel[str | None](QUEUE)
        self.current: trio.CancelScope | None = None

    def service(self) -> WebService | None:
        """The agent's web service now: it may have restarted, or gone, since the last answer."""
        from .actor import WebService  # here: the actor module imports this one

        found = self.fleet.service(self.agent_id, "web")
        return found if isinstance(found, WebService) and not found.stopped else None

    async def error(self, message: str) -> None:
        await self.outbox.send({"type": "error", "message": message})

    async def write(self) -> None:
        """The one task that writes to the socket: events keep their order."""
        async for event in self._pending:
            await self.websocket.send_text(json.dumps(event))

    async def read(self, done: trio.CancelScope) -> None:
        from starlette.websockets import WebSocketDisconnect

        while True:
            try:
                frame = await self.websocket.receive()
            except WebSocketDisconnect:
                break
            if frame["type"] == "websocket.disconnect":
                break
            await self.take(frame.get("text"), frame.get("bytes"))
        done.cancel()

    async def take(self, text: str | None, data: bytes | None) -> None:
        """Check one client frame and act on it; anything wrong is answered with an error."""
        if text is None:
            await self.error("send JSON text frames, not binary ones")
            return
        if len(text.encode()) > MAX_FRAME:
            size = len(text.encode())
            await self.error(f"message too large ({size:,} bytes; at most {MAX_FRAME:,})")
            return
        try:
            event = json.loads(text)
        except ValueError as exc:
            await self.error(f'not JSON ({exc}): send {{"type": "message", "text": "…"}}')
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "hello":
            await self.hello(event)
            return
        if kind == "cancel":
            if self.current is not None:
                self.current.cancel()
            return
        if kind != "message":
            await self.error(
                f'unknown type {kind!r}: send {{"type": "hello", "conversation": "…"}} '
                'first, then {"type": "message", "text": "…"} or {"type": "cancel"}'
            )
            return
        question = event.get("text")
        if not isinstance(question, str) or not question.strip():
            await self.error('"text" must be a non-empty string')
            return
        problem = invalid_unicode(question)
        if problem is not None:
            await self.error(f'"text" is not valid Unicode ({problem}): send UTF-8 text')
            return
        if len(question) > MAX_TEXT:
            await self.error(
                f"message too long ({len(question):,} characters; at most {MAX_TEXT:,})"
            )
            return
        if self.conversation_id is None:
            self.conversation_id = new_conversation_id()
        try:
            self.questions.send_nowait(question.strip())
        except trio.WouldBlock:
            await self.error(f"{QUEUE} messages are waiting already: wait for the answers")

    async def hello(self, event: dict[str, Any]) -> None:
        """Choose the conversation (first thing only); its history follows, in order."""
        wanted = event.get("conversation")
        if self.conversation_id is not None:
            await self.error("hello comes first, before any message: reconnect to switch")
            return
        if not isinstance(wanted, str) or not CONVERSATION_ID.match(wanted):
            await self.error('"conversation" must be 1 to 64 of A-Z, a-z, 0-9, _ and -')
            return
        self.conversation_id = wanted
        self.questions.send_nowait(None)  # nothing is queued yet: there is room

    async def answer_all(self) -> None:
        async for question in self._asked:
            if question is None:
                await self.history()
            else:
                await self.answer(question)

    @property
    def place(self) -> str:
        """The conversation's key in memory (the person's too: a web visitor has no other)."""
        return f"web:{self.conversation_id}"

    async def history(self) -> None:
        service = self.service()
        turns = []
        if service is not None:
            conversation = await service.ctx.memory.conversation(self.place)
            history = service.ctx.agent.history
            turns = list(conversation.turns[-history:]) if history else []
        await self.outbox.send(
            {"type": "history", "turns": [{"role": t.role, "text": t.content} for t in turns]}
        )

    async def answer(self, question: str) -> None:
        service = self.service()
        if service is None:
            await self.error(
                f"agent '{self.agent_id}' is not available: its file was removed or its web "
                "plugin is off (reload this page once it is back)"
            )
            return
        ctx = service.ctx
        conversation: Conversation = await ctx.memory.conversation(self.place)
        exchange = conversation.ask(question, person=self.place)
        message = Message(self.place, "web", "web", question, person=self.place)
        turns = exchange.context(ctx.agent.history)
        failure: str | None = None
        said = ""
        complete = False
        with service.answering() as scope:
            self.current = scope
            try:
                async with ctx.think(message, turns, stored=exchange.stored) as answer:
                    try:
                        async for item in answer.events():
                            if isinstance(item, ToolUse):
                                await self.outbox.send(
                                    {"type": "tool", "name": item.name, "state": item.state}
                                )
                                continue
                            said = answer.text
                            await self.outbox.send({"type": "delta", "text": item})
                        complete = True
                    except BrainError as exc:
                        failure = str(exc)
                        ctx.count("brain_errors")
                        ctx.log.error("❌ could not answer a web chat: %s", exc)
            finally:
                self.current = None
                cut = not complete and bool(said.strip() or scope.cancel_called)
                exchange.answered(said, cut=cut)
        ctx.count("messages")
        if failure is not None:
            await self.error(failure)
        elif service.stopped:
            await self.error(
                f"agent '{self.agent_id}' stopped mid-answer (a restart, or its file changed or "
                "was removed)"
            )
        elif scope.cancelled_caught:
            await self.outbox.send({"type": "done", "cut": True})
        else:
            await self.outbox.send({"type": "done"})


async def serve_chat(websocket: WebSocket, service: WebService) -> None:
    """Hold one chat connection until the client leaves."""
    await websocket.accept()
    session = _Session(websocket, service)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.write)
        nursery.start_soon(session.answer_all)
        await session.read(nursery.cancel_scope)
