"""One spoken conversation, as a Trio task tree; channels only feed and drain frames.

    session
    ├── listen        one per speaker: frames → VAD (and Smart Turn, and the words said so
    │   │             far) → turns; an onset while the agent talks pauses it, whoever speaks
    │   └── ask       what a pause will need, asked ahead: Smart Turn, the transcript
    └── converse      one turn per utterance (any speaker's, in order), in a cancel scope of its own
        └── turn      STT → transcript
            ├── think       the brain's stream → deltas (shown) → sentences
            ├── synthesize  each sentence → TTS, while earlier ones play
            ├── play        audio → the channel's rate → 20 ms frames, paced by the channel
            └── judge       (after a pause) were there words in what interrupted?

Speech over the agent pauses its voice at once (``interruptions``). If what was said turns out
to have no words — a cough, "mm-hmm" — within ``interruptions.timeout``, the voice resumes where
the listener stopped hearing it. Otherwise it is a barge-in: the turn's scope is cancelled, so
the LLM request, the TTS request and the playback stop together; the channel is told to drop
what it has queued; the history keeps the answer as far as it was heard, marked cut; what
interrupted is the next turn (its transcript is not made twice). With ``interruptions.resume:
false`` the onset cuts at once; with ``barge_in: false`` speech during the agent's turn is
ignored.
Stages are joined by bounded channels, so a slow stage holds the others back instead of growing
memory; every stage's latency is measured at its edges (``observe``).

With several speakers (a Discord voice channel), each is heard separately and what they said
reaches the brain and the history attributed to them ("Ann: …").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from ..brain import Answer, Message, Think, ToolUse
from ..config.model import VoiceConfig, reveal
from ..errors import BrainError
from ..memory import Conversation, Exchange
from .audio import FRAME_SAMPLES, Resampler
from .backchannels import has_words
from .output import Output
from .playback import Voice
from .sentences import SentenceSplitter, speakable
from .smart_turn import SmartTurn
from .speech import STT, TTS, SpeechError
from .turns import SpeechPaused, SpeechResumed, SpeechStarted, TurnDetector, Utterance
from .unfinished import SoFar
from .vad import VAD

__all__ = ["CANT_ANSWER", "CANT_HEAR", "Speaker", "VoiceSession"]

T = TypeVar("T")
log = logging.getLogger("voxbridge.voice")

CANT_ANSWER = "Sorry, I can't answer right now. Please try again in a moment."
FILLER = "One moment, let me check."
FILLER_AFTER = 1.0  # seconds a tool may keep the answer waiting before the filler is said
CANT_HEAR = "Sorry, I couldn't make that out: my speech recognition is not working."
_SENTENCES = 16  # sentences the brain may run ahead of the voice
_AUDIO = 64  # pieces of synthesized audio the TTS may run ahead of playback


def _nothing(*_: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Speaker:
    """Who is talking; ``attributed``: their words go to the brain as "name: words" (several
    people share the conversation); ``person``: who they are to memory (``discord:<id>``)."""

    user_id: str
    name: str
    attributed: bool = False
    person: str = ""

    def says(self, text: str) -> str:
        return f"{self.name}: {text}" if self.attributed else text


@dataclass(frozen=True, slots=True)
class _Spoken:
    utterance: Utterance
    ended: float
    speaker: Speaker
    text: str | None = None  # transcribed already (while judging an interruption)


class _Judging:
    """An interruption being judged: the agent is paused until what ``speaker`` said so far
    (at their first pause, or their utterance's end) is heard. ``verdict``: ``None`` while
    judging, then ``"backchannel"`` (resumed) or ``"words"`` (barged in)."""

    def __init__(self, speaker: Speaker) -> None:
        self.speaker = speaker
        self.send, self.receive = trio.open_memory_channel[_Spoken | SpeechPaused](1)
        self.verdict: str | None = None
        self.text: str | None = None  # all that was said, when the verdict heard it all
        self.more = False  # they spoke on while it was being transcribed

    def hear(self, said: _Spoken | SpeechPaused) -> None:
        with contextlib.suppress(trio.WouldBlock):  # the first thing heard decides
            self.send.send_nowait(said)


@dataclass
class _Heard:
    """How much of an answer reached the listener: sentences, and seconds of each played."""

    sentences: list[str] = field(default_factory=list)
    own: list[bool] = field(default_factory=list)  # the agent's words (not an apology)
    made: list[float] = field(default_factory=list)  # seconds synthesized, per sentence
    played: list[float] = field(default_factory=list)  # seconds played, per sentence
    complete: bool = False

    def add(self, sentence: str, own: bool = True) -> int:
        self.sentences.append(sentence)
        self.own.append(own)
        self.made.append(0.0)
        self.played.append(0.0)
        return len(self.sentences) - 1

    def text(self) -> str:
        """The answer as far as it was heard: whole sentences, then the words of the one cut
        short in proportion to how much of it played."""
        parts = []
        sentences = zip(self.sentences, self.own, self.made, self.played, strict=True)
        for sentence, own, made, played in sentences:
            if played <= 0:
                break
            if not own:
                continue
            if made > 0 and played + 0.03 < made:
                words = sentence.split()
                parts.append(" ".join(words[: max(1, round(len(words) * played / made))]))
                break
            parts.append(sentence)
        return " ".join(parts)


class _Filler:
    """A few words while a tool keeps the answer waiting: said once per answer, when a tool
    has run for :data:`FILLER_AFTER` with no text yet; not remembered in the history."""

    def __init__(self, out: trio.MemorySendChannel[tuple[str, bool]]) -> None:
        self._out = out
        self.scope = trio.CancelScope()
        self._armed = False

    def heard(self, use: ToolUse, answer: Answer, nursery: trio.Nursery) -> None:
        if use.state == "start" and not self._armed and not answer.text:
            self._armed = True
            nursery.start_soon(self._say, answer)

    async def _say(self, answer: Answer) -> None:
        with self.scope:
            await trio.sleep(FILLER_AFTER)
            if answer.running_tools() and not answer.text:
                await self._out.send((FILLER, False))


class VoiceSession:
    """A spoken conversation with one agent over one channel."""

    def __init__(
        self,
        *,
        config: VoiceConfig,
        stt: STT,
        tts: TTS,
        vad: Callable[[], VAD],
        think: Think,
        output: Output,
        conversation: Conversation | None = None,
        history: Callable[[], int] = lambda: 10,
        session_id: str = "voice",
        speaker: Speaker = Speaker("voice", "voice"),
        observe: Callable[[str, float], None] = _nothing,
        count: Callable[[str, int], None] = _nothing,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
        smart_turn: SmartTurn | None = None,
    ) -> None:
        self.config = config
        self._stt, self._tts, self._new_vad = stt, tts, vad
        self._think = think
        self._out = output
        self.conversation = conversation or Conversation()
        self._history = history
        self._session_id = session_id
        self._speaker = speaker  # of a one-speaker session (run)
        self._utterances, self._heard = trio.open_memory_channel[_Spoken](2)
        self._observe, self._count, self._log = observe, count, logger
        self._smart_turn = smart_turn
        self._turn: trio.CancelScope | None = None
        self._turn_tasks: trio.Nursery | None = None
        self._voice: Voice | None = None  # the agent's voice in the current turn
        self._judging: _Judging | None = None
        self.utterances = 0
        """Utterances heard and taken as turns so far."""
        self._onset: float | None = None  # when the barge-in that cut the turn was heard

    # --- listening -----------------------------------------------------------------------------

    async def run(self, frames: trio.MemoryReceiveChannel[bytes], *, greet: bool = True) -> None:
        """Hold a one-speaker conversation until ``frames`` (16 kHz ``s16le``) ends; greets
        first (when the agent has a greeting and ``greet``)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.converse, greet)
            await self.listen(frames, self._speaker)
            nursery.cancel_scope.cancel()

    async def listen(self, frames: trio.MemoryReceiveChannel[bytes], speaker: Speaker) -> None:
        """Hear one speaker until ``frames`` (16 kHz ``s16le``) ends; several may listen at
        once, each with their own voice activity detection."""
        async with trio.open_nursery() as asking:
            ear = self.ear(speaker, asking)
            async for frame in frames:
                await ear(frame)
            asking.cancel_scope.cancel()

    def ear(
        self, speaker: Speaker, nursery: trio.Nursery | None = None
    ) -> Callable[[bytes], Awaitable[None]]:
        """What hears one speaker: call it with each of their frames (16 kHz ``s16le``), in
        order. For a channel that makes frames in a task of its own: no hop between tasks.
        ``nursery``: where what a pause will need is asked ahead (without one, at the pause)."""
        words = self._so_far if self._judges_words() else None
        detector = TurnDetector(
            self._new_vad(), self.config.vad, self._smart_turn, words=words, nursery=nursery
        )
        over_the_agent = False  # this utterance began while the agent had the turn
        judged: _Judging | None = None  # what the agent made of this utterance, so far

        async def hear(frame: bytes) -> None:
            nonlocal over_the_agent, judged
            if judged is not None and judged.verdict == "backchannel" and detector.speaking:
                # "Mm-hmm" and the agent went on: whatever this person says next is heard,
                # judged and ended on its own, not as more of the backchannel.
                detector.let_go()
                judged = None
            for event in await detector.push(frame):
                judging = self._judging if self._judging is judged else None
                if isinstance(event, SpeechStarted):
                    over_the_agent, judged = self._turn is not None, None
                    if over_the_agent and self.config.barge_in:
                        judged = await self._interrupted(speaker)
                elif isinstance(event, SpeechResumed):
                    if judged is None:
                        pass
                    elif judged.verdict is None:
                        judged.more = True
                    elif judged.verdict == "backchannel" and self._turn is not None:
                        judged = await self._interrupted(speaker)  # more than "mm-hmm"?
                    else:
                        judged = None  # words, and more of them: the utterance is the turn
                elif isinstance(event, SpeechPaused):
                    if judging is not None:
                        judging.hear(event)  # what was said so far decides
                elif over_the_agent and not self.config.barge_in:
                    self._count("voice_ignored", 1)  # spoken over the agent: not a turn
                elif judging is not None:
                    judging.hear(_Spoken(event, trio.current_time(), speaker, event.text))
                elif judged is not None and judged.verdict == "backchannel":
                    pass  # "mm-hmm" said, the agent went on: no turn
                else:
                    text = event.text  # transcribed while the pause was judged
                    if judged is not None and judged.text is not None:
                        text = judged.text  # heard it all already
                    self._take(_Spoken(event, trio.current_time(), speaker, text))

        return hear

    def _judges_words(self) -> bool:
        """Whether pauses are judged by their words too (``vad.words``; by default, when the STT
        is Whisper in this process — it says which words it is sure of, and asking it costs
        no request — and the language is English)."""
        if self.config.vad.words is not None:
            return self.config.vad.words
        language = self.config.stt.language
        english = language is None or language.lower().startswith("en")
        return english and getattr(self._stt, "so_far", None) is not None

    async def _words(self, pcm: bytes) -> str | None:
        """What was said in ``pcm``."""
        text = await self._bounded(self._stt.transcribe, pcm)
        return text.strip() if text is not None else None

    async def _so_far(self, pcm: bytes) -> SoFar | None:
        """What was said so far, for the turn detector: with the words the STT is sure of when
        it tells (Whisper: :func:`.whisper_stt.so_far`)."""
        so_far = getattr(self._stt, "so_far", None)
        if so_far is None:
            text = await self._words(pcm)
            return SoFar(text) if text is not None else None
        said: tuple[str, str] | None = await self._bounded(so_far, pcm)
        return SoFar(said[0].strip(), said[1].strip()) if said is not None else None

    async def _bounded(self, transcribe: Callable[[bytes], Awaitable[T]], pcm: bytes) -> T | None:
        """``transcribe(pcm)``; None when the STT failed (the turn will try again, and say what
        failed)."""
        try:
            with trio.fail_after(self.config.stt.timeout):
                return await transcribe(pcm)
        except (SpeechError, trio.TooSlowError):
            return None

    def _take(self, spoken: _Spoken) -> None:
        """``spoken`` is a turn (after the ones waiting)."""
        try:
            self._utterances.send_nowait(spoken)
            self.utterances += 1
        except trio.WouldBlock:
            self._count("voice_ignored", 1)

    async def _interrupted(self, speaker: Speaker) -> _Judging | None:
        """Someone began to speak over the agent: pause it, and judge what they say (returned);
        or, when told not to wait for words, barge in at once."""
        assert self._voice is not None
        self._onset = trio.current_time()
        if not self.config.interruptions.resume or self._turn_tasks is None:
            await self._barge_in()
            return None
        if self._judging is not None:
            return None  # paused already; the first speaker's words decide
        self._judging = judging = _Judging(speaker)
        self._count("voice_pauses", 1)
        await self._voice.pause()
        self._observe("voice_barge_in", trio.current_time() - self._onset)
        self._onset = None  # measured: the voice stopped
        self._turn_tasks.start_soon(self._judge, judging)
        return judging

    async def _judge(self, judging: _Judging) -> None:
        """Resume the paused voice if what interrupted has no words (a cough, "mm-hmm") —
        heard at the speaker's first pause, or when their utterance ended — within
        ``interruptions.timeout``; else barge in (an utterance heard whole is the next turn)."""
        config = self.config.interruptions
        said: _Spoken | SpeechPaused | None = None
        text: str | None = None
        with trio.move_on_after(config.timeout) as waited:
            while True:
                said = await judging.receive.receive()
                judging.more = False
                text = said.text  # the turn detector's, when it made one
                if text is None:
                    pcm = said.utterance.pcm if isinstance(said, _Spoken) else said.pcm
                    text = await self._words(pcm)
                if not (judging.more and text and not has_words(text, config.backchannels)):
                    break
                # "Yeah..." so far, and they spoke on: what follows decides.
        self._judging = None
        if not (waited.cancelled_caught or judging.more):
            judging.text = text  # all they said, unless they spoke on
        if said is None:
            with contextlib.suppress(trio.WouldBlock):
                said = judging.receive.receive_nowait()  # it came as time ran out
        if said is not None and text is not None and not has_words(text, config.backchannels):
            judging.verdict = "backchannel"
            self._count("voice_backchannels", 1)
            assert self._voice is not None
            await self._voice.resume()
            return
        # Words, or still speaking when time ran out: the person has the floor.
        judging.verdict = "words"
        if isinstance(said, _Spoken):
            self._take(dataclasses.replace(said, text=text))
        await self._barge_in()

    async def _barge_in(self) -> None:
        assert self._turn is not None
        self._turn.cancel()
        self._count("voice_barge_ins", 1)
        await self._out.clear()
        await self._out.event({"type": "interrupted"})

    # --- turns ---------------------------------------------------------------------------------

    async def converse(self, greet: bool = True) -> None:
        """Take the turns that listening hears, one at a time, until cancelled; greets first
        (when the agent has a greeting and ``greet``)."""
        warm = getattr(self._stt, "warm", None)
        async with trio.open_nursery() as nursery:
            if warm is not None:
                nursery.start_soon(warm)  # while the person starts talking
            greeting = reveal(self.config.greeting) if self.config.greeting and greet else ""
            if greeting:
                async with self._turn_scope():
                    await self._say(None, greeting, trio.current_time())
            async for heard in self._heard:
                async with self._turn_scope():
                    await self._turn_for(heard)

    @contextlib.asynccontextmanager
    async def _turn_scope(self) -> AsyncIterator[trio.CancelScope]:
        """The agent's turn: thinking and speaking, cancelled as one by a barge-in; judging
        an interruption happens inside it too."""
        self._onset = None
        with trio.CancelScope() as scope:
            self._turn, self._voice = scope, Voice(self._out)
            try:
                async with trio.open_nursery() as tasks:
                    self._turn_tasks = tasks
                    yield scope
            finally:
                self._turn = self._voice = self._turn_tasks = None

    async def _turn_for(self, heard: _Spoken) -> None:
        utterance, ended, speaker = heard.utterance, heard.ended, heard.speaker
        self._count("voice_turns", 1)
        try:
            with trio.fail_after(self.config.stt.timeout):
                text = heard.text
                if text is None:
                    text = (await self._stt.transcribe(utterance.pcm)).strip()
        except (SpeechError, trio.TooSlowError) as exc:
            why = str(exc) or f"no answer within {self.config.stt.timeout:g}s"
            await self._failed(f"speech recognition ({self._stt.name}) failed: {why}")
            await self._say(None, CANT_HEAR, ended, record=False)
            return
        self._observe("voice_stt", trio.current_time() - ended)
        if not text:
            return  # a noise: nothing to answer
        transcript = {"type": "transcript", "text": text, "final": True}
        if speaker.attributed:
            transcript["speaker"] = speaker.name
        await self._out.event(transcript)
        await self._say(speaker.says(text), None, ended, speaker)

    async def _failed(self, message: str) -> None:
        self._count("voice_errors", 1)
        self._log.error("❌ %s", message)
        await self._out.event({"type": "error", "message": message})

    async def _say(
        self,
        question: str | None,
        fixed: str | None,
        ended: float,
        speaker: Speaker | None = None,
        *,
        record: bool = True,
    ) -> None:
        """Answer ``question`` through the brain, or speak ``fixed``; either way as it comes.
        The history records what was heard (when ``record``)."""
        heard = _Heard()
        exchange: Exchange | None = None
        if question is not None:
            who = speaker or self._speaker
            exchange = self.conversation.ask(question, person=who.person, name=who.name)
        sentences_send, sentences = trio.open_memory_channel[tuple[str, bool]](_SENTENCES)
        audio_send, audio = trio.open_memory_channel[tuple[int, bytes]](_AUDIO)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, exchange, fixed, speaker, sentences_send)
                nursery.start_soon(self._synthesize, sentences, audio_send, heard)
                nursery.start_soon(self._play, audio, heard, ended, question is not None)
            heard.complete = True
            await self._out.event({"type": "done"})
        finally:
            said = heard.text()
            if exchange is not None:
                exchange.answered(said, cut=not heard.complete)
            elif record:
                self.conversation.spoke(said, cut=not heard.complete)

    async def _write(
        self,
        exchange: Exchange | None,
        fixed: str | None,
        speaker: Speaker | None,
        out: trio.MemorySendChannel[tuple[str, bool]],
    ) -> None:
        """The words to speak, sentence by sentence: the brain's answer, or ``fixed``; each
        with whether it is the agent's own (an apology is not, and is not remembered)."""
        async with out:
            if exchange is None:
                await out.send((fixed or "", True))
                return
            started = trio.current_time()
            first = True
            splitter = SentenceSplitter()
            who = speaker or self._speaker
            message = Message(
                self._session_id, who.user_id, who.name, exchange.question, person=who.person
            )
            turns = exchange.context(self._history())
            filler = _Filler(out)
            failure: BrainError | None = None
            try:
                async with (
                    self._think(message, turns, stored=exchange.stored) as answer,
                    trio.open_nursery() as nursery,
                ):
                    try:
                        async for delta in answer.events():
                            if isinstance(delta, ToolUse):
                                filler.heard(delta, answer, nursery)
                                await self._out.event(
                                    {"type": "tool", "name": delta.name, "state": delta.state}
                                )
                                continue
                            filler.scope.cancel()
                            if first:
                                self._observe("voice_think", trio.current_time() - started)
                                first = False
                            await self._out.event({"type": "delta", "text": delta})
                            for sentence in splitter.feed(delta):
                                await out.send((sentence, True))
                    except BrainError as exc:  # raised below, outside the nursery: not a group
                        failure = exc
                    filler.scope.cancel()
                if failure is not None:
                    raise failure
            except BrainError as exc:
                await self._failed(str(exc))
                rest = splitter.flush()
                if rest:
                    await out.send((rest, True))
                await out.send((CANT_ANSWER, False))
                return
            rest = splitter.flush()
            if rest:
                await out.send((rest, True))

    async def _synthesize(
        self,
        sentences: trio.MemoryReceiveChannel[tuple[str, bool]],
        audio: trio.MemorySendChannel[tuple[int, bytes]],
        heard: _Heard,
    ) -> None:
        async with audio:
            async for sentence, own in sentences:
                spoken = speakable(sentence)
                if not spoken:
                    continue
                try:
                    await self._synthesize_one(spoken, heard.add(sentence, own), audio, heard)
                except SpeechError as exc:
                    await self._failed(f"speech synthesis ({self._tts.name}) failed: {exc}")
                    return  # the text was shown; there is no voice to speak it with

    async def _synthesize_one(
        self,
        text: str,
        index: int,
        audio: trio.MemorySendChannel[tuple[int, bytes]],
        heard: _Heard,
    ) -> None:
        asked = trio.current_time()
        first = True

        async def sink(pcm: bytes) -> None:
            nonlocal first
            if first:
                self._observe("voice_tts", trio.current_time() - asked)
                first = False
            heard.made[index] += len(pcm) / 2 / self._tts.rate
            await audio.send((index, pcm))

        await self._tts.synthesize(text, sink)

    async def _play(
        self,
        audio: trio.MemoryReceiveChannel[tuple[int, bytes]],
        heard: _Heard,
        ended: float,
        answering: bool,
    ) -> None:
        """Play what the TTS made; ``answering``: it answers speech that ended at ``ended``
        (the latency that matters most is measured from there)."""
        assert self._voice is not None
        voice = self._voice
        resample = Resampler(self._tts.rate, self._out.rate)
        frame_bytes = 2 * FRAME_SAMPLES * self._out.rate // 16_000
        pending = bytearray()
        index = 0
        first = True

        def played(index: int, seconds: float) -> Callable[[int], None]:
            def count(sign: int) -> None:
                heard.played[index] += sign * seconds

            return count

        try:
            async for index, pcm in audio:
                pending += resample(pcm)
                while len(pending) >= frame_bytes:
                    frame = bytes(pending[:frame_bytes])
                    del pending[:frame_bytes]
                    await voice.play(frame, played(index, frame_bytes / 2 / self._out.rate))
                    if first and answering:
                        self._observe("voice_first_audio", trio.current_time() - ended)
                    first = False
            pending += resample(b"", last=True)
            if pending:
                last = played(index, len(pending) / 2 / self._out.rate)
                await voice.play(bytes(pending).ljust(frame_bytes, b"\0"), last)
            await voice.drain()  # a pause near the end: the listener hears the end too
        finally:
            if self._onset is not None:
                self._observe("voice_barge_in", trio.current_time() - self._onset)
