"""The voice session on Trio's mock clock: turns, streaming speech, barge-in, failures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from tests.test_smart_turn import ScriptedModel
from tests.voice_fakes import (
    FakeSTT,
    FakeTTS,
    LoudnessVAD,
    RecordingOutput,
    ScriptedBrain,
    silence,
    speak_into,
    tone,
)
from voxbridge.brain import ToolUse, Turn
from voxbridge.config.model import InterruptionConfig, SpeechConfig, VADConfig, VoiceConfig
from voxbridge.errors import BrainError
from voxbridge.voice.backchannels import has_words
from voxbridge.voice.session import CANT_ANSWER, CANT_HEAR, FILLER, Speaker, VoiceSession


def session(**kw: Any) -> tuple[VoiceSession, RecordingOutput, dict[str, list[float]]]:
    seen: dict[str, list[float]] = {}
    out = RecordingOutput()
    config = kw.pop("config", VoiceConfig(vad=VADConfig(min_speech=0.25, end_of_turn=0.6)))
    s = VoiceSession(
        config=config,
        stt=kw.pop("stt", FakeSTT()),
        tts=kw.pop("tts", FakeTTS()),
        vad=LoudnessVAD,
        think=kw.pop("think", ScriptedBrain()),
        output=out,
        observe=lambda name, seconds: seen.setdefault(name, []).append(seconds),
        **kw,
    )
    return s, out, seen


async def run(s: VoiceSession, *audio: bytes) -> None:
    """The person says ``audio`` (then stays quiet for 10 s) and hangs up."""
    send, receive = trio.open_memory_channel[bytes](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.run, receive)
        async with send:
            for piece in audio:
                await speak_into(send, piece)
            await speak_into(send, silence(10))


async def test_a_turn_streams_speech_sentence_by_sentence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    brain = ScriptedBrain(["First sentence here. ", "And a second ", "one, slowly."], gap=0.5)
    s, out, seen = session(think=brain)
    await run(s, silence(0.5), tone(1.0))
    assert out.types()[:3] == ["transcript", "delta", "delta"]
    assert out.first("transcript")[1] == {"type": "transcript", "text": "hello", "final": True}
    assert out.types()[-1] == "done"
    # Speech began with the first sentence, before the brain had finished the answer.
    first_audio = out.frames[0][0]
    last_delta = [t for t, e in out.events if e["type"] == "delta"][-1]
    assert first_audio < last_delta
    # The turn: 0.6 s of silence ends it; STT 0.2, brain 0.5, TTS 0.1: first audio ~0.8 s later.
    (first,) = seen["voice_first_audio"]
    assert 0.75 <= first <= 0.9
    assert seen["voice_stt"] == [pytest.approx(0.2)]
    # All of it played, in 20 ms frames, at real time.
    assert abs(len(out.frames) * 0.02 - 0.2 * 8) < 0.05  # 8 words of 0.2 s
    assert s.conversation.turns == (
        Turn("user", "hello"),
        Turn("assistant", "First sentence here. And a second one, slowly."),
    )


@pytest.mark.parametrize("resume", [True, False])
async def test_barge_in_stops_the_voice_and_the_brain(
    autojump_clock: trio.testing.MockClock, resume: bool
) -> None:
    long_answer = [f"This is sentence number {n} of a long answer. " for n in range(20)]
    brain = ScriptedBrain(long_answer, gap=0.3)
    stt = FakeSTT(["tell me everything", "stop"])
    config = VoiceConfig(
        vad=VADConfig(min_speech=0.25, end_of_turn=0.6),
        interruptions=InterruptionConfig(resume=resume),
    )
    s, out, seen = session(think=brain, stt=stt, config=config)
    # Ask; 2.5 s into the answer, speak again.
    await run(s, tone(1.0), silence(0.6 + 0.2 + 0.3 + 0.1 + 2.5), tone(1.0))
    # The voice stops at the onset: paused (and cut once the words are heard), or cut at once.
    onset = out.first("paused" if resume else "interrupted")[0]
    last_frame_before = max(t for t, _ in out.frames if t <= onset + 0.2)
    assert last_frame_before - onset <= 0.1  # the voice stopped within 100 ms
    assert out.clears[0] == onset
    cut = out.first("interrupted")[0]
    if resume:
        # Judged at the first pause: the rest of 1 s of speech, a 0.2 s pause, the recogniser's
        # 0.2 s; what it heard is the next turn's transcript too.
        assert cut - onset == pytest.approx(0.75 + 0.2 + 0.2, abs=0.05)
        assert "resumed" not in out.types()
        assert not [t for t, _ in out.frames if onset < t < cut]  # silent while judging
        assert len(stt.heard) == 2  # "stop" was transcribed once, to judge it and to answer
    assert brain.cancelled == 1  # the rest of the answer was never written
    (stop,) = seen["voice_barge_in"]
    assert stop <= 0.1
    # The history keeps what was heard, marked cut; the new question is the next turn.
    question, cut = s.conversation.turns[:2]
    assert question == Turn("user", "tell me everything")
    assert cut.content.startswith("This is sentence number 0") and cut.content.endswith("…")
    assert "number 19" not in cut.content
    assert s.conversation.turns[2] == Turn("user", "stop")


async def test_without_barge_in_speech_over_the_agent_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = VoiceConfig(vad=VADConfig(), barge_in=False)
    s, out, _ = session(config=config, think=ScriptedBrain(["One. ", "Two. ", "Three."], gap=0.3))
    await run(s, tone(1.0), silence(1.2), tone(1.0))
    assert "interrupted" not in out.types()
    assert s.conversation.turns[-1] == Turn("assistant", "One. Two. Three.")
    assert len(s.conversation.turns) == 2  # the second utterance was not a turn


async def test_a_greeting_is_spoken_first(autojump_clock: trio.testing.MockClock) -> None:
    config = VoiceConfig(greeting="Hi, this is Support.")
    tts = FakeTTS()
    s, out, _ = session(config=config, tts=tts)
    await run(s)
    assert tts.spoken == ["Hi, this is Support."]
    assert out.frames and s.conversation.turns == (Turn("assistant", "Hi, this is Support."),)


async def test_a_failing_recogniser_is_said_and_the_session_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tts = FakeTTS()
    s, out, _ = session(stt=FakeSTT(fail=True), tts=tts)
    await run(s, tone(1.0), silence(2), tone(1.0))
    errors = [e["message"] for _, e in out.events if e["type"] == "error"]
    assert errors == ["speech recognition (fake) failed: the fake recogniser is down"] * 2
    assert tts.spoken == [CANT_HEAR, CANT_HEAR]
    assert s.conversation.turns == ()


async def test_a_failing_brain_apologises_aloud_but_not_in_the_history(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tts = FakeTTS()
    brain = ScriptedBrain(["Partly. ", BrainError("the LLM at http://x/v1: HTTP 500")])
    s, out, _ = session(think=brain, tts=tts)
    await run(s, tone(1.0))
    assert tts.spoken == ["Partly.", CANT_ANSWER]
    assert out.first("error")[1]["message"] == "the LLM at http://x/v1: HTTP 500"
    assert s.conversation.turns == (Turn("user", "hello"), Turn("assistant", "Partly."))


async def test_a_failing_synthesizer_still_shows_the_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    s, out, _ = session(tts=FakeTTS(fail=True))
    await run(s, tone(1.0))
    assert [e["text"] for _, e in out.events if e["type"] == "delta"] == [
        "Hi there. ",
        "How can I help?",
    ]
    assert "speech synthesis (fake) failed" in out.first("error")[1]["message"]
    assert out.frames == [] and out.types()[-1] == "done"


async def test_time_to_first_audio_does_not_grow_with_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    firsts = []
    for sentences in (1, 20):
        answer = [f"Sentence {n} is here. " for n in range(sentences)]
        s, _, seen = session(think=ScriptedBrain(answer, gap=0.05))
        await run(s, tone(1.0))
        firsts.append(seen["voice_first_audio"][0])
    assert firsts[0] == pytest.approx(firsts[1])


async def test_a_microphone_stuck_open_for_minutes(autojump_clock: trio.testing.MockClock) -> None:
    import tracemalloc

    stt = FakeSTT(["what"])
    config = VoiceConfig(vad=VADConfig(max_utterance=10.0))
    s, _, _ = session(config=config, stt=stt, think=ScriptedBrain(["Yes?"]))
    send, receive = trio.open_memory_channel[bytes](0)
    sizes: list[int] = []
    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.run, receive)
            async with send:
                for _ in range(3):
                    await speak_into(send, tone(60.0))  # never a pause
                    sizes.append(tracemalloc.get_traced_memory()[0])
                await speak_into(send, silence(2.0))
    finally:
        tracemalloc.stop()
    # Cut every 10 s and transcribed; never more than 10 s of audio held at once.
    assert len(stt.heard) >= 12
    assert max(stt.heard) <= 2 * 16000 * 10.1
    assert sizes[2] - sizes[0] < 2_000_000  # flat: the third minute holds what the first did


async def test_several_speakers_are_heard_apart_and_attributed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two people in one channel: each has their own ear; who said what reaches the brain and
    the history; either of them speaking over the agent cuts it off."""
    long_answer = [f"Sentence {n} of a long answer. " for n in range(20)]
    brain = ScriptedBrain(long_answer, gap=0.3)
    s, out, _ = session(think=brain, stt=FakeSTT(["hello there", "wait a moment"]))
    ann, bob = Speaker("1", "Ann", attributed=True), Speaker("2", "Bob", attributed=True)
    ann_send, ann_frames = trio.open_memory_channel[bytes](0)
    bob_send, bob_frames = trio.open_memory_channel[bytes](0)

    async def bob_talks_over_the_answer() -> None:
        async with bob_send:
            await speak_into(bob_send, silence(1.0 + 0.6 + 0.6 + 2.0))
            await speak_into(bob_send, tone(1.0))
            await speak_into(bob_send, silence(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.converse)
        nursery.start_soon(s.listen, ann_frames, ann)
        nursery.start_soon(s.listen, bob_frames, bob)
        nursery.start_soon(bob_talks_over_the_answer)
        async with ann_send:
            await speak_into(ann_send, tone(1.0))
            await speak_into(ann_send, silence(16))
        nursery.cancel_scope.cancel()
    assert [m.username for m in brain.messages] == ["Ann", "Bob"]
    assert [m.text for m in brain.messages] == ["Ann: hello there", "Bob: wait a moment"]
    transcripts = [e for _, e in out.events if e["type"] == "transcript"]
    assert [(e["speaker"], e["text"]) for e in transcripts] == [
        ("Ann", "hello there"),
        ("Bob", "wait a moment"),
    ]
    assert brain.cancelled == 1 and out.types().count("interrupted") == 1
    question, cut, second = s.conversation.turns[:3]
    assert question == Turn("user", "Ann: hello there")
    assert cut.content.endswith("…")
    assert second == Turn("user", "Bob: wait a moment")


class CountingTTS(FakeTTS):
    """Speaks each word as 0.2 s of 20 ms frames, each frame one value, counting up: which
    frames were heard, in what order, shows on the channel."""

    async def synthesize(self, text: str, sink: Any) -> None:
        self.spoken.append(text)
        await trio.sleep(self.delay)
        for _ in text.split():
            frames = []
            for _ in range(10):
                self.count = getattr(self, "count", 0) + 1
                frames.append(np.full(320, self.count, "<i2").tobytes())
            await sink(b"".join(frames[:5]))
            await sink(b"".join(frames[5:]))


def values(out: Any) -> list[int]:
    return [int(np.frombuffer(frame, "<i2")[0]) for _, frame in out.frames]


@pytest.mark.parametrize("said", ["Mm-hmm.", "", "Yeah, okay."])
async def test_a_backchannel_pauses_the_voice_and_it_resumes_where_it_stopped(
    autojump_clock: trio.testing.MockClock, said: str
) -> None:
    answer = [f"This is sentence number {n} of the answer. " for n in range(4)]
    brain = ScriptedBrain(answer, gap=0.05)
    tts = CountingTTS()
    s, out, seen = session(think=brain, tts=tts, stt=FakeSTT(["tell me", said, "thanks"]))
    # Ask; 1.5 s into the answer, a short "mm-hmm" (0.4 s) over it.
    await run(s, tone(1.0), silence(0.6 + 0.2 + 0.05 + 0.1 + 1.5), tone(0.4))
    assert out.types().count("paused") == 1 and out.types().count("resumed") == 1
    assert "interrupted" not in out.types() and brain.cancelled == 0
    paused, resumed = out.first("paused")[0], out.first("resumed")[0]
    # Silent from the pause (within a frame) until what was said had been judged: its end,
    # a 0.2 s pause (not the 0.6 s a turn waits for), the recogniser's 0.2 s.
    assert not [t for t, _ in out.frames if paused + 0.02 < t < resumed]
    assert resumed - paused == pytest.approx(0.15 + 0.2 + 0.2, abs=0.05)
    assert seen["voice_barge_in"][0] <= 0.001
    # Every frame was heard, in order: after the pause, the frames the listener had not heard
    # yet (the channel's lead, 0.1 s, and two more to be safe) came again, then the rest.
    heard = values(out)
    again = next(i for i in range(1, len(heard)) if heard[i] <= heard[i - 1])
    assert heard[:again] + [v for v in heard[again:] if v > heard[again - 1]] == list(
        range(1, tts.count + 1)
    )
    assert 1 <= heard[again - 1] - heard[again] + 1 <= 8
    # The whole answer is in the history, and "mm-hmm" was no turn.
    assert s.conversation.turns[1] == Turn("assistant", "".join(answer).strip())
    assert len(s.conversation.turns) == 2


async def test_a_backchannel_then_more_words_is_an_interruption_of_its_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    long_answer = [f"This is sentence number {n} of a long answer. " for n in range(20)]
    brain = ScriptedBrain(long_answer, gap=0.3)
    stt = FakeSTT(["tell me everything", "Yeah.", "but what about Paris"])
    s, out, _ = session(think=brain, stt=stt)
    # "Yeah" (0.4 s); 0.55 s of silence (judged after 0.2: the agent resumes; shorter than a
    # turn's 0.6) and then more words.
    await run(
        s, tone(1.0), silence(0.6 + 0.2 + 0.3 + 0.1 + 1.5), tone(0.4), silence(0.55), tone(1.0)
    )
    assert out.types().count("paused") == 2 and out.types().count("resumed") == 1
    assert out.types().count("interrupted") == 1 and brain.cancelled == 1
    # "Yeah" was let go: the words after it are an utterance of their own, judged at their own
    # pause and the next turn — not "yeah" and all that followed, which would wait out a turn.
    assert s.conversation.turns[2] == Turn("user", "but what about Paris")
    heard = [n / 2 / 16000 for n in stt.heard]
    assert len(heard) == 3 and heard[2] < 0.3 + 1.0 + 0.2 + 0.05  # pre-roll, words, pause
    cut, last_word = out.first("interrupted")[0], 1.0 + 2.7 + 0.4 + 0.55 + 1.0
    assert cut - last_word == pytest.approx(0.2 + 0.2, abs=0.05)  # its pause, the recogniser


@pytest.mark.parametrize(
    ("said", "words"),
    [
        ("Mm-mm.", False),
        ("And mm", False),  # how Whisper tiny.en once wrote an "mm-hmm"
        ("And?", False),  # a listener's "go on"
        ("So then...", False),
        ("Yeah, okay.", False),
        ("And stop.", True),
        ("So what about Paris?", True),
        ("Wait.", True),
    ],
)
def test_what_a_listener_says_to_go_on_has_no_words(said: str, words: bool) -> None:
    assert has_words(said, InterruptionConfig().backchannels) is words


class WhisperLikeSTT(FakeSTT):
    """A recogniser that, like Whisper, tells the words said so far (and the sure ones)."""

    async def so_far(self, pcm: bytes) -> tuple[str, str]:
        text = await self.transcribe(pcm)
        return text, text


@pytest.mark.parametrize(
    ("stt", "language", "turns"),
    [
        (WhisperLikeSTT, None, ["I would like a table for two."]),  # on by default
        (WhisperLikeSTT, "de", ["I would like a table for", "two."]),  # English rules only
        (FakeSTT, None, ["I would like a table for", "two."]),  # each pause a request: off
    ],
)
async def test_by_default_the_words_judge_a_pause_when_whisper_hears_english(
    autojump_clock: trio.testing.MockClock,
    stt: type[FakeSTT],
    language: str | None,
    turns: list[str],
) -> None:
    brain = ScriptedBrain(["Sure."])
    config = VoiceConfig(
        stt=SpeechConfig(language=language),
        vad=VADConfig(min_speech=0.25, end_of_turn=2.0, smart_turn=True, pause=0.2),
    )
    recogniser = stt(["I would like a table for", turns[-1]])
    s, _, _ = session(
        think=brain, stt=recogniser, config=config, smart_turn=ScriptedModel([0.9, 0.9, 0.9])
    )
    # "I would like a table for ... [1 s] ... two.": the melody sounds finished at the pause.
    await run(s, tone(1.0), silence(1.0), tone(0.5))
    assert [m.text for m in brain.messages] == turns


async def test_words_judged_while_more_follow_are_not_the_whole_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    long_answer = [f"This is sentence number {n} of a long answer. " for n in range(20)]
    brain = ScriptedBrain(long_answer, gap=0.3)
    stt = FakeSTT(["tell me everything", "stop", "stop, tell me about the trains"])
    s, _, _ = session(think=brain, stt=stt)
    # "Stop" — judged at its pause (0.2 s, then the recogniser's 0.2 s) while more words come
    # after 0.3 s: the turn is the whole utterance, transcribed again.
    await run(
        s, tone(1.0), silence(0.6 + 0.2 + 0.3 + 0.1 + 1.5), tone(0.5), silence(0.3), tone(1.0)
    )
    assert brain.cancelled == 1
    assert s.conversation.turns[2] == Turn("user", "stop, tell me about the trains")
    assert len(stt.heard) == 3


async def test_speech_that_goes_on_past_the_timeout_barges_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    long_answer = [f"This is sentence number {n} of a long answer. " for n in range(20)]
    brain = ScriptedBrain(long_answer, gap=0.3)
    stt = FakeSTT(["tell me everything", "no no no let me explain what I meant"])
    s, out, _ = session(think=brain, stt=stt)
    await run(s, tone(1.0), silence(0.6 + 0.2 + 0.3 + 0.1 + 1.5), tone(4.0))
    paused, cut = out.first("paused")[0], out.first("interrupted")[0]
    assert cut - paused == pytest.approx(2.0, abs=0.03)  # interruptions.timeout
    assert brain.cancelled == 1 and "resumed" not in out.types()
    # What was said became the next turn once it ended, transcribed once more then.
    assert s.conversation.turns[2] == Turn("user", "no no no let me explain what I meant")


async def test_a_slow_tool_gets_a_spoken_filler_a_quick_one_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = ScriptedBrain(
        [ToolUse("lab.wait", "start", "c"), ToolUse("lab.wait", "done", "c"), "It is done."],
        gap=1.5,
    )
    s, out, _ = session(think=slow, tts=(tts := FakeTTS()))
    await run(s, silence(0.5), tone(1.0))
    assert tts.spoken == [FILLER, "It is done."]
    assert [e for _, e in out.events if e["type"] == "tool"] == [
        {"type": "tool", "name": "lab.wait", "state": "start"},
        {"type": "tool", "name": "lab.wait", "state": "done"},
    ]
    # The filler is not the agent's words: the history keeps only the answer.
    assert s.conversation.turns[-1] == Turn("assistant", "It is done.")

    quick = ScriptedBrain(
        [ToolUse("lab.echo", "start", "c"), ToolUse("lab.echo", "done", "c"), "Done."], gap=0.3
    )
    s, out, _ = session(think=quick, tts=(tts := FakeTTS()))
    await run(s, silence(0.5), tone(1.0))
    assert tts.spoken == ["Done."]
