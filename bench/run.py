"""Every benchmark, each beside its baseline, in one run: the proof that voxbridge is fast where
the seed (VoxBridge 2.0) was slow.

    python bench/run.py            # the full run (several minutes)
    python bench/run.py --quick    # about 3 minutes on a 2-core machine
    python bench/run.py --json     # ...and one JSON object on the last line

Baselines measured in the same run: the seed's sequential start-up model, a naive reload that
re-reads every file, PyYAML alone for loading, an immediate-restart loop for a crash storm, the
brain's own round trip for the message path. Figures are medians (or the stated percentile).
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
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import discord_voice
import load_files
import message_path
import runtime as runtime_bench
import streaming
import voice
import voice_offline

from voxbridge.logs import setup_logging
from voxbridge.runtime.fleet import Runtime


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


def bench_storm(actors: int, quick: bool) -> dict[str, float]:
    """CPU while ``actors`` crash at every start: with the backoff policy, measured after its
    first minute (quick: a policy 100x faster, after 1 s), and, as the baseline, restarting at
    once (no backoff)."""
    if quick:
        policy, settle, window = "{initial: 10ms, factor: 2, max: 3s}", 1.0, 3.0
    else:
        policy, settle, window = "{initial: 1s, factor: 2, max: 5m}", 60.0, 20.0
    cases = (
        ("storm_cpu_pct", policy, settle, window),
        ("storm_no_backoff_cpu_pct", "{initial: 0s, max: 0s}", 0.5, 3.0),
    )
    results = {}
    for name, restart, wait, measured in cases:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            runtime_bench.make_agents(
                root, actors, f"restart: {restart}\nplugins:\n  crashy: {{crashes: 1000000000}}\n"
            )
            results[name] = trio.run(_storm, root, actors, wait, measured)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--before", metavar="REV", help="also measure streamed replies of voxbridge at REV"
    )
    args = ap.parse_args()
    quick = args.quick
    # Logs are written as in production (formatted, one line per crash) but to /dev/null.
    setup_logging("text", "info", stream=open(os.devnull, "w"))  # noqa: SIM115
    agents = 200 if quick else 1000
    runs = 2 if quick else 5
    started = time.monotonic()
    r: dict[str, float] = {}
    r.update(load_files.bench_load(200 if quick else 1000, 3 if quick else 7))
    r.update(runtime_bench.bench_startup(agents, 2.0, runs))
    r.update(runtime_bench.bench_reload(agents, 20 if quick else 60))
    r.update(runtime_bench.bench_default_agent(agents))
    r.update(runtime_bench.bench_memory(2_000 if quick else 10_000))
    r.update(bench_storm(agents, quick))
    bots = 10 if quick else 50
    m = trio.run(message_path.measure, bots, 100 if quick else 1000)
    r["message_overhead_p50_ms"] = m[f"bots{bots}_overhead_p50_ms"]
    r["message_overhead_p95_ms"] = m[f"bots{bots}_overhead_p95_ms"]
    r["message_total_p95_ms"] = m[f"bots{bots}_total_p95_ms"]
    with streaming.checkout(args.before) as before:
        r.update(trio.run(streaming.measure, 30 if quick else 200, 2 if quick else 5, before))
    r.update(trio.run(voice.measure, 3 if quick else 20))
    r.update(voice.vad_streams(2.0 if quick else 6.0))
    r.update(voice.engines())
    r.update(trio.run(discord_voice.measure, 5 if quick else 20, 8.0 if quick else 20.0))
    r.update(voice_offline.whisper_rtf())
    r.update(trio.run(voice_offline.turn_set))
    r.update(trio.run(voice_offline.measure, 2 if quick else 10, 1 if quick else 5, not quick))
    r["bench_seconds"] = time.monotonic() - started

    print(
        f"voxbridge benchmarks ({'quick' if quick else 'full'}; {agents} agents; "
        f"{platform.machine()}, Python {platform.python_version()})\n"
    )
    print("| benchmark | voxbridge | baseline | ratio / goal |")
    print("| --- | ---: | ---: | --- |")
    rows = [
        (
            "load + validate + decrypt (files/s)",
            f"{r['load_files_per_s']:,.0f}",
            f"PyYAML alone {r['yaml_only_files_per_s']:,.0f}",
            "goal ≥ 1,000",
        ),
        (
            f"start-up, {agents} agents × 2 plugins of 2 s (s)",
            f"{r['startup_wall_s']:.2f}",
            "ideal 2.00",
            f"{r['startup_ratio']:.2f}× ideal (goal ≤ 1.5)",
        ),
        (
            "start-up vs the seed's sequential model (s)",
            f"{r['startup_wall_s']:.2f}",
            f"{r['startup_seed_model_s']:,.0f}",
            f"{r['startup_seed_model_ratio']:,.0f}× faster",
        ),
        (
            "reload: save → actor running again, p50 / p95 (ms)",
            f"{r['reload_p50_ms']:.1f} / {r['reload_p95_ms']:.1f}",
            f"re-read all {r['naive_reload_p50_ms']:.0f}",
            "goal p95 ≤ 100",
        ),
        ("default agent, cache hit (µs)", f"{r['default_agent_hit_us']:.3f}", "", "goal ≤ 0.3"),
        (
            f"default agent, miss among {agents} (µs)",
            f"{r['default_agent_miss_us']:.1f}",
            "",
            "goal ≤ 100",
        ),
        ("RSS per idle actor (KB)", f"{r['rss_per_actor_kb']:.1f}", "", "goal ≤ 30"),
        (
            f"CPU while {agents} actors crash-loop (% of a core)",
            f"{r['storm_cpu_pct']:.1f}",
            f"no backoff {r['storm_no_backoff_cpu_pct']:.0f}",
            "",
        ),
        (
            f"message path overhead, {bots} bots, p50 / p95 (ms)",
            f"{r['message_overhead_p50_ms']:.2f} / {r['message_overhead_p95_ms']:.2f}",
            f"total p95 {r['message_total_p95_ms']:.2f}",
            "goal p95 ≤ 2",
        ),
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
        (
            "Silero VAD real-time streams on one core",
            f"{r['vad_streams_per_core']:.0f}",
            f"a model per stream {r['vad_streams_per_core_unbatched']:.0f}",
            "goal ≥ 100",
        ),
        (
            "Discord voice: receiving, per speaker, four talking at once (% of a core)",
            f"{r['discord_voice_rx_cpu_per_speaker_pct']:.1f}",
            f"one alone {r['discord_voice_rx_cpu_one_speaker_pct']:.1f}; "
            f"in the call, silent {r['discord_voice_idle_cpu_pct']:.1f}",
            "goal ≤ 3",
        ),
        (
            "Discord voice: last packet in → first packet out, less end_of_turn and the fakes, "
            "p50 / p95 (ms)",
            f"{r['discord_voice_added_latency_p50_ms']:.1f} / "
            f"{r['discord_voice_added_latency_p95_ms']:.1f}",
            f"after the turn was detected {r['discord_voice_after_turn_p50_ms']:.1f}",
            "goal p95 ≤ 40",
        ),
        (
            "offline engines: espeak-ng ms per speech second; pocketsphinx RTF",
            f"{r['tts_offline_ms_per_audio_s']:.2f}; {r['stt_offline_rtf']:.3f}",
            "",
            "",
        ),
        *voice_offline.rows(r),
    ]
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n({r['bench_seconds']:.0f} s)")
    if args.json:
        print(json.dumps({k: round(v, 4) for k, v in r.items()}))


if __name__ == "__main__":
    main()
