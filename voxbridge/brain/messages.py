"""What a conversation is made of: turns, and the message being answered."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Message", "Turn"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation: ``role`` is ``user`` or ``assistant``."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Message:
    """What the brain is asked about: who said what, where (the session). ``person`` is who
    asked as memory knows them (``discord:<user id>``, ``web:<conversation id>``...): what
    the agent remembers of them is recalled into the answer."""

    session_id: str
    user_id: str
    username: str
    text: str
    person: str = ""
