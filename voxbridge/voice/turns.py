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
silence. With ``words`` (a transcriber: the session's STT), what was said is transcribed too,
and a turn the model calls finished whose words plainly go on (:func:`.unfinished.goes_on`: "I
would like a table for") waits the same way; the transcript goes with the utterance, so the
turn is not transcribed twice.

Frames wait while the model thinks, so the decision still falls at the same sample. Given a
``nursery``, the questions are asked ahead, in the background, so that their answers are at hand
when the pause is reached: the transcript ``WORDS_AHEAD`` of it (what was said so far,
followed by the silence it would end with), the model ``AHEAD`` of it; speech again
before the pause makes them moot. Without one, they are asked at the pause.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar, cast

import numpy as np
import trio

from ..config.model import VADConfig
from .audio import RATE, samples, to_float
from .smart_turn import SmartTurn
from .unfinished import SoFar
from .vad import VAD

__all__ = [
    "AHEAD",
    "COMPLETE",
    "PREROLL",
    "WORDS_AHEAD",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "Transcribe",
    "TurnDetector",
    "Utterance",
]

PREROLL = 0.3  # seconds of audio kept from before the onset
COMPLETE = 0.5  # Smart Turn's probability above which an utterance is finished (pipecat's)
AHEAD = 0.064  # s: Smart Turn is asked this much before the pause (it takes 20-80 ms here)
WORDS_AHEAD = 0.12  # s: and the transcript (Whisper tiny.en: 80-150 ms here)
_HYSTERESIS = 0.15  # speech continues until the probability falls this far below the threshold

Transcribe = Callable[[bytes], Awaitable[SoFar | None]]
"""The words in 16 kHz ``s16le`` audio; None when they cannot be told (the STT failed)."""

T = TypeVar("T")


class _Question(Generic[T]):
    """Something asked ahead of when its answer is needed: at once in ``nursery``, or, without
    one, when the answer is first awaited. :meth:`drop` when it no longer matters."""

    def __init__(self, ask: Callable[[], Awaitable[T]], nursery: trio.Nursery | None) -> None:
        self._ask = ask
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._answer: T | None = None
        self._started = nursery is not None
        if nursery is not None:
            nursery.start_soon(self._run)

    async def _run(self) -> None:
        with self._scope:
            self._answer = await self._ask()
        self._done.set()

    @property
    def pending(self) -> bool:
        """Asked, and not answered yet."""
        return self._started and not self._done.is_set()

    def ready(self) -> T | None:
        """The answer, if it has come (without waiting)."""
        return self._answer if self._done.is_set() else None

    async def answer(self) -> T:
        if not self._started:
            self._started = True
            await self._run()
        await self._done.wait()
        return cast("T", self._answer)  # set: a question is dropped only once it is moot

    def drop(self) -> None:
        self._scope.cancel()


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """A person has been speaking for ``min_speech``; ``at`` is the stream time (seconds) of
    that decision."""

    at: float


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Speech has paused for ``pause`` (the utterance may go on): ``pcm`` is what was said so far,
    ``at`` the stream time (seconds); ``text``, its transcript when it was made already."""

    pcm: bytes
    at: float
    text: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """Speech again after a :class:`SpeechPaused`, in the same utterance."""

    at: float


@dataclass(frozen=True, slots=True)
class Utterance:
    """What a person said: ``pcm`` (16 kHz ``s16le``), ending at stream time ``at``; ``cut``
    when it was cut at ``max_utterance`` rather than ended by silence; ``text``, its transcript
    when it was made already (while deciding whether the turn was over)."""

    pcm: bytes
    at: float
    cut: bool = False
    text: str | None = None

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / RATE


TurnEvent = SpeechStarted | SpeechPaused | SpeechResumed | Utterance


class TurnDetector:
    """Finds utterances in one stream of 16 kHz ``s16le`` audio; with ``smart``, Smart Turn
    judges pauses, and with ``words`` what was said too; ``nursery``: where questions are
    asked ahead (see the module's docstring)."""

    def __init__(
        self,
        vad: VAD,
        config: VADConfig,
        smart: SmartTurn | None = None,
        *,
        words: Transcribe | None = None,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self._vad = vad
        self._config = config
        self._smart = smart
        self._words = words if smart is not None else None  # they judge what it calls finished
        self._nursery = nursery
        self._verdict: _Question[float] | None = None  # Smart Turn's, about this silence
        self._transcript: _Question[SoFar | None] | None = None  # of the speech before it
        self._paused = False  # this pause was told (and Smart Turn asked about it)
        self._window = vad.window
        self._window_s = self._window / RATE
        self._pending = bytearray()
        self._owed = 0  # bytes of zeros counted ahead of their arrival (see push)
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
        self.held = 0
        """Pauses the model called finished whose words went on (they waited)."""

    @property
    def speaking(self) -> bool:
        """Whether an utterance is under way."""
        return self._speaking

    @property
    def thinking(self) -> bool:
        """Whether a question asked ahead is still being answered in the background."""
        return any(q is not None and q.pending for q in (self._verdict, self._transcript))

    async def push(self, pcm: bytes) -> list[TurnEvent]:
        """Take more of the stream; return what it completed."""
        if self._owed:  # the zeros of a window completed ahead (see below) arrive now
            skip = min(self._owed, len(pcm) - len(pcm.lstrip(b"\0")))
            self._owed -= skip
            pcm = pcm[skip:]
            if pcm and self._owed:  # sound came before all of them: owe no more
                pcm = bytes(self._owed % 2) + pcm  # whole samples skipped (it began even)
                self._owed = 0
        self._pending += pcm
        events: list[TurnEvent] = []
        size = 2 * self._window
        while len(self._pending) >= size:
            await self._step(size, events)
        if self._due_in_silence():
            # Digital silence (Discord's, made 20 ms at a time on the clock) that reaches the
            # pause or the end of the turn before the window is whole decides now, not up to a
            # window (32 ms) later: the window is completed with the zeros still to come, and
            # those are taken off the stream as they arrive.
            self._owed = size - len(self._pending)
            self._pending += bytes(self._owed)
            await self._step(size, events)
        return events

    async def _step(self, size: int, events: list[TurnEvent]) -> None:
        """Score the next window and decide what it completes."""
        window = samples(bytes(self._pending[:size]))
        del self._pending[:size]
        # Digital silence (Discord's silence frames, a lost stretch filled in) is no speech:
        # the model is not asked, which saves its time and its slowly fading belief that
        # speech goes on (about 100 ms more before a turn ends, measured).
        p = await self._vad.probability(to_float(window)) if window.any() else 0.0
        events.extend(self._decide(p, window))
        if self._speaking and not self._paused and self._silence > 0:
            if self._nursery is not None and self._smart is not None:
                self._ask_ahead()
            if self._silence + 1e-9 >= self._config.pause:
                events.append(await self._pause())

    def _due_in_silence(self) -> bool:
        """Whether what is pending is digital silence that, with the silence before it,
        reaches the pause (or, paused already, the end of the turn)."""
        if not (self._speaking and self._pending) or self._pending.strip(b"\0"):
            return False
        config = self._config
        due = config.end_of_turn if self._paused else min(config.pause, config.end_of_turn)
        return self._silence + len(self._pending) / 2 / RATE + 1e-9 >= due

    def _ask_ahead(self) -> None:
        """A silence under way: ask what the pause will need, so it is answered by then."""
        pause = self._config.pause
        # Not at once: the gaps between words would each cost a transcription, and those not
        # waited for still hold the STT's threads until they finish.
        words_ahead = self._silence + 1e-9 >= pause - WORDS_AHEAD
        if self._words is not None and self._transcript is None and words_ahead:
            # As it will be heard at the pause: the speech, then silence (Whisper may hear a
            # word in audio that stops dead: "... up to turn the volume up to turn the ...").
            ending = bytes(2 * round(max(0.0, pause - self._silence) * RATE))
            pcm = b"".join(self._speech) + ending
            self._transcript = _Question(partial(self._words, pcm), self._nursery)
        ahead = self._silence + 1e-9 >= pause - AHEAD
        if self._smart is not None and self._verdict is None and ahead:
            pcm = b"".join(self._speech)  # joined only when asked: this runs every window
            self._verdict = _Question(partial(self._smart.complete, pcm), self._nursery)

    async def _pause(self) -> SpeechPaused | Utterance:
        """``pause`` into a silence: finished (Smart Turn says so, and the words do not go on),
        or only paused."""
        self._paused = True
        now, pcm = self._position / RATE, b"".join(self._speech)
        if self._smart is not None:
            if self._verdict is None:
                self._verdict = _Question(partial(self._smart.complete, pcm), None)
            self.complete = await self._verdict.answer()
            if self.complete > COMPLETE:
                said = None
                if self._words is not None:
                    if self._transcript is None:
                        self._transcript = _Question(partial(self._words, pcm), None)
                    said = await self._transcript.answer()
                    if said is not None and said.goes_on:
                        self.held += 1
                        return SpeechPaused(pcm, now, said.text)
                return self._finish(now, cut=False, text=said.text if said is not None else None)
        return SpeechPaused(pcm, now, self._said())

    def _said(self) -> str | None:
        """The transcript of this silence's speech, if it is at hand."""
        said = self._transcript.ready() if self._transcript else None
        return said.text if said is not None else None

    def _forget(self) -> None:
        """The questions about this silence no longer matter (speech again, or the end)."""
        for question in (self._verdict, self._transcript):
            if question is not None:
                question.drop()
        self._verdict = self._transcript = None

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
            self._forget()  # a new silence, new questions
            if self._paused:
                self._paused = False
                events.append(SpeechResumed(now))
        if self._silence + 1e-9 >= config.end_of_turn:
            return [self._finish(now, cut=False, text=self._said())]
        if len(self._speech) * self._window_s + 1e-9 >= config.max_utterance:
            # A microphone stuck open: what there is so far is transcribed; listening goes on.
            events.append(self._finish(now, cut=True))
            self._speaking = True
        return events

    def let_go(self) -> None:
        """What was said so far is no turn (a listener's "mm-hmm", judged in a pause of it): it
        ends here, unreported, and speech after this begins an utterance of its own — "mm-hmm"
        and then "stop, wait" are two, and the second is judged and ended on its own."""
        if self._speaking:
            self._preroll.extend(self._speech[-(self._preroll.maxlen or 1) :])
            self._reset()

    def _finish(self, now: float, *, cut: bool, text: str | None = None) -> Utterance:
        pcm = b"".join(self._speech)
        self._reset()
        return Utterance(pcm, now, cut, text)

    def _reset(self) -> None:
        self._speech, self._voiced, self._silence, self._speaking = [], 0.0, 0.0, False
        self._paused = False
        self._forget()
