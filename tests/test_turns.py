"""Turn-taking on a stream: onsets, utterances, short noises, pauses, a microphone stuck open.

The VAD here scores by loudness (so the audio decides, deterministically); the real Silero model
is exercised in the voice pipeline tests with espeak-ng speech."""

from __future__ import annotations

import numpy as np

from tests.voice_fakes import LoudnessVAD, silence, tone
from voxbridge.config.model import VADConfig
from voxbridge.voice.audio import FRAME_SAMPLES, RATE
from voxbridge.voice.turns import (
    PREROLL,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnDetector,
    TurnEvent,
    Utterance,
)


async def feed(
    detector: TurnDetector, audio: bytes, step: int = 2 * FRAME_SAMPLES, *, pauses: bool = False
) -> list[TurnEvent]:
    """Push ``audio`` in 20 ms frames (or ``step`` bytes), as a channel would; the pauses inside
    an utterance only when asked for."""
    events = []
    for i in range(0, len(audio), step):
        events += await detector.push(audio[i : i + step])
    if not pauses:
        events = [e for e in events if not isinstance(e, SpeechPaused | SpeechResumed)]
    return events


CONFIG = VADConfig(threshold=0.5, min_speech=0.25, end_of_turn=0.6, max_utterance=5.0)


async def test_an_utterance_starts_after_min_speech_and_ends_after_end_of_turn() -> None:
    detector = TurnDetector(LoudnessVAD(), CONFIG)
    events = await feed(detector, silence(1.0) + tone(1.5) + silence(1.0))
    started, utterance = events
    assert isinstance(started, SpeechStarted) and isinstance(utterance, Utterance)
    assert 1.25 - 0.033 <= started.at <= 1.25 + 0.033  # onset: after 250 ms of speech
    assert 2.5 + 0.6 <= utterance.at <= 2.5 + 0.6 + 0.033  # 600 ms of silence later
    # The whole speech is in it, with some of the silence before (the pre-roll) and after.
    assert 1.5 + 0.6 <= utterance.duration <= 1.5 + 0.6 + PREROLL + 0.07
    assert not utterance.cut and not detector.speaking


async def test_short_noises_and_short_pauses() -> None:
    detector = TurnDetector(LoudnessVAD(), CONFIG)
    # A 100 ms click is not speech; a 300 ms pause inside a sentence does not end it.
    audio = tone(0.1) + silence(1.0) + tone(0.8) + silence(0.3) + tone(0.8) + silence(1.0)
    events = await feed(detector, audio)
    assert [type(e) for e in events] == [SpeechStarted, Utterance]
    assert events[1].duration >= 1.9  # type: ignore[union-attr]


async def test_a_pause_inside_an_utterance_is_told_with_what_was_said_so_far() -> None:
    detector = TurnDetector(LoudnessVAD(), CONFIG)  # pause: 200 ms
    audio = tone(0.5) + silence(0.4) + tone(0.5) + silence(1.0)
    started, paused, resumed, second, utterance = await feed(detector, audio, pauses=True)
    assert isinstance(started, SpeechStarted) and isinstance(utterance, Utterance)
    assert isinstance(paused, SpeechPaused) and isinstance(second, SpeechPaused)
    assert isinstance(resumed, SpeechResumed)
    assert 0.5 + 0.2 <= paused.at <= 0.5 + 0.2 + 0.033
    assert 0.5 + 0.2 <= len(paused.pcm) / 2 / RATE <= 0.5 + 0.2 + 0.033  # the speech so far
    assert 0.9 <= resumed.at <= 0.9 + 0.033
    assert len(utterance.pcm) > len(second.pcm) > len(paused.pcm)


async def test_a_microphone_stuck_open_is_cut_and_memory_stays_bounded() -> None:
    detector = TurnDetector(LoudnessVAD(), CONFIG)
    events = await feed(detector, tone(16.0))  # sixteen seconds of "speech", never a pause
    cuts = [e for e in events if isinstance(e, Utterance)]
    assert len(cuts) == 3 and all(u.cut for u in cuts)
    assert all(u.duration <= CONFIG.max_utterance + 0.04 for u in cuts)
    assert detector.speaking  # still listening: the rest becomes the next utterance
    assert sum(len(b) for b in detector._speech) <= 2 * RATE * CONFIG.max_utterance
    (last,) = await feed(detector, silence(1.0))
    assert isinstance(last, Utterance) and not last.cut


async def test_frames_of_any_size_give_the_same_turns() -> None:
    audio = silence(0.5) + tone(1.0) + silence(1.0) + tone(0.7) + silence(1.0)
    whole = await TurnDetector(LoudnessVAD(), CONFIG).push(audio)
    framed = await feed(TurnDetector(LoudnessVAD(), CONFIG), audio, pauses=True)
    odd_events = await feed(TurnDetector(LoudnessVAD(), CONFIG), audio, step=333, pauses=True)
    assert whole == framed == odd_events
    assert [type(e) for e in whole] == [SpeechStarted, SpeechPaused, Utterance] * 2


class _LingeringVAD(LoudnessVAD):
    """A model that, like Silero, goes on believing in speech for a while after it stops."""

    def __init__(self) -> None:
        self.asked = 0
        self._linger = 0

    async def probability(self, window: np.ndarray) -> float:
        self.asked += 1
        loud = await super().probability(window)
        self._linger = 4 if loud else max(0, self._linger - 1)
        return 1.0 if loud or self._linger else 0.0


async def test_digital_silence_is_no_speech_without_asking_the_model() -> None:
    """Discord's silence frames and filled-in gaps are exact zeros: no model time, and the turn
    ends end_of_turn after the speech, not after the model's fading belief."""
    vad = _LingeringVAD()
    events = await feed(TurnDetector(vad, CONFIG), tone(1.0) + bytes(2 * RATE))
    _, utterance = events
    assert isinstance(utterance, Utterance)
    # Counted from the sample where the zeros begin, mid-window: not a window late.
    assert utterance.at == 1.0 + 0.6
    assert vad.asked == round(1.0 * RATE / 512 + 0.5)  # only the tone's windows
    # The same silence as faint noise: the model is asked, and its lingering delays the end.
    noise = (np.random.default_rng(1).normal(0, 30, 2 * RATE)).astype("<i2").tobytes()
    lingering = _LingeringVAD()
    _, late = await feed(TurnDetector(lingering, CONFIG), tone(1.0) + noise)
    assert isinstance(late, Utterance) and late.at >= utterance.at + 0.09  # 3 windows


async def test_digital_silence_ends_a_turn_on_the_frame_it_is_due_not_the_window() -> None:
    """Discord's silence comes 20 ms at a time on the clock: the turn ends with the frame that
    completes end_of_turn, not with the 32 ms window after it (up to 12 ms later)."""
    detector = TurnDetector(LoudnessVAD(), CONFIG)
    audio, frame = tone(0.97) + silence(1.0), 2 * FRAME_SAMPLES
    heard_at = None
    for i in range(0, len(audio), frame):
        if any(isinstance(e, Utterance) for e in await detector.push(audio[i : i + frame])):
            heard_at = (i + frame) / 2 / RATE
            break
    # Due at 0.97 + 0.6 = 1.57 s: the frame that ends at 1.58 s (the window ends at 1.600).
    assert heard_at == 1.58
    # The zeros counted ahead are taken off the stream as they come: what follows keeps its
    # time (an onset after the silence is where it was).
    events = await feed(detector, audio[i + frame :] + tone(1.0))
    (started,) = [e for e in events if isinstance(e, SpeechStarted)]
    assert abs(started.at - (1.97 + 0.25)) <= 0.033
