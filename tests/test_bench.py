"""``bench/run.py --quick``, as people and CI run it: every key, within its budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env

BENCH = Path(__file__).resolve().parent.parent / "bench"
BUDGET = 90.0  # seconds: what the quick run may take, every key included (bench/run.py)


@pytest.mark.slow
def test_the_quick_benchmark_reports_every_key_within_its_budget() -> None:
    """Issue 21.9: the quick run had grown to 247 s (it was 45 s)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=4 * BUDGET,
        check=False,
    )
    # Each row of the table reads its keys: a benchmark that left one out fails the run.
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| load + validate + decrypt (files/s) |" in done.stdout
    results = json.loads(done.stdout.splitlines()[-1])
    assert all(math.isfinite(value) for value in results.values())
    steps = {k: v for k, v in results.items() if k.startswith("bench_seconds_")}
    assert results["bench_seconds"] <= BUDGET, steps
    assert len(steps) >= 12  # each benchmark's own time, for the next one's budget
