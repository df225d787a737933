"""Messages a stopping bot leaves unanswered, handed to the next bot of the same agent.

An edit of the agent's discord section restarts its bot. The messages waiting their turn then
(queued behind the answer being written) and those heard as it went offline would go with it;
instead the stopping bot leaves them here, and the next one answers them first — in order, per
person, each replying to its message. The runtime keeps the handover (``Context.lasting``), so
it holds plain data only, nothing of the closed client: the next bot fetches each message again
through its own.

A message older than :data:`MAX_AGE` when the next bot takes it is not answered (a late answer
to a question the person has likely asked again or given up on confuses more than it helps):
the bot counts it in ``messages_dropped`` and logs how many. When no next bot comes, what was
left is logged as lost: at shutdown by the stopping bot, when the agent is deleted as the
runtime drops the handover (:meth:`Handover.dropped`). A bot turned off and on again answers
those still young enough.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["MAX_AGE", "Handover", "Heard", "fresh"]

MAX_AGE = 120.0
"""Seconds since a message was heard after which a restarted bot no longer answers it."""


class Heard(Protocol):
    @property
    def heard_at(self) -> float:
        """When the message was heard, on Trio's clock."""
        ...


T = TypeVar("T", bound=Heard)


def fresh(items: list[T], now: float) -> tuple[list[T], int]:
    """The ``items`` young enough to be answered at ``now``, and how many are not."""
    young = [item for item in items if now - item.heard_at <= MAX_AGE]
    return young, len(items) - len(young)


class Handover(Generic[T]):
    """Messages left by one bot of an agent for the next one (made by ``Context.lasting``).

    With a make-before-break restart (a new token) the next bot runs before the old one stops:
    what is left goes straight to it.
    """

    def __init__(self) -> None:
        self._left: list[T] = []
        self._taker: Callable[[list[T]], None] | None = None
        self._lost: Callable[[int], None] = lambda _count: None

    def attach(self, taker: Callable[[list[T]], None]) -> None:
        """``taker`` (the bot now running) gets what was left so far, and what is left later."""
        self._taker = taker
        left, self._left = self._left, []
        if left:
            taker(left)

    def detach(self, taker: Callable[[list[T]], None]) -> None:
        """``taker`` stops taking (unless a newer bot has attached since)."""
        if self._taker == taker:
            self._taker = None

    def leave(self, items: list[T], lost: Callable[[int], None]) -> None:
        """Hand ``items`` (oldest first) to the running bot, or keep them for the next one;
        ``lost(n)`` says so if none comes (see :meth:`dropped`)."""
        if not items:
            return
        if self._taker is not None:
            self._taker(items)
        else:
            self._left.extend(items)
            self._lost = lost

    def dropped(self) -> None:
        """The agent is gone (the runtime drops what it kept): no bot takes what is left."""
        left, self._left = self._left, []
        if left:
            self._lost(len(left))
