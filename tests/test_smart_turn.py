"""Smart turn (SPEC §17): the Smart Turn v3 model asked after a short pause whether the person
finished — first its place in the turn detector (a scripted model, deterministic), then the real
model on the labelled set of espeak-ng sentences in tests/turn_set.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio

from tests.test_turns import feed
from tests.turn_set import evaluate, summary
from tests.voice_fakes import LoudnessVAD, silence, tone
from tests.voice_models import smart_turn, whisper_tiny
from voxbridge.config.model import VADConfig, VoiceConfig
from voxbridge.voice.audio import FRAME_SAMPLES, RATE
from voxbridge.voice.providers import open_providers
from voxbridge.voice.smart_turn import SmartTurn
from voxbridge.voice.turns import SpeechPaused, SpeechStarted, TurnDetector, TurnEvent, Utterance
from voxbridge.voice.unfinished import SoFar
from voxbridge.voice.vad import SileroVAD
from voxbridge.voice.whisper_stt import WhisperSTT

CONFIG = VADConfig(min_speech=0.25, end_of_turn=2.0, smart_turn=True, pause=0.2)


@dataclass
class ScriptedModel:
    """Answers each question with the next probability; keeps how much audio it was given."""

    answers: list[float]
    asked: list[float] = field(default_factory=list)
    delay: float = 0.0  # its time to answer

    async def complete(self, pcm: bytes) -> float:
        self.asked.append(len(pcm) / 2 / RATE)
        await trio.sleep(self.delay)
        return self.answers.pop(0)


async def test_a_finished_sentence_ends_after_the_pause_not_end_of_turn() -> None:
    model = ScriptedModel([0.9])
    detector = TurnDetector(LoudnessVAD(), CONFIG, model)  # type: ignore[arg-type]
    started, utterance = await feed(detector, silence(0.5) + tone(1.0) + silence(3.0))
    assert isinstance(started, SpeechStarted) and isinstance(utterance, Utterance)
    assert 1.5 + 0.2 <= utterance.at <= 1.5 + 0.2 + 0.033  # 200 ms, not 2 s, of silence
    assert len(model.asked) == 1
    assert detector.complete == 0.9


async def test_an_unfinished_one_waits_and_each_pause_is_a_new_question() -> None:
    model = ScriptedModel([0.1, 0.2, 0.8])
    detector = TurnDetector(LoudnessVAD(), CONFIG, model)  # type: ignore[arg-type]
    # "I would like ... [1 s] ... a table for ... [1.5 s] ... two." — asked at each pause.
    audio = tone(1.0) + silence(1.0) + tone(0.6) + silence(1.5) + tone(0.5) + silence(3.0)
    events = await feed(detector, audio)
    (utterance,) = [e for e in events if isinstance(e, Utterance)]
    assert len(model.asked) == 3  # once per pause, not once per window
    assert utterance.duration >= 1.0 + 1.0 + 0.6 + 1.5 + 0.5  # one utterance, whole
    assert model.asked[1] > model.asked[0]  # it hears the utterance so far, every time
    assert utterance.at == pytest.approx(4.6 + 0.2, abs=0.033)


async def test_when_the_model_never_says_finished_end_of_turn_still_ends_it() -> None:
    model = ScriptedModel([0.3])
    detector = TurnDetector(LoudnessVAD(), CONFIG, model)  # type: ignore[arg-type]
    events = await feed(detector, tone(1.0) + silence(3.0))
    (utterance,) = [e for e in events if isinstance(e, Utterance)]
    assert 1.0 + 2.0 <= utterance.at <= 1.0 + 2.0 + 0.033


@dataclass
class ScriptedWords:
    """Hears the words of the first ``short`` seconds as ``before``, more as ``after``, taking
    ``delay``; keeps what it was asked about, and what it was asked and then not waited for."""

    before: str
    after: str = ""
    short: float = 1.6
    delay: float = 0.1
    asked: list[float] = field(default_factory=list)
    dropped: int = 0

    async def __call__(self, pcm: bytes) -> SoFar:
        self.asked.append(len(pcm) / 2 / RATE)
        try:
            await trio.sleep(self.delay)
        except trio.Cancelled:
            self.dropped += 1
            raise
        return SoFar(self.before if len(pcm) / 2 / RATE < self.short else self.after)


async def paced(detector: TurnDetector, audio: bytes) -> list[tuple[TurnEvent, float]]:
    """Push ``audio`` in 20 ms frames as a live stream does (one every 20 ms, on the clock);
    each event with how late it came: the clock when it did minus the stream time it names."""
    events, start = [], trio.current_time()
    for n, i in enumerate(range(0, len(audio), 2 * FRAME_SAMPLES)):
        await trio.sleep_until(start + (n + 1) * FRAME_SAMPLES / RATE)  # when it was heard
        for event in await detector.push(audio[i : i + 2 * FRAME_SAMPLES]):
            at = getattr(event, "at", 0.0)
            events.append((event, trio.current_time() - start - at))
    return events


async def test_a_finished_sounding_pause_whose_words_go_on_waits(
    autojump_clock: trio.abc.Clock,
) -> None:
    model = ScriptedModel([0.9, 0.9])  # the melody says finished, both times
    words = ScriptedWords("I would like a table for", "I would like a table for two.")
    # "I would like a table for ... [1 s] ... two."
    audio = tone(1.0) + silence(1.0) + tone(0.5) + silence(3.0)
    async with trio.open_nursery() as nursery:
        detector = TurnDetector(LoudnessVAD(), CONFIG, model, words=words, nursery=nursery)  # type: ignore[arg-type]
        events = await feed(detector, audio, pauses=True)
    paused = [e for e in events if isinstance(e, SpeechPaused)]
    (utterance,) = [e for e in events if isinstance(e, Utterance)]
    assert paused[0].text == "I would like a table for"  # it waited: the words go on
    assert detector.held == 1
    assert utterance.duration >= 1.0 + 1.0 + 0.5  # one utterance, whole
    assert utterance.at == pytest.approx(2.5 + 0.2, abs=0.033)  # the finished one: at the pause
    assert utterance.text == "I would like a table for two."  # transcribed already
    assert len(words.asked) == 2  # once per silence


async def test_words_that_do_not_go_on_end_the_turn_at_the_pause(
    autojump_clock: trio.abc.Clock,
) -> None:
    words = ScriptedWords("Lock the front door.")
    async with trio.open_nursery() as nursery:
        detector = TurnDetector(
            LoudnessVAD(), CONFIG, ScriptedModel([0.9]), words=words, nursery=nursery
        )  # type: ignore[arg-type]
        events = await feed(detector, tone(1.0) + silence(3.0))
    (utterance,) = [e for e in events if isinstance(e, Utterance)]
    assert utterance.at == pytest.approx(1.0 + 0.2, abs=0.033)
    assert (utterance.text, detector.held) == ("Lock the front door.", 0)


async def test_when_the_words_cannot_be_told_the_model_alone_decides(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def failing(pcm: bytes) -> SoFar | None:
        await trio.sleep(0.05)
        return None  # the STT failed, or took too long

    async with trio.open_nursery() as nursery:
        detector = TurnDetector(
            LoudnessVAD(), CONFIG, ScriptedModel([0.9]), words=failing, nursery=nursery
        )  # type: ignore[arg-type]
        events = await feed(detector, tone(1.0) + silence(3.0))
    (utterance,) = [e for e in events if isinstance(e, Utterance)]
    assert utterance.at == pytest.approx(1.0 + 0.2, abs=0.033)
    assert utterance.text is None  # the turn transcribes it, and says what failed


async def test_an_unfinished_melody_waits_without_asking_the_words(
    autojump_clock: trio.abc.Clock,
) -> None:
    words = ScriptedWords("I would like a table for")
    detector = TurnDetector(LoudnessVAD(), CONFIG, ScriptedModel([0.1]), words=words)  # type: ignore[arg-type]
    events = await feed(detector, tone(1.0) + silence(3.0))
    (utterance,) = [e for e in events if isinstance(e, Utterance)]
    assert utterance.at == pytest.approx(1.0 + 2.0, abs=0.033)  # end_of_turn
    assert words.asked == []  # without a nursery, asked only when the model says finished


async def test_asked_ahead_the_answers_are_at_hand_at_the_pause(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Faint noise, not digital silence (which ends a pause on the frame it is due, with the
    # window completed ahead: the event's stream time would run ahead of what was fed).
    hush = np.random.default_rng(1).normal(0, 30, RATE).astype("<i2").tobytes()
    audio = tone(1.0) + hush
    lateness = {}
    for ahead in (False, True):
        model = ScriptedModel([0.9], delay=0.05)
        words = ScriptedWords("Lock the front door.", delay=0.08)
        async with trio.open_nursery() as nursery:
            detector = TurnDetector(
                LoudnessVAD(),
                CONFIG,
                model,
                words=words,
                nursery=nursery if ahead else None,  # type: ignore[arg-type]
            )
            events = await paced(detector, audio)
        ((utterance, late),) = [(e, t) for e, t in events if isinstance(e, Utterance)]
        # (In noise the silence counts from the window after the tone's last: up to 48 ms on.)
        assert utterance.at == pytest.approx(1.0 + 0.2 + 0.024, abs=0.025)
        lateness[ahead] = late
    # Asked at the pause, the turn ends after the model and the STT answer, one after the other;
    # asked as the silence began, they had answered by then.
    assert lateness[False] >= 0.05 + 0.08
    assert lateness[True] < 0.02 + 1e-6  # a frame (its last sample came after the window's)


async def test_speech_again_drops_the_questions_asked_ahead(
    autojump_clock: trio.abc.Clock,
) -> None:
    words = ScriptedWords("I would like", "I would like a table for two.", delay=0.5)
    async with trio.open_nursery() as nursery:
        detector = TurnDetector(
            LoudnessVAD(), CONFIG, ScriptedModel([0.9]), words=words, nursery=nursery
        )  # type: ignore[arg-type]
        events = await feed(detector, tone(1.0) + silence(0.1) + tone(1.0) + silence(3.0))
    (utterance,) = [e for e in events if isinstance(e, Utterance)]
    assert len(words.asked) == 2 and words.dropped == 1  # the short silence's, not waited for
    assert utterance.text == "I would like a table for two."


async def test_on_the_labelled_set_it_waits_out_thinking_pauses_and_ends_finished_ones_fast() -> (
    None
):
    model = SmartTurn(smart_turn())
    silence_only = summary(await evaluate(lambda _: TurnDetector(SileroVAD(), VADConfig())))
    smart = await evaluate(lambda _: TurnDetector(SileroVAD(), CONFIG, model))
    found = summary(smart)
    # Silence alone (600 ms) cuts every thinking pause (1 s) and waits 600 ms on every finish.
    assert silence_only["false_cutoff_rate"] == 1.0
    assert silence_only["wait_p50"] >= 0.6
    # The model lets most thinking pauses be, and ends most finished sentences well before.
    assert found["false_cutoff_rate"] <= 0.4, [r for r in smart if r.cut]
    assert found["finished_cut_rate"] <= 0.1  # a comma taken for the end, at most
    fast = [r for r in smart if r.finished and r.wait is not None and r.wait < 0.5]
    assert len(fast) >= 0.7 * len([r for r in smart if r.finished])


async def test_with_the_words_said_so_far_fewer_thinking_pauses_are_cut() -> None:
    model, stt = SmartTurn(smart_turn()), WhisperSTT(whisper_tiny())

    async def words(pcm: bytes) -> SoFar:
        return SoFar(*await stt.so_far(pcm))

    alone = summary(await evaluate(lambda _: TurnDetector(SileroVAD(), CONFIG, model)))
    smart = await evaluate(
        lambda n: TurnDetector(SileroVAD(), CONFIG, model, words=words, nursery=n)
    )
    found = summary(smart)
    assert found["false_cutoff_rate"] < alone["false_cutoff_rate"], [r for r in smart if r.cut]
    assert found["false_cutoff_rate"] <= 0.15
    assert found["finished_cut_rate"] <= 0.1
    assert found["wait_p50"] <= 0.5  # most finished sentences still end at the pause


async def test_a_missing_model_is_reported_and_turns_end_on_silence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = VoiceConfig(vad=VADConfig(smart_turn=str(tmp_path / "nope.onnx")))
    async with httpx.AsyncClient() as http:
        providers = await open_providers(config, http, tmp_path)
    assert providers.smart_turn is None
    assert f"voice.vad.smart_turn: {tmp_path / 'nope.onnx'}: no such file" in caplog.text
    assert "turns end after end_of_turn of silence meanwhile" in caplog.text
