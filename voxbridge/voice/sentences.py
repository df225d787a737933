"""An answer's text, as it streams in, cut into sentences to speak one at a time.

The first sentence goes to the TTS as soon as it is complete, so the time to the first audio
does not depend on the answer's length. A sentence ends at ``.``, ``!``, ``?`` or ``…`` followed
by a space (closing quotes and brackets stay with it), or at a line break — but not after a
title or common abbreviation (``Dr.``, ``e.g.``), an initial (``J. R. R.``), or a list number at
the start of a line (``1.``); ``3.14`` and ``example.com/x`` never break (no space follows the
dot). A run-on sentence is cut at a comma or a space once it is long, so one sentence never holds
the voice back for long. Markdown that means nothing spoken (``**``, `` ` ``, ``#`` headings,
list bullets, link targets) is removed.
"""

from __future__ import annotations

import re

__all__ = ["MAX_SENTENCE", "SentenceSplitter", "speakable"]

MAX_SENTENCE = 240  # characters before a run-on sentence is cut at a comma or a space

_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "ft",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "a.m",
        "p.m",
        "no",
        "vol",
        "fig",
        "approx",
        "dept",
        "est",
        "inc",
        "ltd",
        "co",
        "corp",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
        "u.s",
        "u.k",
        "e.u",
    ]
)
# Words that end a sentence even though they are abbreviations when a capital follows them:
# "… and so on, etc. Then …" is two sentences.
_TERMINAL_ABBREVIATIONS = frozenset({"etc", "inc", "ltd", "co", "corp", "a.m", "p.m"})
_END = re.compile(r"[.!?…]+[\"'”’)\]]*")
_LIST_NUMBER = re.compile(r"(?:^|\n)\s*\d{1,3}[.)]$")


def _word_before(text: str, dot: int) -> str:
    start = dot
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "."):
        start -= 1
    return text[start:dot].lower()


def _ambiguous(text: str, match: re.Match[str]) -> bool:
    """Whether a dot might not end the sentence: after a title, an abbreviation, an initial or
    a list number (then the next word decides)."""
    if not match.group().startswith("."):
        return False
    dot = match.start()
    word = _word_before(text, dot)
    return (
        word in _ABBREVIATIONS
        or (len(word) == 1 and word.isalpha())
        or _LIST_NUMBER.search(text[: dot + 1]) is not None
    )


def _ends_anyway(text: str, match: re.Match[str]) -> bool:
    """For an ambiguous dot, with the next word begun: whether it ends the sentence."""
    dot = match.start()
    word = _word_before(text, dot)
    capital = text[match.end() :].lstrip()[:1].isupper()
    if _LIST_NUMBER.search(text[: dot + 1]):
        return False
    if word in _ABBREVIATIONS:
        return word in _TERMINAL_ABBREVIATIONS and capital
    return not capital  # an initial before a capital: "J. R. R. Tolkien"


class SentenceSplitter:
    """Feed it text as it arrives; it hands back each sentence once it is complete."""

    def __init__(self, max_sentence: int = MAX_SENTENCE) -> None:
        self._buffer = ""
        self._max = max_sentence

    def feed(self, text: str) -> list[str]:
        """The sentences ``text`` completed (raw; see :func:`speakable`)."""
        self._buffer += text
        out: list[str] = []
        while True:
            cut = self._next_cut()
            if cut is None:
                break
            sentence, self._buffer = self._buffer[:cut], self._buffer[cut:]
            if sentence.strip():
                out.append(sentence.strip())
        return out

    def flush(self) -> str | None:
        """The rest, once the text is complete."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None

    def _next_cut(self) -> int | None:
        text = self._buffer
        newline = text.find("\n")
        for match in _END.finditer(text):
            if newline != -1 and newline < match.start():
                break
            end = match.end()
            if end >= len(text):
                return None  # what follows decides: wait for it
            if not text[end].isspace():
                continue  # "3.14", "example.com", "?!"
            if not _ambiguous(text, match):
                return end
            if not text[end:].strip():
                return None  # "Dr. " or "1. ": the next word decides
            if _ends_anyway(text, match):
                return end
        if newline != -1:
            return newline + 1
        if len(text) > self._max:
            comma = text.rfind(", ", 0, self._max)
            space = text.rfind(" ", 0, self._max)
            return (
                (comma + 2) if comma > self._max // 2 else (space + 1 if space > 0 else self._max)
            )
        return None


_MARKDOWN = [
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # [text](url) → text
    (re.compile(r"`{1,3}([^`]*)`{1,3}"), r"\1"),  # code spans
    (re.compile(r"(?<!\w)(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1(?!\w)"), r"\2"),  # emphasis
    (re.compile(r"^\s{0,3}#{1,6}\s+", re.M), ""),  # headings
    (re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+", re.M), ""),  # list bullets and numbers
]


def speakable(text: str) -> str:
    """``text`` without the markdown a voice would read out literally."""
    for pattern, replacement in _MARKDOWN:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())
