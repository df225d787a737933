"""Benchmark: Discord voice (issue 12) — what a listening speaker costs, and what voxbridge adds
between the end of someone's speech and the first packet of the answer.

``voxbridge run`` is a subprocess whose agent sits in a voice channel of the Discord-compatible
test server (tests/fake_discord.py with its voice gateway, UDP and DAVE), with an OpenAI-compatible
speech server and LLM faked in this process at fixed latencies (STT, LLM first words, TTS first
audio: 50 ms each). A fake person speaks espeak-ng speech into the channel in real time,
Opus-encoded and DAVE- and transport-encrypted as Discord's clients and SFU do.

* rx CPU per speaker: the subprocess's CPU time (user + system, every thread) while people
  talk without pause, less the same time in the call with nobody talking, as % of one core,
  divided by the number talking: four people at once (each starting a few ms after the other,
  as independent clients do), and beside it one person alone. The speech recognizer hears
  nothing ("") so no answer is made: what is left is receiving — UDP, transport decryption, DAVE
  decryption, the jitter buffer, Opus decoding (to 16 kHz), VAD.
* added latency: per turn, the last RTP packet of the question (Discord's five silence frames
  included) → the first RTP packet of the answer, as seen by the fake; less the fakes' 150 ms and
  less the silence the turn detector waits for by design (``end_of_turn`` minus the 80 ms the
  silence frames took to arrive, which count toward it). Beside it, the server's own measure of
  the part after the turn was detected (the ``voice_first_audio`` histogram, less the fakes).

    python bench/discord_voice.py [--turns 20] [--seconds 20] [--speakers 4] [--before REV]

``--before REV`` measures voxbridge at REV (a temporary work tree) the same way, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, free_port, pct, voxbridge, wait_ready
from streaming import checkout
from voice import write_agent

from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.fake_discord import FakeDiscord
from tests.fake_speech import FakeOpenAIAudio
from tests.speech_samples import say
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair

MS = 1000.0
FAKE = 0.05  # each fake's own latency: STT, LLM first words, TTS first audio
END_OF_TURN = 0.6
# Discord's five silence frames after speech count toward end_of_turn. The fake sends each
# packet at the start of its 20 ms (a client, once it is encoded: at the end), so on its clock
# the last one arrives 80 ms after the silence began.
SILENCE_FRAMES = 0.08
GUILD, TEXT, VOICE = 900000000000000001, 900000000000000002, 900000000000000003
BOT, PERSON = 901, 902
SPEAKERS = 4  # talking at once, for the CPU per speaker
FRAME = 640  # 20 ms at 16 kHz
QUESTION = "what is the weather like today"
TALK = [
    "what is the weather like today",
    "and tomorrow morning in the city",
    "tell me about the trains to the coast",
    "is it going to rain on the weekend",
]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _agent(root: Path, llm: FakeLLM, speech: FakeOpenAIAudio) -> None:
    public = generate_key_pair(root / "keys", "bench")
    token = seal("bench-token", public.key, "plugins.discord.bot_token")
    write_agent(
        root,
        llm,
        speech,
        f"  vad: {{end_of_turn: {END_OF_TURN}s}}\n"
        f"plugins:\n  discord:\n    bot_token: {token}\n"
        f"    voice: {{channels: ['{VOICE}']}}\n",
    )


@dataclass(frozen=True)
class Call:
    """How the call runs: ``turns`` questions (``question``), each heard out until the bot has
    sent nothing for ``quiet`` seconds; CPU windows of ``seconds`` with ``speakers`` talking at
    once; ``fake``, each fake's own latency. (Not a shorter end_of_turn: the added latency
    measured changed with it.)"""

    turns: int = 20
    seconds: float = 20.0
    question: str = QUESTION
    quiet: float = 0.5
    fake: float = FAKE
    speakers: int = SPEAKERS


FULL = Call()
QUICK = Call(turns=1, seconds=0.7, question="what is the weather", quiet=0.3, fake=0.01)


async def _quiet(discord: FakeDiscord, seconds: float) -> None:
    """Until the bot has sent nothing for ``seconds``."""
    voice = discord.voice
    while True:
        mark = voice.mark()
        await trio.sleep(seconds)
        if not voice.received(BOT, since=mark):
            return


async def _first_audio_sum(http: httpx.AsyncClient) -> float:
    """The server's own measure: end of turn → first audio out, summed over turns so far."""
    text = (await http.get("/metrics")).text
    found = re.search(r"^voxbridge_voice_first_audio_seconds_sum (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def _talking(discord: FakeDiscord, pid: int, people: list[int], seconds: float) -> float:
    """CPU seconds of ``pid`` per second of speech while ``people`` talk at once, nonstop."""
    talk = b"".join(say(line, pad=0.1) for line in TALK)
    spoken = 0.0
    before = _cpu_seconds(pid)
    while spoken < seconds:  # the talk again and again, the last time cut short
        pcm = talk[: max(FRAME, int((seconds - spoken) * 50) * FRAME)]
        async with trio.open_nursery() as nursery:
            for n, person in enumerate(people):
                nursery.start_soon(_speak_after, discord, person, pcm, 0.007 * n)
        spoken += len(pcm) / 2 / 16_000 + 0.1 + 0.007 * len(people)
    return (_cpu_seconds(pid) - before) / spoken


async def _speak_after(discord: FakeDiscord, person: int, pcm: bytes, delay: float) -> None:
    await trio.sleep(delay)
    await discord.voice.speak(person, pcm)


async def measure(how: Call = FULL, source: Path = ROOT) -> dict[str, float]:
    """The Discord voice keys (see :class:`Call`); voxbridge's code from ``source``."""
    turns, seconds, speakers, fake = how.turns, how.seconds, how.speakers, how.fake
    discord = FakeDiscord()
    discord.add_guild(GUILD, "Guild", [TEXT], voice_channel_ids=[VOICE])
    discord.add_bot("bench-token", user_id=BOT, name="Talker")
    llm = FakeLLM(Plan([{"chunks": ["Sure thing."], "delay": fake}]))
    speech = FakeOpenAIAudio(
        stt=Plan([{"text": QUESTION, "delay": fake}]),
        tts=Plan([{"seconds": 0.3, "delay": fake, "chunk": 4800}]),
    )
    question = say(how.question, pad=0.0)  # a client sends only while its user speaks
    people = [PERSON + n for n in range(speakers)]
    latencies: list[float] = []
    server: list[float] = []  # end of turn (as the turn detector saw it) → first frame out
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with trio.open_nursery() as nursery:
            await nursery.start(discord.serve)
            await start_fake(nursery, llm)
            await start_fake(nursery, speech)  # type: ignore[arg-type]
            _agent(root, llm, speech)
            port = free_port()
            args = ["--discord-api-base", discord.base_url, "--listen", f"127.0.0.1:{port}"]
            args += ["--discord-ca-file", str(discord.voice.ca_file)]
            url = f"http://127.0.0.1:{port}"
            async with (
                voxbridge(root, *args, source=source) as proc,
                httpx.AsyncClient(base_url=url) as http,
            ):
                await wait_ready(url)
                await discord.wait_until(lambda: discord.connected("bench-token"), limit_s=60)
                for person in people:
                    await discord.join_voice(person, VOICE, name=f"Person {person}")
                await discord.voice.wait_for_dave(BOT, limit_s=60)
                for n in range(turns + 1):  # the first warms up
                    before = await _first_audio_sum(http)
                    await discord.voice.speak(PERSON, question)
                    ended = discord.voice.mark()
                    await discord.voice.wait_for_audio(BOT, 0.02, limit_s=30, since=ended)
                    first = discord.voice.first_packet_after(BOT, ended)
                    assert first is not None
                    await _quiet(discord, how.quiet)
                    if n:
                        latencies.append(first.at - ended)
                        server.append(await _first_audio_sum(http) - before)

                speech.stt = Plan([{"text": ""}])  # heard, but nothing to answer
                await _quiet(discord, how.quiet)
                idle_before = _cpu_seconds(proc.pid)
                await trio.sleep(seconds)
                idle = (_cpu_seconds(proc.pid) - idle_before) / seconds
                alone = await _talking(discord, proc.pid, people[:1], seconds)
                together = await _talking(discord, proc.pid, people, seconds)
            nursery.cancel_scope.cancel()
    by_design = END_OF_TURN - SILENCE_FRAMES + 3 * fake
    added = [x - by_design for x in latencies]
    return {
        "discord_voice_rx_cpu_per_speaker_pct": 100 * (together - idle) / speakers,
        "discord_voice_rx_cpu_one_speaker_pct": 100 * (alone - idle),
        "discord_voice_idle_cpu_pct": 100 * idle,
        "discord_voice_added_latency_p50_ms": MS * statistics.median(added),
        "discord_voice_added_latency_p95_ms": MS * pct(added, 95),
        "discord_voice_after_turn_p50_ms": MS * (statistics.median(server) - 3 * fake),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=FULL.turns)
    parser.add_argument("--seconds", type=float, default=FULL.seconds)
    parser.add_argument("--speakers", type=int, default=SPEAKERS)
    parser.add_argument("--quick", action="store_true", help="as bench/run.py --quick runs it")
    parser.add_argument("--before", metavar="REV", help="also measure voxbridge at REV")
    args = parser.parse_args()
    how = (
        QUICK
        if args.quick
        else Call(turns=args.turns, seconds=args.seconds, speakers=args.speakers)
    )
    result = trio.run(measure, how)
    with checkout(args.before) as before:
        if before is not None:
            then = trio.run(measure, how, before)
            result.update({f"{key}_before": value for key, value in then.items()})
    for key, value in result.items():
        print(f"{key}: {value:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
