"""A conversation in the process: what it holds, what the brain is shown, in what order."""

from __future__ import annotations

from voxbridge.brain import Turn
from voxbridge.memory import Conversation


async def test_a_conversation_keeps_what_was_said_and_marks_cut_answers() -> None:
    talk = Conversation()
    (talk.ask("hi")).answered("hello there ")
    (talk.ask("tell me a story")).answered("Once upon a", cut=True)
    (talk.ask("are you there?")).answered("")  # the brain failed: only the question stays
    assert talk.turns == (
        Turn("user", "hi"),
        Turn("assistant", "hello there"),
        Turn("user", "tell me a story"),
        Turn("assistant", "Once upon a…"),
        Turn("user", "are you there?"),
    )
    following = talk.ask("next")
    assert following.context(2) == [
        Turn("assistant", "Once upon a…"),
        Turn("user", "are you there?"),
        Turn("user", "next"),
    ]
    assert following.context(0) == [Turn("user", "next")]


async def test_answers_follow_their_own_question_when_two_are_answered_at_once() -> None:
    talk = Conversation()
    ann = talk.ask("Ann: what is 2+2?")
    bob = talk.ask("Bob: and the capital of France?")
    # Bob's question is shown what came before it, not what comes after.
    assert bob.context(10) == [Turn("user", "Ann: what is 2+2?"), Turn("user", bob.question)]
    bob.answered("Paris.")
    ann.answered("4.")
    assert talk.turns == (
        Turn("user", "Ann: what is 2+2?"),
        Turn("assistant", "4."),
        Turn("user", "Bob: and the capital of France?"),
        Turn("assistant", "Paris."),
    )
    ann.answered("a second answer to one question is ignored")
    assert len(talk.turns) == 4
    assert talk.busy == 0
