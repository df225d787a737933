"""Turn-taking on a stream: onsets, utterances, short noises, pauses, a microphone stuck open.

The VAD here scores by loudness (so the audio decides, deterministically); the real Silero model
is exercised in the voice pipeline tests with espeak-ng speech."""

from __future__ import annotations

import numpy as np

from voxbridge.config.model import VADConfig
from voxbridge.voice.audio import FRAME_SAMPLES, RATE
from voxbridge.voice.turns import PREROLL, SpeechStarted, TurnDetector, Utterance


class LoudnessVAD:
    window = 512

    def __init__(self) -> None:
        self.calls = 0

    def probability(self, window: np.ndarray) -> float:
        self.calls += 1
        return 1.0 if float(np.abs(window).mean()) > 0.05 else 0.0


def tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 12000).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * RATE))


def feed(detector: TurnDetector, audio: bytes) -> list[SpeechStarted | Utterance]:
    """Push ``audio`` in 20 ms frames, as a channel would."""
    events = []
    step = 2 * FRAME_SAMPLES
    for i in range(0, len(audio), step):
        events += detector.push(audio[i : i + step])
    return events


CONFIG = VADConfig(threshold=0.5, min_speech=0.25, end_of_turn=0.6, max_utterance=5.0)


def test_an_utterance_starts_after_min_speech_and_ends_after_end_of_turn() -> None:
    detector = TurnDetector(LoudnessVAD(), CONFIG)
    events = feed(detector, silence(1.0) + tone(1.5) + silence(1.0))
    started, utterance = events
    assert isinstance(started, SpeechStarted) and isinstance(utterance, Utterance)
    assert 1.25 - 0.033 <= started.at <= 1.25 + 0.033  # onset: after 250 ms of speech
    assert 2.5 + 0.6 <= utterance.at <= 2.5 + 0.6 + 0.033  # 600 ms of silence later
    # The whole speech is in it, with some of the silence before (the pre-roll) and after.
    assert 1.5 + 0.6 <= utterance.duration <= 1.5 + 0.6 + PREROLL + 0.07
    assert not utterance.cut and not detector.speaking


def test_short_noises_and_short_pauses() -> None:
    detector = TurnDetector(LoudnessVAD(), CONFIG)
    # A 100 ms click is not speech; a 300 ms pause inside a sentence does not end it.
    audio = tone(0.1) + silence(1.0) + tone(0.8) + silence(0.3) + tone(0.8) + silence(1.0)
    events = feed(detector, audio)
    assert [type(e) for e in events] == [SpeechStarted, Utterance]
    assert events[1].duration >= 1.9  # type: ignore[union-attr]


def test_a_microphone_stuck_open_is_cut_and_memory_stays_bounded() -> None:
    detector = TurnDetector(LoudnessVAD(), CONFIG)
    events = feed(detector, tone(16.0))  # sixteen seconds of "speech", never a pause
    cuts = [e for e in events if isinstance(e, Utterance)]
    assert len(cuts) == 3 and all(u.cut for u in cuts)
    assert all(u.duration <= CONFIG.max_utterance + 0.04 for u in cuts)
    assert detector.speaking  # still listening: the rest becomes the next utterance
    assert sum(len(b) for b in detector._speech) <= 2 * RATE * CONFIG.max_utterance
    (last,) = feed(detector, silence(1.0))
    assert isinstance(last, Utterance) and not last.cut


def test_frames_of_any_size_give_the_same_turns() -> None:
    audio = silence(0.5) + tone(1.0) + silence(1.0) + tone(0.7) + silence(1.0)
    whole = TurnDetector(LoudnessVAD(), CONFIG).push(audio)
    framed = feed(TurnDetector(LoudnessVAD(), CONFIG), audio)
    odd = TurnDetector(LoudnessVAD(), CONFIG)
    odd_events = [e for i in range(0, len(audio), 333) for e in odd.push(audio[i : i + 333])]
    assert whole == framed == odd_events
    assert [type(e) for e in whole] == [SpeechStarted, Utterance] * 2
