"""Text that is not Unicode: how to say what is wrong with it, and a last-resort repair.

A Python string can hold what UTF-8 cannot carry: lone surrogates (U+D800 to U+DFFF). They
come from JSON escapes (``"\\ud800"``), and from bytes that were not UTF-8 in a command-line
argument or a terminal read with ``surrogateescape`` (byte 0xE9 becomes U+DCE9). Encoding such
a string for the LLM's JSON body raises ``UnicodeEncodeError`` deep inside httpx, so the places
where people type (the web chat, the terminal) refuse it with :func:`invalid_unicode`'s words,
and :func:`scrub` repairs whatever else reaches the brain (a transcript, a Discord message).
"""

from __future__ import annotations

import re

__all__ = ["invalid_unicode", "scrub"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def invalid_unicode(text: str) -> str | None:
    """What makes ``text`` unfit to send on (for a message to a person), or None if it is fine."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    code, at = ord(found.group()), found.start() + 1
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's mark of an undecodable byte
        return f"byte 0x{code - 0xDC00:02x} at character {at} is not UTF-8"
    return f"U+{code:04X} at character {at} is half of a surrogate pair, not a character"


def scrub(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (the replacement character)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text
