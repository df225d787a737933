"""Benchmark: the message path (issue 4) — gateway MESSAGE_CREATE → brain request → reply POST.

``voxbridge run`` runs as a subprocess against a Discord-compatible server and a zero-latency
OpenAI-compatible LLM, both in this process on 127.0.0.1 (tests/fake_discord.py,
tests/fake_brains.py). For each message, timestamps taken here (one clock):

* dispatch → brain request: the gateway event is sent; the LLM request arrives;
* brain request → reply: the LLM request arrives; the reply POST arrives (this includes the
  rest of the loopback HTTP round trip to the brain).

The overhead is the total less the brain's own round trip, measured with a plain httpx client
in another process (bench/round_trip.py; voxbridge's requests cross a process boundary too)
against the same zero-latency server (its median).

    python bench/message_path.py [--messages 1000] [--bots 1,50] [--profile FILE] [--stages]

Prints p50/p95 for each bot count, and a JSON line last. ``--profile`` runs voxbridge under
py-spy (every thread, native frames off) and writes its collapsed stacks to FILE. ``--stages``
(one bot) also marks, inside voxbridge, when each message reaches each stage
(bench/stages/sitecustomize.py) and prints where the time goes, beside a plain single-file
disnake bot (bench/plain_bot.py) answering the same messages from the same fakes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import free_port, pct, voxbridge

from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.fake_discord import FakeDiscord, RecordedRequest
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair

GUILD, CHANNEL = 880000000000000001, 880000000000000002
USER = 7001
HERE = Path(__file__).resolve().parent


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used so far, every thread (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _histogram(port: int, name: str) -> list[tuple[float, float]]:
    """A histogram of the process's /metrics: (upper bound, cumulative count) pairs."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append(
                (float("inf") if bound == "+Inf" else float(bound), float(line.split()[-1]))
            )
    return buckets


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket the quantile falls in."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    wanted = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= wanted:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (wanted - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def _reply_since(discord: FakeDiscord, index: int) -> RecordedRequest | None:
    for r in discord.requests[index:]:
        if r.method == "POST" and r.path.endswith("/messages"):
            return r
    return None


async def _brain_round_trip(base_url: str, n: int) -> list[float]:
    """What one zero-latency brain request costs a client in another process (as voxbridge
    is): the part of the path that is the brain's, not voxbridge's."""
    script = HERE / "round_trip.py"
    done = await trio.run_process(
        [sys.executable, str(script), f"{base_url}/v1/chat/completions", str(n + 20)],
        capture_stdout=True,
    )
    times: list[float] = json.loads(done.stdout)
    return times[20:]


