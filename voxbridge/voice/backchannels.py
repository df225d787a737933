"""Whether what a person said over the agent is words, or a listener's "go on".

"Mm-hmm", "yeah", "okay" said while someone talks mean "I'm listening" (backchannels); a cough
has no words at all. Neither should cut the agent short. Whisper writes such sounds in many
spellings ("Mm-mm.", "Uh-uh.", "Hmm"), so besides the configured phrases any word made only of
those sounds counts as one. So does a bare link — "and?", "so...", "and then?" ask the speaker to
go on, they do not take the floor — which is also how Whisper often begins a hum it could not
spell ("And mm": one backchannel in the benchmark was cut by that "And"). Whatever follows a link
is judged on its own: "and stop" has words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["has_words"]

_WORD = re.compile(r"[\w'-]+")
# Hums and grunts in any spelling, hyphenated or not: mm, mmhmm, hmm, uh, uhhuh, um, ah, oh.
_SOUND = re.compile(r"^(?:[mh]+|u+[hm]+|a+h+|o+h+|h?u+h+)$")


# Links that, with nothing after them, ask for more: a listener's "and?" or "so then...".
_LINKS = frozenset({"and", "so", "but", "or", "then", "well"})


def _is_sound(word: str) -> bool:
    return word in _LINKS or all(_SOUND.match(part) for part in word.split("-") if part)


def has_words(text: str, backchannels: Iterable[str]) -> bool:
    """Whether ``text`` says something beyond ``backchannels`` and hums."""
    said = " ".join(_WORD.findall(text.lower()))
    for phrase in sorted(backchannels, key=len, reverse=True):
        words = " ".join(_WORD.findall(phrase.lower()))
        if words:
            said = re.sub(rf"(?<![\w'-]){re.escape(words)}(?![\w'-])", " ", said)
    return any(not _is_sound(word) for word in said.split())
