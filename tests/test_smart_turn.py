"""Smart turn (SPEC §17): the Smart Turn v3 model asked after a short pause whether the person
finished — first its place in the turn detector (a scripted model, deterministic), then the real
model on the labelled set of espeak-ng sentences in tests/turn_set.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.test_turns import feed
from tests.turn_set import evaluate, summary
from tests.voice_fakes import LoudnessVAD, silence, tone
from tests.voice_models import smart_turn
from voxbridge.config.model import VADConfig, VoiceConfig
from voxbridge.voice.audio import RATE
from voxbridge.voice.providers import open_providers
from voxbridge.voice.smart_turn import SmartTurn
from voxbridge.voice.turns import SpeechStarted, TurnDetector, Utterance
from voxbridge.voice.vad import SileroVAD

CONFIG = VADConfig(min_speech=0.25, end_of_turn=2.0, smart_turn=True, pause=0.2)


@dataclass
class ScriptedModel:
    """Answers each question with the next probability; keeps how much audio it was given."""

    answers: list[float]
    asked: list[float] = field(default_factory=list)

    async def complete(self, pcm: bytes) -> float:
        self.asked.append(len(pcm) / 2 / RATE)
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


async def test_on_the_labelled_set_it_waits_out_thinking_pauses_and_ends_finished_ones_fast() -> (
    None
):
    model = SmartTurn(smart_turn())
    silence_only = summary(await evaluate(lambda: TurnDetector(SileroVAD(), VADConfig())))
    smart = await evaluate(lambda: TurnDetector(SileroVAD(), CONFIG, model))
    found = summary(smart)
    # Silence alone (600 ms) cuts every thinking pause (1 s) and waits 600 ms on every finish.
    assert silence_only["false_cutoff_rate"] == 1.0
    assert silence_only["wait_p50"] >= 0.6
    # The model lets most thinking pauses be, and ends most finished sentences well before.
    assert found["false_cutoff_rate"] <= 0.4, [r for r in smart if r.cut]
    assert found["finished_cut_rate"] <= 0.1  # a comma taken for the end, at most
    fast = [r for r in smart if r.finished and r.wait is not None and r.wait < 0.5]
    assert len(fast) >= 0.7 * len([r for r in smart if r.finished])


async def test_a_missing_model_is_reported_and_turns_end_on_silence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = VoiceConfig(vad=VADConfig(smart_turn=str(tmp_path / "nope.onnx")))
    async with httpx.AsyncClient() as http:
        providers = await open_providers(config, http, tmp_path)
    assert providers.smart_turn is None
    assert f"voice.vad.smart_turn: {tmp_path / 'nope.onnx'}: no such file" in caplog.text
    assert "turns end after end_of_turn of silence meanwhile" in caplog.text
