"""Whether the words said so far plainly go on: a sentence broken off, not finished.

Smart Turn hears the melody of an utterance; where the melody misleads (a thinking pause marked
only by a comma's pitch), the words often still tell. LiveKit's agents ask a small language
model about the transcript beside the VAD; voxbridge asks a few rules of English grammar, which
need no model and cannot be talked into calling a finished sentence unfinished by much:

- the transcript trails off: it ends in "...", "…", a dash or a comma (Whisper writes these
  where a speaker stops mid-thought);
- the last word is one no English sentence ends on: a filler ("um", "uh"), an article, a
  possessive ("my", "their"), a conjunction ("and", "because", "if");
- the last word is a subject pronoun ("I", "we") that no auxiliary comes before ("Neither
  am I" is over; "tell her that I" is not);
- the last word is a preposition or an auxiliary ("to", "with", "is", "would"), unless the
  sentence may well end there: a question that strands its preposition ("Where are you
  from?" — it begins with a question word), or a short answer that leaves its verb out
  ("I can.", "Yes, I'd love to.").

Words are judged as the STT is sure of them: Whisper finishes a sentence cut short with a word of
its own ("I would like a table for ... it."), a word it is unsure of, so the words are judged
without it too when it tells (:class:`SoFar`'s ``sure``).

English only: for another language turn it off (``voice.vad.words: false``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SoFar", "goes_on"]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TRAILING = re.compile(r"(?:\.\.\.|…|[-–—,])\s*$")

FILLERS = frozenset({"um", "umm", "uh", "uhm", "er", "erm"})
ARTICLES = frozenset({"a", "an", "the", "every"})
POSSESSIVES = frozenset({"my", "your", "our", "their", "its"})
CONJUNCTIONS = frozenset(
    {"and", "but", "or", "nor", "because", "although", "if", "unless", "whether", "whereas"}
)
# Prepositions that do not double as a verb's particle ("turn it on", "come in", "log out").
PREPOSITIONS = frozenset(
    {"of", "to", "for", "with", "from", "at", "about", "into", "onto", "upon", "than", "toward",
     "towards", "between", "among", "via"}
)  # fmt: skip
AUXILIARIES = frozenset(
    {"is", "are", "was", "were", "am", "be", "been", "being", "will", "would", "can", "could",
     "shall", "should", "may", "might", "must", "do", "does", "did", "have", "has", "had"}
)  # fmt: skip
SUBJECTS = frozenset({"i", "we", "he", "she", "they"})
COMPARED = frozenset({"than", "as", "and", "nor"})  # "taller than I", "so do we", "you and I"
QUESTION_WORDS = frozenset({"what", "who", "whom", "where", "which", "whose"})
ANSWERS = frozenset({"yes", "yeah", "yep", "no", "nope", "sure", "okay", "ok", "maybe"})
_SHORT = 3  # words or fewer: "We could.", "I'd love to." answer; "Tell him that I will" is cut


def _may_end(words: list[str]) -> bool:
    """Whether a sentence ending on a preposition or an auxiliary may be over."""
    answer = len(words) <= _SHORT or words[0] in ANSWERS
    return answer or (words[-1] in PREPOSITIONS and words[0] in QUESTION_WORDS)


def goes_on(text: str, sure: str | None = None) -> bool:
    """Whether the transcript ``text`` plainly breaks off mid-sentence; ``sure``: the part of it
    the STT is sure of (its words up to one it may have made up to finish the sentence: see
    :func:`.whisper_stt.so_far`), judged too. Either may tell: the word Whisper makes up is one
    that finishes a sentence ("a table for ... it."), so when ``text`` itself ends on "and" or
    "the", the sentence goes on however unsure Whisper is of that word."""
    return _breaks_off(text) or (sure is not None and _breaks_off(sure))


def _breaks_off(text: str) -> bool:
    if _TRAILING.search(text):
        return True
    words = _WORD.findall(text.lower())
    if not words:
        return False
    last = words[-1]
    if last in FILLERS or last in ARTICLES or last in POSSESSIVES or last in CONJUNCTIONS:
        return True
    if last in SUBJECTS:  # "... and tell her I": a verb must follow, unless asked ("am I?")
        return len(words) > 1 and words[-2] not in AUXILIARIES | COMPARED
    if last in PREPOSITIONS or last in AUXILIARIES:
        return not _may_end(words)
    return False


@dataclass(frozen=True, slots=True)
class SoFar:
    """What was said so far: ``text``, and ``sure``, the part of it the STT is sure of (None:
    all of it)."""

    text: str
    sure: str | None = None

    @property
    def goes_on(self) -> bool:
        return goes_on(self.text, self.sure)