async def measure(
    bots: int,
    messages: int,
    profile: Path | None = None,
    *,
    stages: Path | None = None,
    plain: bool = False,
    rows: list[dict[str, float]] | None = None,
    env: dict[str, str] | None = None,
    forgetful: bool = False,
) -> dict[str, float]:
    """The path's figures; with ``stages`` (a file), voxbridge marks its stages there; with
    ``plain``, the plain disnake bot answers instead (one bot); ``rows`` gets each message's
    timestamps; ``env`` is added to voxbridge's environment (``VOXBRIDGE_STORE=none``: memory
    in the process only, the baseline of durable conversations). With ``forgetful`` the second
    bot's agent keeps no conversation (``memory.conversations: false``) and the messages go to
    the first and the second in turn: the same process, the same moments, with and without
    durable conversations (its figures: the keys ending in ``_memory_off``)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        public = generate_key_pair(root / "keys", "bench")
        (root / "agents.d").mkdir()
        discord = FakeDiscord()
        discord.add_guild(GUILD, "Bench", [CHANNEL])
        llm = FakeLLM(Plan([{"reply": "ok"}]), stream_ok=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(discord.serve)
            await start_fake(nursery, llm)
            for i in range(bots):
                token = f"bench-token-{i}"
                discord.add_bot(token, user_id=100 + i, name=f"Bot{i}")
                sealed = seal(token, public.key, "plugins.discord.bot_token")
                (root / "agents.d" / f"agent-{i:03d}.yaml").write_text(
                    f"name: Agent {i}\nllm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
                    f"plugins:\n  discord:\n    bot_token: {sealed}\n"
                    + ("memory: {conversations: false}\n" if forgetful and i == 1 else "")
                )
            port = free_port()
            args = ["--listen", f"127.0.0.1:{port}", "--discord-api-base", discord.base_url]
            command = None
            if profile is not None:
                spy = shutil.which("py-spy") or "py-spy"
                command = [spy, "record", "--threads", "--rate", "500", "--format", "raw"]
                command += ["-o", str(profile), "--", sys.executable, "-m", "voxbridge", "run"]
                command += ["--log-level", "warning", *args]
            if plain:
                command = ["env", "VB_TOKEN=bench-token-0", f"VB_API={discord.base_url}"]
                command += [f"VB_LLM={llm.base_url}/v1", sys.executable, str(HERE / "plain_bot.py")]
            stop = signal.SIGINT if profile else signal.SIGTERM  # py-spy writes on Ctrl-C
            traced = {"also": [HERE / "stages"], "env": {"VOXBRIDGE_STAGES_OUT": str(stages)}}
            extra = traced if stages else ({"env": env} if env else {})
            async with voxbridge(root, *args, command=command, stop=stop, **extra) as proc:
                await discord.wait_until(
                    lambda: all(discord.connected(f"bench-token-{i}") for i in range(bots)),
                    limit_s=60,
                )
                await trio.sleep(2.5)  # every bot past guild_ready_timeout: READY for real
                to_brain, to_reply, total = [], [], []
                total_off: list[float] = []
                cpu = 0.0
                turns = 2 if forgetful else 1
                for n in range(messages * turns + 20):  # the first 20 warm connections up
                    if n == 20:
                        cpu = _cpu_seconds(proc.pid)
                    seen = len(discord.requests)
                    t0 = time.perf_counter()
                    bot = n % turns
                    await discord.send_message(
                        f"bench-token-{bot}", content=f"m{n}", author_id=USER, author_name="ann"
                    )
                    await llm.wait_requests(n + 1)
                    await discord.wait_until(
                        lambda s=seen: _reply_since(discord, s) is not None, limit_s=10
                    )
                    reply = _reply_since(discord, seen)
                    assert reply is not None
                    if rows is not None:
                        rows.append({"dispatch": t0, "llm": llm.times[n], "arrived": reply.at})
                    if n >= 20 and bot == 1:
                        total_off.append(reply.at - t0)
                    elif n >= 20:
                        to_brain.append(llm.times[n] - t0)
                        to_reply.append(reply.at - llm.times[n])
                        total.append(reply.at - t0)
                cpu = _cpu_seconds(proc.pid) - cpu
                written = [] if plain else await _histogram(port, "voxbridge_memory_write_seconds")
            rtt = await _brain_round_trip(llm.base_url, 300)
            nursery.cancel_scope.cancel()
    ms = 1000.0
    own = [t - statistics.median(rtt) for t in total]
    off = [t - statistics.median(rtt) for t in total_off]
    more = (
        {
            f"bots{bots}_overhead_memory_off_p50_ms": ms * statistics.median(off),
            f"bots{bots}_overhead_memory_off_p95_ms": ms * pct(off, 95),
        }
        if forgetful
        else {}
    )
    return more | {
        f"bots{bots}_brain_rtt_p50_ms": ms * statistics.median(rtt),
        f"bots{bots}_overhead_p50_ms": ms * statistics.median(own),
        f"bots{bots}_overhead_p95_ms": ms * pct(own, 95),
        f"bots{bots}_to_brain_p50_ms": ms * pct(to_brain, 50),
        f"bots{bots}_to_brain_p95_ms": ms * pct(to_brain, 95),
        f"bots{bots}_brain_to_reply_p50_ms": ms * pct(to_reply, 50),
        f"bots{bots}_brain_to_reply_p95_ms": ms * pct(to_reply, 95),
        f"bots{bots}_total_p50_ms": ms * statistics.median(total),
        f"bots{bots}_total_p95_ms": ms * pct(total, 95),
        # The process's CPU (every thread) per message, from its own /metrics.
        f"bots{bots}_cpu_per_message_ms": ms * cpu / max(1, messages * turns),
        # Turns committed while this load ran, as the process's own histogram has them.
        f"bots{bots}_memory_append_p50_ms": ms * quantile(written, 0.5),
        f"bots{bots}_memory_append_p95_ms": ms * quantile(written, 0.95),
    }


_STAGES = [
    ("dispatch", "handler", "gateway event sent → disnake parsed it, our handler runs"),
    ("handler", "trio", "→ on the Trio side, being answered (the hop, the channel's queue)"),
    ("trio", "llm_call", "→ the LLM request is made (history, routing, the answer's task)"),
    ("llm_call", "llm", "→ the request arrives at the LLM (httpx, loopback, the fake)"),
    ("llm", "llm_done", "→ its answer is read (the fake, loopback, httpx)"),
    ("llm_done", "first_text", "→ the answer's text reaches the reply"),
    ("first_text", "post", "→ the reply is posted (splitting, the rhythm)"),
    ("post", "arrived", "→ the POST arrives (hop to asyncio, disnake, aiohttp, the fake)"),
]


def stage_table(messages: int) -> dict[str, float]:
    """Where a message's time goes, stage by stage, beside the plain bot's total."""
    import tempfile as _tempfile

    rows: list[dict[str, float]] = []
    with _tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stages.json"
        trio.run(lambda: measure(1, messages, stages=out, rows=rows))
        marks = json.loads(out.read_text())
    per_message: list[dict[str, float]] = []
    for name, at in marks:
        if name == "handler":
            per_message.append({})
        if per_message and name not in per_message[-1]:
            per_message[-1][name] = at
    for row, mine in zip(rows, per_message[-len(rows) :], strict=True):
        row.update(mine)
    rows = rows[20:]
    plain = trio.run(lambda: measure(1, messages, plain=True))
    print("| stage | p50 (ms) | p95 (ms) |")
    print("| --- | ---: | ---: |")
    for start, end, label in _STAGES:
        d = [1000 * (r[end] - r[start]) for r in rows]
        print(f"| {label} | {statistics.median(d):.3f} | {pct(d, 95):.3f} |")
    total = [1000 * (r["arrived"] - r["dispatch"]) for r in rows]
    print(f"| total | {statistics.median(total):.3f} | {pct(total, 95):.3f} |")
    print(
        f"| plain disnake bot, same fakes: total | {plain['bots1_total_p50_ms']:.3f} | "
        f"{plain['bots1_total_p95_ms']:.3f} |"
    )
    return {
        "plain_bot_overhead_p50_ms": plain["bots1_overhead_p50_ms"],
        "plain_bot_overhead_p95_ms": plain["bots1_overhead_p95_ms"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--bots", default="1,50")
    ap.add_argument("--profile", type=Path, metavar="FILE")
    ap.add_argument("--stages", action="store_true", help="where the time goes, stage by stage")
    args = ap.parse_args()
    if args.stages:
        print(json.dumps({k: round(v, 3) for k, v in stage_table(args.messages).items()}))
        return
    results: dict[str, float] = {}
    print(
        "| bots | dispatch → brain p50 / p95 (ms) | brain → reply p50 / p95 (ms) "
        "| total p50 / p95 (ms) | brain round trip p50 (ms) | overhead p50 / p95 (ms) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for bots in (int(b) for b in args.bots.split(",")):
        r = trio.run(measure, bots, args.messages, args.profile)
        results.update(r)
        b = f"bots{bots}_"
        print(
            f"| {bots} | {r[b + 'to_brain_p50_ms']:.2f} / {r[b + 'to_brain_p95_ms']:.2f} | "
            f"{r[b + 'brain_to_reply_p50_ms']:.2f} / {r[b + 'brain_to_reply_p95_ms']:.2f} | "
            f"{r[b + 'total_p50_ms']:.2f} / {r[b + 'total_p95_ms']:.2f} | "
            f"{r[b + 'brain_rtt_p50_ms']:.2f} | "
            f"{r[b + 'overhead_p50_ms']:.2f} / {r[b + 'overhead_p95_ms']:.2f} |"
        )
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
