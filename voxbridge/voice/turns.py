"""Turn-taking: which stretches of a stream are a person's utterances.

Frames go in; out come :class:`SpeechStarted` (speech has lasted ``min_speech``: a barge-in can
act on it), :class:`SpeechPaused` (``pause`` of silence inside it: what was said so far can be
judged — a listener's "mm-hmm" is over by then) and :class:`SpeechResumed` (speech again after
such a pause, the same utterance), and :class:`Utterance` (``end_of_turn`` of silence has
followed it, or it reached ``max_utterance`` — a microphone stuck open — and was cut). Time is
counted in samples of the stream itself, not by any clock, so the same audio always gives the
same turns; a little audio before the onset is kept so the first syllable is not clipped.
Memory is bounded by ``max_utterance``.

With Smart Turn (``smart_turn``), at that pause the model is asked whether the person finished:
if so the utterance ends there; if not, it waits for more speech, at most ``end_of_turn`` of
silence. Frames wait while the model thinks, so the decision still falls at
the same sample.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..config.model import VADConfig
from .audio import RATE, samples, to_float
from .smart_turn import SmartTurn
from .vad import VAD

__all__ = [
    "COMPLETE",
    "PREROLL",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "TurnDetector",
    "Utterance",
]

PREROLL = 0.3  # seconds of audio kept from before the onset
COMPLETE = 0.5  # Smart Turn's probability above which an utterance is finished (pipecat's)
_HYSTERESIS = 0.15  # speech continues until the probability falls this far below the threshold


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """A person has been speaking for ``min_speech``; ``at`` is the stream time (seconds) of
    that decision."""

    at: float


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Speech has paused for ``pause`` (the utterance may go on): ``pcm`` is what was said so far,
    ``at`` the stream time (seconds)."""

    pcm: bytes
    at: float


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech again after a :class:`SpeechPaused`, in the same utterance."""

    at: float


@dataclass(frozen=True, slots=True)
class Utterance:
    """What a person said: ``pcm`` (16 kHz ``s16le``), ending at stream time ``at``; ``cut``
    when it was cut at ``max_utterance`` rather than ended by silence."""

    pcm: bytes
    at: float
    cut: bool = False

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / RATE


TurnEvent = SpeechStarted | SpeechPaused | SpeechResumed | Utterance


class TurnDetector:
    """Finds utterances in one stream of 16 kHz ``s16le`` audio."""

    def __init__(self, vad: VAD, config: VADConfig, smart: SmartTurn | None = None) -> None:
        self._vad = vad
        self._config = config
        self._smart = smart
        self._paused = False  # this pause was told (and Smart Turn asked about it)
        self._window = vad.window
        self._window_s = self._window / RATE
        self._pending = bytearray()
        self._preroll: deque[bytes] = deque(maxlen=max(1, round(PREROLL / self._window_s)))
        self._speech: list[bytes] = []
        self._voiced = 0.0  # seconds of speech before the onset is decided
        self._silence = 0.0  # seconds of silence since the last speech, while speaking
        self._speaking = False
        self._position = 0  # samples scored so far
        self.probability = 0.0
        """The last window's speech probability."""
        self.complete: float | None = None
        """Smart Turn's last answer about this stream (probability that it was finished)."""

    @property
    def speaking(self) -> bool:
        """Whether an utterance is under way."""
        return self._speaking

    async def push(self, pcm: bytes) -> list[TurnEvent]:
        """Take more of the stream; return what it completed."""
        self._pending += pcm
        events: list[TurnEvent] = []
        size = 2 * self._window
        while len(self._pending) >= size:
            window = samples(bytes(self._pending[:size]))
            del self._pending[:size]
            # Digital silence (Discord's silence frames, a lost stretch filled in) is no speech:
            # the model is not asked, which saves its time and its slowly fading belief that
            # speech goes on (about 100 ms more before a turn ends, measured).
            p = await self._vad.probability(to_float(window)) if window.any() else 0.0
            events.extend(self._decide(p, window))
            if self._speaking and not self._paused and self._silence + 1e-9 >= self._config.pause:
                events.append(await self._pause())
        return events

    async def _pause(self) -> SpeechPaused | Utterance:
        """``pause`` into a silence: finished (Smart Turn says so), or only paused."""
        self._paused = True
        now, pcm = self._position / RATE, b"".join(self._speech)
        if self._smart is not None:
            self.complete = await self._smart.complete(pcm)
            if self.complete > COMPLETE:
                return self._finish(now, cut=False)
        return SpeechPaused(pcm, now)

    def _decide(self, p: float, window: np.ndarray) -> list[TurnEvent]:
        self.probability = p
        self._position += self._window
        now = self._position / RATE
        chunk = window.tobytes()
        config = self._config
        if not self._speaking:
            if p >= config.threshold:
                self._voiced += self._window_s
                self._speech.append(chunk)
                if self._voiced + 1e-9 >= config.min_speech:
                    self._speaking, self._silence = True, 0.0
                    self._speech = [*self._preroll, *self._speech]
                    self._preroll.clear()
                    return [SpeechStarted(now)]
            else:
                # Too short to be speech (a click, a cough): back into the pre-roll.
                self._preroll.extend([*self._speech, chunk])
                self._speech, self._voiced = [], 0.0
            return []
        self._speech.append(chunk)
        events: list[TurnEvent] = []
        if p < config.threshold - _HYSTERESIS:
            self._silence += self._window_s
        else:
            # Speech, unless it ends in digital silence (where Discord's silence frames begin):
            # that much of the silence is counted already, not from the next window on.
            voiced = np.flatnonzero(window)
            self._silence = (len(window) - 1 - int(voiced[-1])) / RATE if voiced.size else 0.0
            if self._paused:  # a new pause will be a new question
                self._paused = False
                events.append(SpeechResumed(now))
        if self._silence + 1e-9 >= config.end_of_turn:
            return [self._finish(now, cut=False)]
        if len(self._speech) * self._window_s + 1e-9 >= config.max_utterance:
            # A microphone stuck open: what there is so far is transcribed; listening goes on.
            events.append(self._finish(now, cut=True))
            self._speaking = True
        return events

    def _finish(self, now: float, *, cut: bool) -> Utterance:
        pcm = b"".join(self._speech)
        self._speech, self._voiced, self._silence, self._speaking = [], 0.0, 0.0, False
        self._paused = False
        return Utterance(pcm, now, cut)
