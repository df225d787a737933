"""How an answer shows up on Discord while it is being written.

The reply is posted as soon as there is text, then edited as more arrives — at most once per
second per message (Discord's edit rate limits; llmcord's proven rhythm) — with a trailing ``▌``
until it is complete. While the agent's tools work before any text, the message shows a
``🔧 server.tool…`` line for each; the text replaces them. Past Discord's 2,000 characters it
goes on in a new message. When the brain fails midway, the text so far stays, followed by one
line saying it broke off. When the bot stops midway (an edit of its section, its agent deleted,
shutdown), its last edit is made at once, rhythm or not: the text so far without the cursor, and
one line saying it was cut off — within :data:`LAST_EDIT_WAIT` seconds, so a Discord that does
not answer cannot hold the stop up.

The rhythm is written against a small :class:`Sink` (post, edit), not against disnake, so it is
tested on Trio's mock clock.
"""

from __future__ import annotations

import logging
import math
from typing import Generic, Protocol, TypeVar

import trio

from ...brain import Answer, ToolUse
from ...errors import BrainError

__all__ = [
    "BROKE_OFF",
    "CURSOR",
    "EDIT_EVERY",
    "LAST_EDIT_WAIT",
    "LIMIT",
    "STOPPED",
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
STOPPED = "⏹️ *My answer was cut off here: the bot stopped or restarted.*"
LAST_EDIT_WAIT = 2.0
"""Seconds a stopping bot gives a reply for its last edits before it goes anyway."""

log = logging.getLogger("voxbridge.plugins.discord")

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


Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class Reply(Generic[H]):
    """The messages of one reply: what each shows and when it was last written."""

    def __init__(
        self,
        sink: Sink[H],
        every: float,
        *,
        stop_wait: float = LAST_EDIT_WAIT,
        logger: Logger = log,
    ) -> None:
        self._sink = sink
        self._every = every
        self._stop_wait = stop_wait
        self._log = logger
        self._handles: list[H] = []
        self._shown: list[str] = []
        self._written: list[float] = []
        self._wanted: list[str] = []
        self.failure: BrainError | None = None
        """Why the answer broke off midway (its text stays, with :data:`BROKE_OFF`)."""

    async def show(self, pages: list[str], *, now: bool = False) -> float:
        """Bring the messages up to ``pages`` as far as the rhythm allows (``now``: all the
        way); returns when the next held-back edit is due (``inf``: nothing is held back)."""
        self._wanted = pages
        due = math.inf
        for i, page in enumerate(pages):
            if i == len(self._shown):
                self._handles.append(await self._sink.post(page))
                self._shown.append(page)
                self._written.append(trio.current_time())
            elif self._shown[i] != page:
                ready_at = self._written[i] + self._every
                if trio.current_time() < ready_at and not now:
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
        the background and the channel can go on with its next answer at once.

        Cancellation: the edits held back are made at once (see :meth:`last_word`).
        """
        try:
            due = await self.show(self._wanted)
            while due != math.inf:
                await trio.sleep_until(due)
                due = await self.show(self._wanted)
        except trio.Cancelled:
            await self.last_word(self._wanted)
            raise

    async def last_word(self, pages: list[str]) -> None:
        """The bot stops: show ``pages`` at once, shielded from the cancellation that stops it,
        for at most ``stop_wait`` seconds. A write that fails or takes longer is given up (and
        logged): the bot stops all the same."""
        with trio.move_on_after(self._stop_wait, shield=True) as waited:
            try:
                await self.show(pages, now=True)
            except Exception as exc:  # the sink's, whatever it is: nothing more to do about it
                self._log.warning("⚠️ a reply kept its cursor as the bot stopped: %s", exc)
        if waited.cancelled_caught:
            self._log.warning(
                "⚠️ a reply kept its cursor as the bot stopped: Discord took over %.1fs",
                self._stop_wait,
            )


def _pages(
    answer: Answer, failure: BrainError | None, limit: int, *, stopped: bool = False
) -> list[str]:
    """The pages that show ``answer`` now: the text so far, then the cursor while it goes on,
    or the line saying why it ends there (it broke off; the bot stopped)."""
    if failure is not None:
        note: str | None = BROKE_OFF
    elif stopped and not answer.done:
        note = STOPPED
    else:
        note = None
    text = f"{answer.text.rstrip()}\n{note}".strip() if note else answer.text
    pages = split_message(text, limit - len(CURSOR))
    if note is None and not answer.done:
        pages[-1] += CURSOR
    return pages


async def stream_to(
    sink: Sink[H],
    answer: Answer,
    *,
    every: float = EDIT_EVERY,
    limit: int = LIMIT,
    stop_wait: float = LAST_EDIT_WAIT,
    logger: Logger = log,
) -> Reply[H]:
    """Show ``answer`` through ``sink`` as it arrives, until it is complete or has failed.

    Returns the reply, whose :meth:`~Reply.settle` makes the edits still held back by the
    rhythm, and whose :attr:`~Reply.failure` says whether the brain broke off midway.

    Raises:
        BrainError: the brain failed before anything was posted (no text, no tool line):
            the caller apologises its own way.

    Cancellation: what was posted gets its last word (:meth:`Reply.last_word`, within
    ``stop_wait`` seconds): the text so far without the cursor, and :data:`STOPPED`.
    """
    reply = Reply(sink, every, stop_wait=stop_wait, logger=logger)
    try:
        return await _stream(reply, answer, limit)
    except trio.Cancelled:
        if reply.posted:
            await reply.last_word(_pages(answer, reply.failure, limit, stopped=True))
        raise


async def _stream(reply: Reply[H], answer: Answer, limit: int) -> Reply[H]:
    try:
        while not answer.text.strip():
            # Until the answer's text arrives, the tools at work show as one line each.
            if isinstance(await answer.next_event(), ToolUse) and (line := tool_line(answer)):
                await reply.show([line + CURSOR])
        answer.ready()
    except StopAsyncIteration:
        pass
    except BrainError as exc:
        if not answer.text.strip() and not reply.posted:
            raise
        reply.failure = exc
    if not answer.text.strip() and reply.failure is None:
        if not reply.posted:
            raise BrainError("the brain answered with an empty message")
        reply.failure = BrainError("the brain answered with an empty message")

    while True:
        finished = answer.done or reply.failure is not None
        due = await reply.show(_pages(answer, reply.failure, limit))
        if finished:
            return reply
        with trio.move_on_at(due):
            try:
                await answer.__anext__()
                answer.ready()
            except StopAsyncIteration:
                pass
            except BrainError as exc:
                reply.failure = exc
