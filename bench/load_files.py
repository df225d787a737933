"""Benchmark: load + validate + decrypt N agent files with two secrets each (issue 2).

Goal: ≥ 1,000 files/s on a 2-core machine. For context it also times the same files through
PyYAML's C loader alone (no validation, no decryption, no locations): the floor any loader pays.

    python bench/load_files.py [--files 1000] [--runs 7]

Prints a markdown table of medians and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from voxbridge.config.load import load_directory
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair, load_keyring

TEMPLATE = """\
# yaml-language-server: $schema=.schema.json
name: Agent {i}
description: Benchmark agent number {i}
system_prompt: |
  You are agent {i}. Be concise and friendly.
llm:
  base_url: http://127.0.0.1:11434/v1
  model: llama3.1
  api_key: {api_key}
  temperature: 0.7
history: 10
restart: {{initial: 1s, factor: 2, max: 5m, reset_after: 10m}}
plugins:
  discord:
    enabled: true
    bot_token: {bot_token}
    channels: ["123456789012345678"]
"""


def make(root: Path, n: int) -> tuple[Path, Path]:
    keys = root / "keys"
    public = generate_key_pair(keys, "bench")
    agents = root / "agents.d"
    agents.mkdir()
    for i in range(n):
        (agents / f"agent-{i:05d}.yaml").write_text(
            TEMPLATE.format(
                i=i,
                api_key=seal(f"sk-{i}", public.key, "llm.api_key"),
                bot_token=seal(f"token-{i}", public.key, "plugins.discord.bot_token"),
            )
        )
    return agents, keys


def bench_load(files: int, runs: int) -> dict[str, float]:
    """Median files/s of voxbridge's loader and of PyYAML alone, runs interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        agents, keys = make(Path(tmp), files)
        keyring = load_keyring(keys, environ={})
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        ours, floor = [], []
        for _ in range(runs):  # interleaved, so both see the same machine noise
            t = time.perf_counter()
            result = load_directory(agents, keyring)
            ours.append(time.perf_counter() - t)
            assert len(result.agents) == files and not result.problems
            t = time.perf_counter()
            for p in sorted(agents.glob("*.yaml")):
                yaml.load(p.read_text(), Loader=loader)
            floor.append(time.perf_counter() - t)
    return {
        "load_files_per_s": files / statistics.median(ours),
        "yaml_only_files_per_s": files / statistics.median(floor),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    r = bench_load(args.files, args.runs)
    ours_rate, floor_rate = r["load_files_per_s"], r["yaml_only_files_per_s"]
    print(f"| {args.files} files, {args.runs} runs (median) | files/s | ms/file |")
    print("| --- | ---: | ---: |")
    print(f"| voxbridge load+validate+decrypt | {ours_rate:,.0f} | {1000 / ours_rate:.3f} |")
    print(f"| PyYAML CSafeLoader only (floor) | {floor_rate:,.0f} | {1000 / floor_rate:.3f} |")
    print(
        f"goal ≥ 1,000 files/s: {ours_rate / 1000:.2f}× the goal; "
        f"{floor_rate / ours_rate:.1f}× the cost of parsing alone"
    )
    print(json.dumps({k: round(v) for k, v in r.items()}))


if __name__ == "__main__":
    main()
