"""Whether the words said so far plainly go on (voice.vad.words): English grammar on a
transcript — finished sentences, sentences broken off, the ends English allows."""

from __future__ import annotations

import pytest

from voxbridge.voice.unfinished import SoFar, goes_on


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "Please tell me a joke about cats.",
        "Turn it on.",  # a particle, not a preposition
        "Log me out",
        "Wake me up at 6 30.",  # digits are words
        "Thank you, that is all I needed.",
        "Good night, see you tomorrow.",
        "",
    ],
)
def test_finished_sentences_do_not_go_on(text: str) -> None:
    assert not goes_on(text)


@pytest.mark.parametrize(
    "text",
    [
        "I would like to book a table for",
        "Can you tell me about the",
        "Send a message to my",
        "Please add eggs and",
        "Could you remind me, um",
        "I think the best option would be",
        "Tell my boss that I will",
        "Call my dentist and tell her I",
        "It was so cold,",
        "The name of the hotel was...",
        "So I was thinking that maybe we could…",
        "I need to buy -",
    ],
)
def test_sentences_broken_off_go_on(text: str) -> None:
    assert goes_on(text)


@pytest.mark.parametrize(
    "text",
    [
        "Where are you from?",  # a question strands its preposition
        "Who did you go with?",
        "What are you looking at?",
        "Which one are you thinking of?",
    ],
)
def test_questions_may_end_on_a_preposition(text: str) -> None:
    assert not goes_on(text)


def test_but_a_statement_may_not() -> None:
    assert goes_on("I was looking at")
    assert goes_on("Can you find me a recipe with")  # a yes/no question is no exception


@pytest.mark.parametrize(
    "text",
    ["I can.", "We could.", "Yes, I'd love to.", "Yes, you should.", "No, it isn't.", "I will"],
)
def test_short_answers_may_leave_their_verb_out(text: str) -> None:
    assert not goes_on(text)


@pytest.mark.parametrize("text", ["Neither am I.", "So do we.", "He is taller than I.", "Are we?"])
def test_a_subject_pronoun_may_end_a_sentence_after_an_auxiliary(text: str) -> None:
    assert not goes_on(text)


def test_the_words_the_stt_is_sure_of_decide() -> None:
    # Whisper finished the sentence with a word it made up, and was unsure of it.
    invented = SoFar("I would like to book a table for it.", "I would like to book a table for")
    assert invented.goes_on and not goes_on(invented.text)
    # A word it was sure of stays: the sentence is over.
    assert not SoFar("Tell me a joke about cats.", "Tell me a joke about cats.").goes_on
    # Trailing off shows in either: "with..." with the "with" left out still trails off.
    assert SoFar("Find me a recipe with...", "Find me a recipe").goes_on
    assert SoFar("It was so cold, natter.", "It was so cold,").goes_on
    assert not SoFar("Lock the door.").goes_on  # an STT that does not tell: all of it


def test_a_dangling_word_goes_on_however_unsure_the_stt_is_of_it() -> None:
    # Whisper makes up words that finish a sentence, never an "and" or a "the": so a transcript
    # that ends on one goes on even when its last word was the unsure one.
    assert SoFar("my sister and", "my sister").goes_on
    assert SoFar("Put the milk back in the", "Put the milk back in").goes_on
    assert not SoFar("Yes, I'd love to.", "Yes, I'd love").goes_on  # a short answer may end so
