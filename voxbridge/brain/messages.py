"""What a conversation is made of: turns, and the message being answered."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

__all__ = ["Image", "Message", "Turn"]


@dataclass(frozen=True, slots=True)
class Image:
    """A picture shown to the LLM with a turn: its media type (``image/png``...) and bytes, sent
    as a base64 data URL. Only the message being answered carries pixels; the history names its
    images in its text (by reference), so no request repeats megabytes of them."""

    mime: str
    data: bytes = field(repr=False)

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation: ``role`` is ``user`` or ``assistant``; ``images`` go to
    a vision model beside ``content``."""

    role: str
    content: str
    images: tuple[Image, ...] = ()


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
