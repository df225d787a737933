"""Every benchmark, each beside its baseline, in one run: the proof that voxbridge is fast where
the seed (VoxBridge 2.0) was slow.

    python bench/run.py            # the full run (about 15 minutes)
    python bench/run.py --quick    # every key in at most QUICK_BUDGET seconds (people, CI)
    python bench/run.py --json     # ...and one JSON object on the last line
    python bench/run.py --only voice,vad   # some benchmarks (see BENCHES for their names)

Baselines measured in the same run: the seed's sequential start-up model, a naive reload that
re-reads every file, PyYAML alone for loading, an immediate-restart loop for a crash storm, the
brain's own round trip for the message path, a plain asyncio bot for streamed replies, a model
per stream for the VAD, the bare MCP round trip for a tool call. Figures are medians (or the
stated percentile).

Each benchmark is one :class:`Bench` below: its name, what it measures quick and in full, and
its rows of the table. The quick run keeps every key within ``QUICK_BUDGET``: fewer agents,
runs and turns, shorter windows, and model times faked where the model is not what is measured.
``bench_seconds`` is its wall time, ``bench_seconds_<name>`` each benchmark's: a new benchmark
takes its share of what is left (tests/test_bench.py holds the quick run to the budget).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import busy_channel
import discord_voice
import load_files
import memory
import message_path
import runtime as runtime_bench
import streaming
import tools
import voice
import voice_offline

from voxbridge.logs import setup_logging
from voxbridge.runtime.fleet import Runtime

QUICK_BUDGET = 90.0  # seconds, every key included

Results = dict[str, float]
Row = tuple[str, str, str, str]  # benchmark, voxbridge, baseline, ratio / goal


@dataclass(frozen=True)
class Options:
    """How to run: ``quick`` (within QUICK_BUDGET) or in full; ``before``, a revision of
    voxbridge to measure beside this one where a benchmark can (streamed replies)."""

    quick: bool = False
    before: str | None = None


@dataclass(frozen=True)
class Bench:
    """One benchmark: ``run(options)`` measures it (its keys, each beside its baseline);
    ``rows(results, quick)`` is what it adds to the table."""

    name: str
    run: Callable[[Options], Results]
    rows: Callable[[Results, bool], list[Row]]


def _agents(quick: bool) -> int:
    return 200 if quick else 1000


def _bots(quick: bool) -> int:
    return 10 if quick else 50


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _storm(root: Path, actors: int, settle: float, window: float) -> float:
    async with trio.open_nursery() as nursery:
        rt = Runtime(runtime_bench.options(root), nursery, runtime_bench.PLUGINS)
        await rt.reconciler.rescan()
        await trio.sleep(settle)
        cpu0, wall0 = _cpu(), time.monotonic()
        await trio.sleep(window)
        cpu1, wall1 = _cpu(), time.monotonic()
        nursery.cancel_scope.cancel()
    return 100.0 * (cpu1 - cpu0) / (wall1 - wall0)


def bench_storm(o: Options) -> Results:
    """CPU while every actor crashes at every start: with the backoff policy, measured after its
    first minute (quick: a policy 100x faster, after 1 s), and, as the baseline, restarting at
    once (no backoff)."""
    quick = o.quick
    if quick:
        policy, settle, window = "{initial: 10ms, factor: 2, max: 3s}", 1.0, 1.5
    else:
        policy, settle, window = "{initial: 1s, factor: 2, max: 5m}", 60.0, 20.0
    cases = (
        ("storm_cpu_pct", policy, settle, window),
        ("storm_no_backoff_cpu_pct", "{initial: 0s, max: 0s}", 0.5, 1.0 if quick else 3.0),
    )
    results = {}
    for name, restart, wait, measured in cases:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            runtime_bench.make_agents(
                root,
                _agents(quick),
                f"restart: {restart}\nplugins:\n  crashy: {{crashes: 1000000000}}\n",
            )
            results[name] = trio.run(_storm, root, _agents(quick), wait, measured)
    return results


def bench_message_path(o: Options) -> Results:
    """The message path with the memory store; beside it, in the same process, messages in
    turn to an agent that keeps no conversation (``memory.conversations: false``)."""
    bots, messages = _bots(o.quick), 50 if o.quick else 1000
    m = trio.run(lambda: message_path.measure(bots, messages, forgetful=True))
    return {
        "message_overhead_p50_ms": m[f"bots{bots}_overhead_p50_ms"],
        "message_overhead_p95_ms": m[f"bots{bots}_overhead_p95_ms"],
        "message_total_p95_ms": m[f"bots{bots}_total_p95_ms"],
        "memory_append_p95_ms": m[f"bots{bots}_memory_append_p95_ms"],
        "message_overhead_memory_off_p50_ms": m[f"bots{bots}_overhead_memory_off_p50_ms"],
        "message_overhead_memory_off_p95_ms": m[f"bots{bots}_overhead_memory_off_p95_ms"],
    }


def bench_busy_channel(o: Options) -> Results:
    """Bob's question while Ann's answer streams, beside voxbridge before issue 19 (quick:
    fewer trials, shorter answers)."""
    how = (10, 0.1, 2, 0.2) if o.quick else (100, 1.0, 5, 3.0)
    with streaming.checkout(busy_channel.BASELINE_REV) as before:
        return trio.run(busy_channel.measure, *how, before)


def _busy_row(r: Results, quick: bool) -> list[Row]:
    key = "busy_channel_second_post_overhead"
    before = (
        f"one answer at a time {r[f'{key}_baseline_p50_ms']:,.0f} / "
        f"{r[f'{key}_baseline_p95_ms']:,.0f} ({r['busy_channel_baseline_answer_s']:g} s answers)"
        if f"{key}_baseline_p50_ms" in r
        else "(baseline revision not found)"
    )
    return [
        (
            "Discord busy channel: a second person's question while an answer streams → "
            "their first text, less the LLM's, p50 / p95 (ms)",
            f"{r[f'{key}_p50_ms']:.2f} / {r[f'{key}_p95_ms']:.2f}",
            before,
            "goal p95 ≤ 10",
        )
    ]


def bench_streaming(o: Options) -> Results:
    with streaming.checkout(o.before) as before:
        # Quick: fewer messages and answers, half a second apart.
        how = (20, 2, before, 0.5) if o.quick else (200, 5, before, 1.5)
        return trio.run(streaming.measure, *how)


BENCHES: tuple[Bench, ...] = (
    Bench(
        "load",
        lambda o: load_files.bench_load(_agents(o.quick), 3 if o.quick else 7),
        lambda r, quick: [
            (
                "load + validate + decrypt (files/s)",
                f"{r['load_files_per_s']:,.0f}",
                f"PyYAML alone {r['yaml_only_files_per_s']:,.0f}",
                "goal ≥ 1,000",
            )
        ],
    ),
    Bench(
        "startup",
        # Quick: plugins that take 1 s to start (the ratio to the ideal is the measure).
        lambda o: runtime_bench.bench_startup(
            _agents(o.quick), 1.0 if o.quick else 2.0, 2 if o.quick else 5
        ),
        lambda r, quick: [
            (
                f"start-up, {_agents(quick)} agents × 2 plugins of "
                f"{r['startup_ideal_s']:.0f} s (s)",
                f"{r['startup_wall_s']:.2f}",
                f"ideal {r['startup_ideal_s']:.2f}",
                f"{r['startup_ratio']:.2f}× ideal (goal ≤ 1.5)",
            ),
            (
                "start-up vs the seed's sequential model (s)",
                f"{r['startup_wall_s']:.2f}",
                f"{r['startup_seed_model_s']:,.0f}",
                f"{r['startup_seed_model_ratio']:,.0f}× faster",
            ),
        ],
    ),
    Bench(
        "reload",
        lambda o: runtime_bench.bench_reload(_agents(o.quick), 20 if o.quick else 60),
        lambda r, quick: [
            (
                "reload: save → actor running again, p50 / p95 (ms)",
                f"{r['reload_p50_ms']:.1f} / {r['reload_p95_ms']:.1f}",
                f"re-read all {r['naive_reload_p50_ms']:.0f}",
                "goal p95 ≤ 100",
            )
        ],
    ),
    Bench(
        "default_agent",
        lambda o: runtime_bench.bench_default_agent(_agents(o.quick), 3 if o.quick else 7),
        lambda r, quick: [
            ("default agent, cache hit (µs)", f"{r['default_agent_hit_us']:.3f}", "", "goal ≤ 0.3"),
            (
                f"default agent, miss among {_agents(quick)} (µs)",
                f"{r['default_agent_miss_us']:.1f}",
                "",
                "goal ≤ 100",
            ),
        ],
    ),
    Bench(
        "memory",
        lambda o: runtime_bench.bench_memory(2_000 if o.quick else 10_000),
        lambda r, quick: [
            ("RSS per idle actor (KB)", f"{r['rss_per_actor_kb']:.1f}", "", "goal ≤ 30")
        ],
    ),
    Bench(
        "storm",
        bench_storm,
        lambda r, quick: [
            (
                f"CPU while {_agents(quick)} actors crash-loop (% of a core)",
                f"{r['storm_cpu_pct']:.1f}",
                f"no backoff {r['storm_no_backoff_cpu_pct']:.0f}",
                "",
            )
        ],
    ),
    Bench(
        "message_path",
        bench_message_path,
        lambda r, quick: [
            (
                f"message path overhead, {_bots(quick)} bots, p50 / p95 (ms)",
                f"{r['message_overhead_p50_ms']:.2f} / {r['message_overhead_p95_ms']:.2f}",
                f"no durable conversation {r['message_overhead_memory_off_p50_ms']:.2f} / "
                f"{r['message_overhead_memory_off_p95_ms']:.2f}",
                "goal p95 ≤ 2",
            ),
            (
                f"memory: a turn queued → committed, under the message load of {_bots(quick)} "
                "bots, p95 (ms)",
                f"{r['memory_append_p95_ms']:.2f}",
                "",
                "goal ≤ 1",
            ),
        ],
    ),
    Bench(
        "tools",
        lambda o: trio.run(tools.measure, 30 if o.quick else 300),
        lambda r, quick: [
            (
                f"tool call overhead, {transport}, p50 / p95 (ms)",
                f"{r[f'tool_call_overhead{key}_p50_ms']:.2f} / "
                f"{r[f'tool_call_overhead{key}_p95_ms']:.2f}",
                f"the MCP round trip alone {r[f'mcp_round_trip{key}_p50_ms']:.2f} / "
                f"{r[f'mcp_round_trip{key}_p95_ms']:.2f}",
                "goal p95 ≤ 5",
            )
            for transport, key in (("stdio", ""), ("streamable HTTP", "_http"))
        ],
    ),
    Bench(
        "memory_store",
        lambda o: memory.bench_store(
            100_000 if o.quick else 1_000_000, 20_000 if o.quick else 100_000, 10_000, 200
        ),
        lambda r, quick: [
            (
                f"memory: a conversation loaded among {r['memory_turns']:,.0f} turns, "
                "p50 / p95 (ms)",
                f"{r['memory_history_load_p50_ms']:.2f} / {r['memory_history_load_p95_ms']:.2f}",
                "",
                "goal p95 ≤ 2",
            ),
            (
                f"memory: facts recalled by words among {r['memory_facts']:,.0f}, p50 / p95 (ms)",
                f"{r['memory_recall_p50_ms']:.2f} / {r['memory_recall_p95_ms']:.2f}",
                f"one person with 10,000: {r['memory_recall_heavy_p95_ms']:.1f}",
                "goal p95 ≤ 10",
            ),
            (
                f"memory: facts recalled by vector among {r['memory_vectors']:,.0f}, "
                "p50 / p95 (ms)",
                f"{r['memory_recall_vector_p50_ms']:.2f} / {r['memory_recall_vector_p95_ms']:.2f}",
                "",
                "goal p95 ≤ 10",
            ),
        ],
    ),
    Bench(
        "streaming",
        bench_streaming,
        lambda r, quick: [
            (
                "web chat: first LLM event → first delta, p50 / p95 (ms)",
                f"{r['chat_first_delta_overhead_p50_ms']:.2f} / "
                f"{r['chat_first_delta_overhead_p95_ms']:.2f}",
                "",
                "goal p95 ≤ 5",
            ),
            (
                "Discord: first LLM event → reply posted, p50 / p95 (ms)",
                f"{r['discord_first_post_overhead_p50_ms']:.2f} / "
                f"{r['discord_first_post_overhead_p95_ms']:.2f}",
                "",
                "goal p95 ≤ 10",
            ),
            (
                "3 s streamed answer: first text after the first LLM event (ms)",
                f"{r['ttfv_voxbridge_after_first_chunk_ms']:.1f}",
                f"plain asyncio bot {r['ttfv_plain_after_first_chunk_ms']:.1f}"
                + (
                    f"; before streaming {r['ttfv_before_after_first_chunk_ms']:,.0f}"
                    if "ttfv_before_after_first_chunk_ms" in r
                    else ""
                ),
                "goal ≤ 10",
            ),
        ],
    ),
    Bench("busy_channel", bench_busy_channel, _busy_row),
    Bench(
        "voice",
        lambda o: trio.run(voice.measure, voice.QUICK if o.quick else voice.FULL),
        lambda r, quick: [
            (
                "voice: end of turn → first audio, less the fakes' 150 ms, p50 / p95 (ms)",
                f"{r['voice_added_latency_p50_ms']:.1f} / {r['voice_added_latency_p95_ms']:.1f}",
                "",
                "goal p95 ≤ 30",
            ),
            (
                "voice: barge-in onset → voice stopped, p50 / p95 (ms)",
                f"{r['barge_in_stop_p50_ms']:.1f} / {r['barge_in_stop_p95_ms']:.1f}",
                "",
                "goal p95 ≤ 100",
            ),
            (
                "voice: time to first audio, 20-sentence answer ÷ 1-sentence",
                f"{r['ttfa_ratio_long_short']:.3f}",
                "",
                "goal ≤ 1.1",
            ),
        ],
    ),
    Bench(
        "vad",
        lambda o: voice.vad_streams(voice.QUICK_VAD if o.quick else voice.FULL_VAD),
        lambda r, quick: [
            (
                "Silero VAD real-time streams on one core",
                f"{r['vad_streams_per_core']:.0f}",
                f"a model per stream {r['vad_streams_per_core_unbatched']:.0f}",
                "goal ≥ 100",
            )
        ],
    ),
    Bench(
        "engines",
        lambda o: voice.engines(3 if o.quick else 5),
        lambda r, quick: [
            (
                "offline engines: espeak-ng ms per speech second; pocketsphinx RTF",
                f"{r['tts_offline_ms_per_audio_s']:.2f}; {r['stt_offline_rtf']:.3f}",
                "",
                "",
            )
        ],
    ),
    Bench(
        "discord_voice",
        lambda o: trio.run(
            discord_voice.measure, discord_voice.QUICK if o.quick else discord_voice.FULL
        ),
        lambda r, quick: [
            (
                "Discord voice: receiving, per speaker, four talking at once (% of a core)",
                f"{r['discord_voice_rx_cpu_per_speaker_pct']:.1f}",
                f"one alone {r['discord_voice_rx_cpu_one_speaker_pct']:.1f}; "
                f"in the call, silent {r['discord_voice_idle_cpu_pct']:.1f}",
                "goal ≤ 3",
            ),
            (
                "Discord voice: last packet in → first packet out, less end_of_turn and the "
                "fakes, p50 / p95 (ms)",
                f"{r['discord_voice_added_latency_p50_ms']:.1f} / "
                f"{r['discord_voice_added_latency_p95_ms']:.1f}",
                f"after the turn was detected {r['discord_voice_after_turn_p50_ms']:.1f}",
                "goal p95 ≤ 40",
            ),
        ],
    ),
    Bench(
        "voice_offline", lambda o: bench_voice_offline(o), lambda r, quick: voice_offline.rows(r)
    ),
)


def bench_voice_offline(o: Options) -> Results:
    """Whisper, Smart Turn and the whole offline voice pipeline (see bench/voice_offline.py);
    quick: one run, every seventh item of each turn set (both sets, three detectors: 3 + 3 of
    each; within the budget), the warm-up turn and one trial (its question is the turn
    measured), and no pocketsphinx baseline (it is not what changed)."""
    r = voice_offline.whisper_rtf(1 if o.quick else 5)
    r.update(trio.run(voice_offline.turn_set, 7 if o.quick else 1))
    r.update(
        trio.run(voice_offline.measure, 0 if o.quick else 10, 1 if o.quick else 5, not o.quick)
    )
    return r


def run(benches: Sequence[Bench], options: Options) -> Results:
    """Every benchmark of ``benches``; their keys, and how long each took."""
    started = time.monotonic()
    r: Results = {}
    for bench in benches:
        t0 = time.monotonic()
        r.update(bench.run(options))
        r[f"bench_seconds_{bench.name}"] = time.monotonic() - t0
    r["bench_seconds"] = time.monotonic() - started
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"within {QUICK_BUDGET:.0f} s")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--before", metavar="REV", help="also measure streamed replies of voxbridge at REV"
    )
    names = ", ".join(b.name for b in BENCHES)
    ap.add_argument("--only", metavar="NAME,…", help=f"these benchmarks only: {names}")
    args = ap.parse_args()
    benches = BENCHES
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {b.name for b in BENCHES}
        if unknown:
            ap.error(f"no benchmark {', '.join(sorted(unknown))}")
        benches = tuple(b for b in BENCHES if b.name in wanted)
    quick = args.quick
    # Logs are written as in production (formatted, one line per crash) but to /dev/null.
    setup_logging("text", "info", stream=open(os.devnull, "w"))  # noqa: SIM115
    r = run(benches, Options(quick, args.before))

    print(
        f"voxbridge benchmarks ({'quick' if quick else 'full'}; {_agents(quick)} agents; "
        f"{platform.machine()}, Python {platform.python_version()})\n"
    )
    print("| benchmark | voxbridge | baseline | ratio / goal |")
    print("| --- | ---: | ---: | --- |")
    for bench in benches:
        for row in bench.rows(r, quick):
            print("| " + " | ".join(row) + " |")
    took = ", ".join(f"{b.name} {r[f'bench_seconds_{b.name}']:.1f}" for b in benches)
    print(f"\n({r['bench_seconds']:.0f} s: {took})")
    if quick and r["bench_seconds"] > QUICK_BUDGET:
        print(f"over the quick budget of {QUICK_BUDGET:.0f} s", file=sys.stderr)
    if args.json:
        print(json.dumps({k: round(v, 4) for k, v in r.items()}))


if __name__ == "__main__":
    main()
