"""Runtime benchmarks (issue 3), each side by side with its baseline, in one run.

    python bench/runtime.py [--quick] [--runs N] [--json]

* start-up: N agents x 2 plugins whose start takes 2 s (voxbridge.testing's ``slow``), from
  ``serve()`` to every actor running; against the ideal (2 s) and the seed's sequential
  model (each plugin of each agent started one after another), measured in the same run.
* reload: with N agents loaded, a plugin section edited on disk -> that actor restarted and
  running (the real watcher); against a naive reload that re-reads every file.
* default agent: a cache hit, and a miss (a resolution) among N agents.
* memory: RSS per idle actor with 10,000 actors.

Medians over several runs; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import trio

from voxbridge import Agent, Plugin, PluginConfig, testing
from voxbridge.config.load import load_directory
from voxbridge.runtime.fleet import RunOptions, Runtime
from voxbridge.runtime.monitor import rss_bytes
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState
from voxbridge.secrets.keys import Keyring

# Two plugin types that take `delay` to become ready: the testing `slow` and a twin.
PLUGINS = {
    **testing.plugins(),
    "slow2": Plugin("slow2", "twin", testing.SLOW.schema, testing.SLOW.actor),
}


def make_agents(root: Path, n: int, body: str) -> Path:
    agents = root / "agents.d"
    agents.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (agents / f"agent-{i:05d}.yaml").write_text(f"name: Agent {i}\n{body}")
    return agents


def options(root: Path) -> RunOptions:
    return RunOptions(
        agents_dir=root / "agents.d", keys_dir=root / "keys", state_dir=root / "state", listen=None
    )


async def _until_all(rt: Runtime, count: int, state: ActorState = ActorState.RUNNING) -> None:
    with rt.table.subscribe(maxlen=100_000) as events:
        while rt.table.by_state()[state] < count:
            await events.receive()


async def startup_ours(root: Path, actors: int) -> float:
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        rt: Runtime = await nursery.start(
            lambda task_status: serve(options(root), plugins=PLUGINS, task_status=task_status)
        )
        await _until_all(rt, actors)
        wall = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return wall


async def startup_seed_model(root: Path, delay: float) -> tuple[float, int]:
    """The seed's startup_services(): load all, then initialise each plugin of each agent in
    turn (awaiting each start). Returns the wall time and how many starts it made."""
    t0 = time.perf_counter()
    loaded = load_directory(root / "agents.d", Keyring(), plugins=PLUGINS)
    starts = 0
    for agent in loaded.agents.values():
        for _plugin in agent.enabled_plugins:
            await trio.sleep(delay)  # the plugin's own start time, as in the slow plugin
            starts += 1
    return time.perf_counter() - t0, starts


def bench_startup(agents: int, delay: float, runs: int) -> dict[str, float]:
    ours, seed = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_agents(
                root, agents, f"plugins:\n  slow: {{delay: {delay}}}\n  slow2: {{delay: {delay}}}\n"
            )
            ours.append(trio.run(startup_ours, root, 2 * agents))
            # The seed model at full scale with the start scaled down 1000x, then projected:
            # its wall time is (starts x delay) + its own overhead, and the overhead is measured.
            scaled = delay / 1000
            wall, starts = trio.run(startup_seed_model, root, scaled)
            seed.append(wall - starts * scaled + starts * delay)
    o, s = statistics.median(ours), statistics.median(seed)
    return {
        "startup_wall_s": o,
        "startup_ideal_s": delay,
        "startup_ratio": o / delay,
        "startup_seed_model_s": s,
        "startup_seed_model_ratio": s / o,
    }


async def reload_latency(root: Path, agents: int, edits: int) -> tuple[list[float], list[float]]:
    lat: list[float] = []
    naive: list[float] = []
    async with trio.open_nursery() as nursery:
        rt: Runtime = await nursery.start(
            lambda task_status: serve(options(root), plugins=PLUGINS, task_status=task_status)
        )
        await _until_all(rt, agents)
        for n in range(edits):
            agent_id = f"agent-{(n * 7919) % agents:05d}"
            path = root / "agents.d" / f"{agent_id}.yaml"
            with rt.table.subscribe(maxlen=100_000) as events:
                t0 = time.perf_counter()
                path.write_text(
                    f"name: Agent {agent_id}\nplugins:\n  slow: {{delay: 0.00{n % 9 + 1}}}\n"
                )
                seen_stop = False
                while True:
                    e = (await events.receive()).data
                    if e.get("agent") != agent_id:
                        continue
                    seen_stop = seen_stop or e.get("state") == "stopping"
                    if seen_stop and e.get("state") == "running":
                        break
                lat.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            load_directory(root / "agents.d", Keyring(), plugins=PLUGINS)  # the naive reload
            naive.append(time.perf_counter() - t0)
            await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    return lat, naive


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def bench_reload(agents: int, edits: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_agents(root, agents, "plugins:\n  slow: {delay: 0}\n")
        lat, naive = trio.run(reload_latency, root, agents, edits)
    return {
        "reload_p50_ms": 1000 * pct(lat, 50),
        "reload_p95_ms": 1000 * pct(lat, 95),
        "naive_reload_p50_ms": 1000 * pct(naive, 50),
    }


def bench_default_agent(agents: int, repeats: int = 7) -> dict[str, float]:
    from voxbridge.config.load import AgentIndex
    from voxbridge.runtime.default_agent import DefaultAgent

    # Every agent speaks on Discord and none says default: true, so a miss has to look for
    # the first of them by id: the rule's slowest path.
    discord = {"discord": PluginConfig("discord", True)}
    index = AgentIndex(
        Agent(
            id=f"agent-{i:05d}",
            file=Path(f"agent-{i:05d}.yaml"),
            name=f"Agent {i}",
            plugins=discord,
        )
        for i in range(agents)
    )
    cache = DefaultAgent(index)
    cache.get()
    n = 2_000_000
    hits = [timeit.timeit(cache.get, number=n) / n for _ in range(repeats)]
    m = 20_000

    def miss() -> None:
        cache.invalidate()
        cache.get()

    misses = [timeit.timeit(miss, number=m) / m for _ in range(repeats)]
    return {
        "default_agent_hit_us": 1e6 * statistics.median(hits),
        "default_agent_miss_us": 1e6 * statistics.median(misses),
    }


async def _memory(root: Path, actors: int) -> float:
    async with trio.open_nursery() as nursery:
        rt = Runtime(options(root), nursery, PLUGINS)
        # Load first, so the figure is the actors' alone.
        await rt.reconciler.rescan()
        gc.collect()
        before = rss_bytes()
        for agent in list(rt.index.by_id.values()):
            rt.supervisor.start(rt.spec_for(agent, "slow"))
        await _until_all(rt, actors)
        gc.collect()
        after = rss_bytes()
        nursery.cancel_scope.cancel()
    return (after - before) / actors


def bench_memory(actors: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # Disabled in the files, so loading starts nothing; the benchmark starts them itself.
        make_agents(root, actors, "plugins:\n  slow: {delay: 0, enabled: false}\n")
        per = trio.run(_memory, root, actors)
    return {"rss_per_actor_kb": per / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller fleet, fewer runs")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    agents = 200 if args.quick else 1000
    r: dict[str, float] = {}
    r.update(bench_startup(agents, 2.0, runs))
    r.update(bench_reload(agents, 20 if args.quick else 60))
    r.update(bench_default_agent(agents))
    r.update(bench_memory(2_000 if args.quick else 10_000))
    print(f"| benchmark ({agents} agents, median of {runs} runs) | voxbridge | baseline | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| start-up, {agents}x2 plugins of 2 s (s) | {r['startup_wall_s']:.2f} | ideal 2.00 "
        f"| {r['startup_ratio']:.2f}x ideal (goal <= 1.5) |"
    )
    print(
        f"| start-up vs the seed's sequential model (s) | {r['startup_wall_s']:.2f} | "
        f"{r['startup_seed_model_s']:.0f} | {r['startup_seed_model_ratio']:.0f}x faster |"
    )
    print(
        f"| reload: save -> actor restarted, p50 / p95 (ms) | {r['reload_p50_ms']:.1f} / "
        f"{r['reload_p95_ms']:.1f} | naive re-read-all p50 {r['naive_reload_p50_ms']:.0f} | "
        f"goal p95 <= 100 |"
    )
    print(f"| default agent: cache hit (us) | {r['default_agent_hit_us']:.3f} | goal 0.3 | |")
    print(
        f"| default agent: miss among {agents} (us) | {r['default_agent_miss_us']:.1f} | "
        "goal 100 | |"
    )
    print(f"| RSS per idle actor (KB) | {r['rss_per_actor_kb']:.1f} | goal 30 | |")
    if args.json:
        print(json.dumps({k: round(v, 4) for k, v in r.items()}))


if __name__ == "__main__":
    main()
