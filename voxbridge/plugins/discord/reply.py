"""How an answer shows up on Discord while it is being written.

The reply is posted as soon as there is text, then edited as more arrives — at most once per
second per message (Discord's edit rate limits; llmcord's proven rhythm) — with a trailing ``▌``
until it is complete. While the agent's tools work before any text, the message shows a
``🔧 server.tool…`` line for each; the text replaces them. Past Discord's 2,000 characters it
goes on in a new message. When the brain fails midway, the text so far stays, followed by one
line saying it broke off.

The rhythm is written against a small :class:`Sink` (post, edit), not against disnake, so it is
tested on Trio's mock clock.
"""

from __future__ import annotations

import math
from typing import Generic, Protocol, TypeVar

import trio

from ...brain import Answer, ToolUse
from ...errors import BrainError

__all__ = [
    "BROKE_OFF",
    "CURSOR",
    "EDIT_EVERY",
    "LIMIT",
    "Reply",
    "Sink",
    "split_message",
    "stream_to",
    "tool_line",
]

LIMIT = 2000  # Discord's message length
CURSOR = "▌"
TOOL = "🔧"
EDIT_EVERY = 1.0  # seconds between two edits of one message
BROKE_OFF = "⚠️ *My answer broke off here — please ask again in a moment.*"

H = TypeVar("H")


class Sink(Protocol[H]):
    """Where pages of a reply go: ``post`` makes a new message, ``edit`` replaces one's text."""

    async def post(self, text: str) -> H: ...

    async def edit(self, handle: H, text: str) -> None: ...


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at a line break, else a space.

    A piece depends only on the text before the next cut, so pages already shown stay as they
    are while the text grows.
    """
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def tool_line(answer: Answer) -> str:
    """The tools the answer waits for, a line each (``🔧 time.get_current_time…``)."""
    return "\n".join(f"{TOOL} {name}…" for name in answer.running_tools())


class Reply(Generic[H]):
    """The messages of one reply: what each shows and when it was last written."""

    def __init__(self, sink: Sink[H], every: float) -> None:
        self._sink = sink
        self._every = every
        self._handles: list[H] = []
        self._shown: list[str] = []
        self._written: list[float] = []
        self._wanted: list[str] = []
        self.failure: BrainError | None = None
        """Why the answer broke off midway (its text stays, with :data:`BROKE_OFF`)."""

    async def show(self, pages: list[str]) -> float:
        """Bring the messages up to ``pages`` as far as the rhythm allows; returns when the
        next held-back edit is due (``inf``: nothing is held back)."""
        self._wanted = pages
        due = math.inf
        for i, page in enumerate(pages):
            if i == len(self._shown):
                self._handles.append(await self._sink.post(page))
                self._shown.append(page)
                self._written.append(trio.current_time())
            elif self._shown[i] != page:
                ready_at = self._written[i] + self._every
                if trio.current_time() < ready_at:
                    due = min(due, ready_at)
                    continue
                await self._sink.edit(self._handles[i], page)
                self._shown[i] = page
                self._written[i] = trio.current_time()
        return due

    @property
    def posted(self) -> bool:
        """Whether anything was posted yet (a tool line, or text)."""
        return bool(self._handles)

    async def settle(self) -> None:
        """Make the edits the rhythm still holds back (the last one drops the cursor): run it in
        the background and the channel can go on with its next answer at once."""
        due = await self.show(self._wanted)
        while due != math.inf:
            await trio.sleep_until(due)
            due = await self.show(self._wanted)


async def stream_to(
    sink: Sink[H], answer: Answer, *, every: float = EDIT_EVERY, limit: int = LIMIT
) -> Reply[H]:
    """Show ``answer`` through ``sink`` as it arrives, until it is complete or has failed.

    Returns the reply, whose :meth:`~Reply.settle` makes the edits still held back by the
    rhythm, and whose :attr:`~Reply.failure` says whether the brain broke off midway.

    Raises:
        BrainError: the brain failed before anything was posted (no text, no tool line):
            the caller apologises its own way.
    """
    reply = Reply(sink, every)
    try:
        while not answer.text.strip():
            # Until the answer's text arrives, the tools at work show as one line each.
            if isinstance(await answer.next_event(), ToolUse) and (line := tool_line(answer)):
                await reply.show([line + CURSOR])
        answer.ready()
    except StopAsyncIteration:
        failure: BrainError | None = None
    except BrainError as exc:
        if not answer.text.strip() and not reply.posted:
            raise
        failure = exc
    else:
        failure = None
    if not answer.text.strip() and failure is None:
        if not reply.posted:
            raise BrainError("the brain answered with an empty message")
        failure = BrainError("the brain answered with an empty message")

    while True:
        finished = answer.done or failure is not None
        text = answer.text if failure is None else f"{answer.text.rstrip()}\n{BROKE_OFF}".strip()
        wanted = split_message(text, limit - len(CURSOR))
        if not finished:
            wanted[-1] += CURSOR
        due = await reply.show(wanted)
        if finished:
            reply.failure = failure
            return reply
        with trio.move_on_at(due):
            try:
                await answer.__anext__()
                answer.ready()
            except StopAsyncIteration:
                pass
            except BrainError as exc:
                failure = exc
