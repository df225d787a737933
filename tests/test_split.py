from hypothesis import given
from hypothesis import strategies as st

from voxbridge.plugins.discord.reply import LIMIT, split_message


def test_short_text_is_one_message() -> None:
    assert split_message("  hello \n") == ["hello"]
    assert split_message("") == []


def test_splits_at_line_breaks_then_spaces() -> None:
    para = "word " * 300  # 1,500 characters
    text = para.strip() + "\n" + para.strip()
    parts = split_message(text)
    assert parts == [para.strip(), para.strip()]
    words = split_message("abc " * 1000)
    assert all(len(p) <= LIMIT and not p.endswith(" ") for p in words)
    assert " ".join(words).split() == ("abc " * 1000).split()


def test_a_single_huge_word_is_cut_hard() -> None:
    assert [len(p) for p in split_message("x" * 4500)] == [2000, 2000, 500]


@given(st.text(max_size=7000))
def test_pieces_fit_and_keep_every_word(text: str) -> None:
    parts = split_message(text)
    assert all(0 < len(p) <= LIMIT for p in parts)
    # Nothing but whitespace is lost, and nothing moves.
    assert "".join("".join(parts).split()) == "".join(text.split())
