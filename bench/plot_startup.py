"""Start-up wall time against agent count (10 → 10,000, two plugins each taking 2 s to start),
voxbridge measured and the seed's sequential model; writes docs/startup.png and prints a table.

    python bench/plot_startup.py [--counts 10,100,1000,10000]

Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import runtime as runtime_bench

OUT = Path(__file__).resolve().parent.parent / "docs" / "startup.png"


def point(agents: int, delay: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runtime_bench.make_agents(
            root, agents, f"plugins:\n  slow: {{delay: {delay}}}\n  slow2: {{delay: {delay}}}\n"
        )
        ours = trio.run(runtime_bench.startup_ours, root, 2 * agents)
        scaled = delay / 1000
        wall, starts = trio.run(runtime_bench.startup_seed_model, root, scaled)
    return ours, wall - starts * scaled + starts * delay


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="10,100,1000,10000")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    ours, seed = [], []
    print("| agents | voxbridge (s) | seed's sequential model (s) | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for n in counts:
        o, s = point(n, 2.0)
        ours.append(o)
        seed.append(s)
        print(f"| {n:,} | {o:.2f} | {s:,.0f} | {s / o:,.0f}× |", flush=True)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.loglog(counts, seed, "o-", label="seed model: one plugin after another")
    ax.loglog(counts, ours, "o-", label="voxbridge: all at once")
    ax.axhline(2.0, color="grey", linestyle=":", label="ideal: one start (2 s)")
    ax.set_xlabel("agents (2 plugins each, 2 s to start)")
    ax.set_ylabel("wall time until every plugin runs (s)")
    ax.set_title("Start-up time against fleet size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
