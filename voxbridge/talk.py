"""``voxbridge talk AGENT --in question.wav [--out answer.wav]``: the whole voice pipeline on a
file — VAD, STT, the agent's brain, TTS — printing the transcript, the answer and each stage's
latency. It checks a provider setup end to end (a speech server's URL, a key) without a browser
or a voice channel, and runs in CI.
"""

from __future__ import annotations

import functools
import getpass
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from .config.model import Agent
from .errors import UsageError, VoxbridgeError
from .memory import Location
from .terminal import SETTLE, find_agent, local_memory, local_think
from .tools.local import open_toolbox
from .voice.audio import RATE, Resampler, read_wav, wav_bytes
from .voice.providers import open_providers
from .voice.session import Speaker, VoiceSession

__all__ = ["run_talk"]

_STAGES = (
    ("voice_stt", "speech to text (end of speech → transcript)"),
    ("voice_think", "brain (transcript → first words)"),
    ("voice_tts", "text to speech (a sentence → its first audio)"),
    ("voice_first_audio", "end of speech → first audio"),
)


class _FileOutput:
    """Keeps the answer's audio; prints what happens as it happens."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.frames: list[bytes] = []
        self.answer: list[str] = []
        self.transcript = ""
        self.errors: list[str] = []
        self.done = trio.Event()

    async def play(self, frame: bytes) -> None:
        self.frames.append(frame)
        await trio.lowlevel.checkpoint()

    async def clear(self) -> None:
        self.frames.clear()

    async def event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "transcript":
            self.transcript = event["text"]
            print(f"🎤 heard:  {event['text']}", flush=True)
        elif kind == "delta":
            self.answer.append(event["text"])
        elif kind == "tool" and event["state"] != "done":
            print(
                f"🔧 {event['name']}{'…' if event['state'] == 'start' else ' failed'}", flush=True
            )
        elif kind == "error":
            self.errors.append(event["message"])
            print(f"❌ {event['message']}", file=sys.stderr, flush=True)
        elif kind == "done":
            self.done.set()
        await trio.lowlevel.checkpoint()


async def _talk(
    agent: Agent, question: bytes, name: str, location: Location | None, models: Path
) -> tuple[_FileOutput, dict[str, list[float]]]:
    voice = agent.voice
    assert voice is not None
    seen: dict[str, list[float]] = {}
    user = getpass.getuser()
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as http:
        # Before any task starts: a provider that cannot be had is one error, not a group.
        providers = await open_providers(voice, http, models)
        async with open_toolbox(agent, http) as tools, trio.open_nursery() as outer:
            memory = local_memory(agent, location, http)
            await outer.start(memory.run)
            await memory.ready()
            own = memory.of(agent.id)
            output = _FileOutput(providers.tts.rate)
            session = VoiceSession(
                config=voice,
                stt=providers.stt,
                tts=providers.tts,
                vad=providers.vad,
                think=local_think(agent, http, own, tools),
                output=output,
                conversation=await own.conversation(f"terminal:{name}"),
                history=lambda: agent.history,
                session_id=f"terminal:{name}",
                speaker=Speaker(user, user, person=f"terminal:{user}"),
                observe=lambda name, s: seen.setdefault(name, []).append(s),
                smart_turn=providers.smart_turn,
            )
            send, frames = trio.open_memory_channel[bytes](0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(session.run, frames, greet=False))
                # The question, then enough silence to end the turn; then wait for the answer.
                tail = bytes(2 * int(RATE * (voice.vad.end_of_turn + 0.3)))
                audio = question + tail
                for i in range(0, len(audio), 640):
                    await send.send(audio[i : i + 640])
                if session.utterances:  # else: nothing to answer
                    with trio.move_on_after(voice.stt.timeout + voice.tts.timeout + 120):
                        await output.done.wait()
                nursery.cancel_scope.cancel()
            with trio.move_on_after(SETTLE):
                await memory.settle()
            outer.cancel_scope.cancel()
    return output, seen


def _report(output: _FileOutput, seen: dict[str, list[float]], out: Path | None) -> int:
    if not output.transcript and not output.errors:
        raise VoxbridgeError("no speech found in the file: is it silent, or very quiet?")
    answer = "".join(output.answer).strip()
    failed = f"{'; then ' if answer else ''}failed: {output.errors[0]}" if output.errors else ""
    print(f"💬 answer: {answer}{failed}")
    spoken = b"".join(output.frames)
    what = " (an apology for what failed)" if output.errors else ""
    print(f"🔊 spoken: {len(spoken) / 2 / output.rate:.2f} s at {output.rate} Hz{what}")
    for name, label in _STAGES:
        if seen.get(name):
            values = ", ".join(f"{1000 * v:.0f}" for v in seen[name])
            print(f"⏱  {label}: {values} ms")
    if out is not None:
        out.write_bytes(wav_bytes(spoken, output.rate))
        print(f"✓ {out}{what}")
    return 1 if output.errors else 0


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot be written before anything runs (not after a minute)."""
    where = out.parent
    if out.is_dir():
        raise UsageError(f"--out {out}: a directory: name a .wav file in it")
    if not where.is_dir():
        raise UsageError(f"--out {out}: no such directory {where}")
    if not os.access(where, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {out}: not writable")


def run_talk(
    agents_dir: Path,
    keys_dir: Path,
    wanted: str,
    question: Path,
    out: Path | None,
    *,
    conversation: str = "default",
    location: Location | None = None,
    state_dir: Path = Path(".voxbridge"),
) -> int:
    """Speak ``question`` to the agent, in the stored conversation ``terminal:<conversation>``
    (the one ``voxbridge chat --conversation`` goes on with); returns the exit code (1: a
    stage failed).

    Raises:
        UsageError: no such agent or file, the agent has no voice section, or ``out`` cannot
            be written.
        AudioError: ``question`` is not a 16-bit PCM WAV at 8 to 48 kHz.
        ConfigError: the agent's file does not load.
        SpeechError: its Whisper model could not be found or downloaded.
    """
    agent = find_agent(agents_dir, keys_dir, wanted)
    if agent.voice is None:
        raise UsageError(
            f"agent '{agent.id}' has no voice: add a voice section to {agent.file} "
            "(voice: {} uses the offline engines)"
        )
    if not question.is_file():
        raise UsageError(f"{question}: no such file")
    if out is not None:
        _check_out(out)
    wav = read_wav(question.read_bytes(), str(question))
    pcm = Resampler(wav.rate, RATE)(wav.pcm, last=True)
    return _report(*trio.run(_talk, agent, pcm, conversation, location, state_dir / "models"), out)
