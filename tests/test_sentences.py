"""The sentence splitter that lets the voice start speaking before the answer is complete."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxbridge.voice.sentences import MAX_SENTENCE, SentenceSplitter, speakable


def split(text: str, step: int = 1) -> list[str]:
    """Every sentence, feeding ``text`` ``step`` characters at a time (as a stream would)."""
    splitter = SentenceSplitter()
    out: list[str] = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i : i + step])
    rest = splitter.flush()
    return [*out, rest] if rest else out


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("Wait! Really?! Yes…  Fine.", ["Wait!", "Really?!", "Yes…", "Fine."]),
        (
            "Dr. Smith will see you. Bring Mrs. Jones too.",
            ["Dr. Smith will see you.", "Bring Mrs. Jones too."],
        ),
        ("Pi is 3.14 roughly. Next.", ["Pi is 3.14 roughly.", "Next."]),
        ("See example.com/a.b for more. Then go.", ["See example.com/a.b for more.", "Then go."]),
        ("Visit https://x.org. Then rest.", ["Visit https://x.org.", "Then rest."]),
        ("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."]),
        ("Use e.g. a hammer. Or not.", ["Use e.g. a hammer.", "Or not."]),
        ("Fruit, cheese, etc. Then dessert.", ["Fruit, cheese, etc.", "Then dessert."]),
        ("Steps:\n1. Open it.\n2. Close it.", ["Steps:", "1. Open it.", "2. Close it."]),
        ("- apples\n- pears\n", ["- apples", "- pears"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("no punctuation at all", ["no punctuation at all"]),
    ],
)
def test_sentences(text: str, sentences: list[str]) -> None:
    assert split(text) == sentences  # a character at a time
    assert split(text, 7) == sentences  # in uneven chunks
    assert split(text, len(text)) == sentences  # all at once


def test_the_first_sentence_is_ready_before_the_answer_ends() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Sure") == []
    assert splitter.feed(".") == []  # "Sure." might yet be "Sure.com"...
    assert splitter.feed(" ") == ["Sure."]  # ...a space settles it, at once
    assert splitter.feed("Ask Dr. ") == []  # a title: the next word decides
    assert splitter.feed("Smith. He") == ["Ask Dr. Smith."]
    assert splitter.feed(" is in, in detail") == []


def test_a_run_on_sentence_is_cut_at_a_comma() -> None:
    clause = "and then something else happened, "
    parts = split(clause * 20)
    assert len(parts) > 1
    assert all(len(p) <= MAX_SENTENCE for p in parts)
    assert all(p.endswith(",") for p in parts[:-1])


@given(st.text(alphabet="ab .!?\n,3", max_size=300), st.integers(1, 20))
def test_nothing_is_lost_or_reordered(text: str, step: int) -> None:
    assert "".join(split(text, step)).replace(" ", "").replace("\n", "") == text.replace(
        " ", ""
    ).replace("\n", "")


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("**Bold** and *it* and `code`.", "Bold and it and code."),
        ("## Heading", "Heading"),
        ("- item one", "item one"),
        ("2. second", "second"),
        ("See [the docs](https://x.org/docs).", "See the docs."),
        ("snake_case_name stays", "snake_case_name stays"),
    ],
)
def test_speakable(text: str, spoken: str) -> None:
    assert speakable(text) == spoken
