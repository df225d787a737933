"""Stand-ins for the voice pipeline's parts, for tests on Trio's mock clock: a VAD that hears
loudness, speech providers with fixed latencies, a scripted brain, a recording channel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from voxbridge.brain import Answer, Message, Ready, ToolUse, Turn
from voxbridge.errors import BrainError
from voxbridge.voice.audio import FRAME_BYTES, RATE
from voxbridge.voice.output import Pacer
from voxbridge.voice.speech import AudioSink, SpeechError


class LoudnessVAD:
    """Speech is whatever is loud: the audio decides, deterministically."""

    window = 512

    async def probability(self, window: np.ndarray) -> float:
        await trio.lowlevel.checkpoint()
        return 1.0 if float(np.abs(window).mean()) > 0.05 else 0.0


def tone(seconds: float, rate: int = RATE) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 220 * t) * 12000).astype("<i2").tobytes()


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(2 * int(seconds * rate))


@dataclass
class FakeSTT:
    """Hears whatever it is told to, after ``delay``; fails if told to."""

    texts: list[str] = field(default_factory=lambda: ["hello"])
    delay: float = 0.2
    fail: bool = False
    name: str = "fake"
    heard: list[int] = field(default_factory=list)  # bytes of each utterance

    async def transcribe(self, pcm: bytes) -> str:
        self.heard.append(len(pcm))
        await trio.sleep(self.delay)
        if self.fail:
            raise SpeechError("the fake recogniser is down")
        return self.texts.pop(0) if len(self.texts) > 1 else self.texts[0]


@dataclass
class FakeTTS:
    """``per_word`` seconds of tone per word, the first piece after ``delay``, then the rest as
    fast as asked (as a server streams)."""

    delay: float = 0.1
    per_word: float = 0.2
    rate: int = RATE
    fail: bool = False
    name: str = "fake"
    spoken: list[str] = field(default_factory=list)

    async def synthesize(self, text: str, sink: AudioSink) -> None:
        self.spoken.append(text)
        await trio.sleep(self.delay)
        if self.fail:
            raise SpeechError("the fake synthesizer is down")
        audio = tone(self.per_word * len(text.split()), self.rate)
        piece = 2 * int(0.1 * self.rate)
        for i in range(0, len(audio), piece):
            await sink(audio[i : i + piece])


@dataclass
class ScriptedBrain:
    """A brain whose answer is ``deltas``, ``gap`` seconds apart (``BrainError`` items fail)."""

    deltas: Sequence[str | ToolUse | BrainError] = ("Hi there. ", "How can I help?")
    gap: float = 0.05
    asked: list[list[Turn]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    cancelled: int = 0

    @asynccontextmanager
    async def __call__(
        self, message: Message, history: Sequence[Turn], *, stored: Ready | None = None
    ) -> AsyncIterator[Answer]:
        self.asked.append(list(history))
        self.messages.append(message)
        send, receive = trio.open_memory_channel[str | ToolUse | BrainError](100)

        async def produce() -> None:
            async with send:
                try:
                    for item in self.deltas:
                        await trio.sleep(self.gap)
                        await send.send(item)
                except trio.Cancelled:
                    self.cancelled += 1
                    raise

        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            try:
                yield Answer(receive, stored)
            except BaseException as exc:  # as think() does: the consumer's error, ungrouped
                failure = exc
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure


@dataclass
class RecordingOutput:
    """A channel that plays at real time (paced) and records what it got, and when."""

    rate: int = RATE
    frames: list[tuple[float, bytes]] = field(default_factory=list)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    pacer: Pacer = field(default_factory=Pacer)

    async def play(self, frame: bytes) -> None:
        await self.pacer.wait()
        self.frames.append((trio.current_time(), frame))

    async def clear(self) -> None:
        self.clears.append(trio.current_time())
        self.pacer.reset()

    async def event(self, event: dict[str, Any]) -> None:
        self.events.append((trio.current_time(), event))

    def types(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    def first(self, kind: str) -> tuple[float, dict[str, Any]]:
        return next((t, e) for t, e in self.events if e["type"] == kind)


async def speak_into(send: trio.MemorySendChannel[bytes], audio: bytes) -> None:
    """Feed ``audio`` in 20 ms frames at real time (a microphone)."""
    for i in range(0, len(audio), FRAME_BYTES):
        await send.send(audio[i : i + FRAME_BYTES])
        await trio.sleep(0.02)
