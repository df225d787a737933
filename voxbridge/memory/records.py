"""What memory holds, as frozen values: the turns of conversations and facts about people.

A conversation is keyed by agent and *place* (``discord:<channel id>``, ``web:<id>``...); a
person by a key of the same shape (``discord:<user id>``). A turn belongs to an *exchange*: the
question and the answer to it share one, so history reads in exchange order whatever order
the answers were finished in (two people answered at once in a busy channel). Exchanges are
microseconds since the epoch, strictly increasing in a process: unique in a conversation,
ordered across restarts, known before anything is written.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

__all__ = [
    "ANSWER",
    "QUESTION",
    "Counts",
    "Fact",
    "PersonSummary",
    "PlaceSummary",
    "StoredTurn",
    "is_key",
    "new_exchange",
    "normalized",
]

QUESTION = 0
"""The part of an exchange that the person said."""
ANSWER = 1
"""The part of an exchange that the agent said (alone, for a greeting)."""

_KEY = re.compile(r"^[a-z][a-z0-9-]{0,31}:[A-Za-z0-9_.@-]{1,100}$")


def is_key(text: str) -> bool:
    """Whether ``text`` is a place or person key: ``kind:id`` (``discord:1234``, ``web:ab-9``)."""
    return bool(_KEY.match(text))


_last = 0


def new_exchange() -> int:
    """A new exchange number: microseconds since the epoch, above every one made before."""
    global _last
    _last = max(_last + 1, time.time_ns() // 1000)
    return _last


_SPACE = re.compile(r"\s+")


def normalized(fact: str) -> str:
    """The form two facts are compared in: one is not stored twice for a change of case,
    spacing or final full stop."""
    return _SPACE.sub(" ", fact).strip().rstrip(".").casefold()


@dataclass(frozen=True, slots=True)
class StoredTurn:
    """One turn of a conversation as stored: ``part`` is :data:`QUESTION` or :data:`ANSWER`;
    ``person`` and ``name`` say who asked (questions only); ``cut``: an answer that stopped
    before its end (its text ends where the person stopped hearing it)."""

    agent: str
    place: str
    exchange: int
    part: int
    text: str
    at: float
    person: str | None = None
    name: str | None = None
    cut: bool = False

    @property
    def role(self) -> str:
        """``user`` or ``assistant``, as the LLM sees it."""
        return "assistant" if self.part == ANSWER else "user"


@dataclass(frozen=True, slots=True)
class Fact:
    """Something an agent learned about a person ("prefers metric units")."""

    agent: str
    person: str
    text: str
    at: float
    id: int = 0


@dataclass(frozen=True, slots=True)
class Counts:
    """Rows removed (by forget or expiry) or held."""

    turns: int = 0
    facts: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.turns + other.turns, self.facts + other.facts)


@dataclass(frozen=True, slots=True)
class PlaceSummary:
    """One stored conversation of an agent: where, how many turns, the last one when."""

    place: str
    turns: int
    last: float


@dataclass(frozen=True, slots=True)
class PersonSummary:
    """One person an agent remembers: their facts and turns, the last one when."""

    person: str
    name: str | None
    facts: int
    turns: int
    last: float
