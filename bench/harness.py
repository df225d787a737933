"""What the benchmarks that drive ``voxbridge run`` share: a fleet directory with keys, the
process itself, a free port, percentiles."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent


def pct(xs: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank)."""
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def voxbridge(
    root: Path,
    *args: str,
    source: Path = ROOT,
    command: Sequence[str] | None = None,
    stop: int = signal.SIGTERM,
    also: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[trio.Process]:
    """``voxbridge run ARGS`` in ``root`` (its agents.d and keys), quiet, as a subprocess; the
    code from ``source`` (another checkout, for a before/after). ``command`` runs something else
    instead (a baseline bot, a profiler); ``stop`` is the signal that ends it; ``also`` goes on
    its path before ``source`` (a sitecustomize that instruments it), with ``env`` added."""
    argv = command or [sys.executable, "-m", "voxbridge", "run", "--log-level", "warning", *args]
    proc = await trio.lowlevel.open_process(
        list(argv),
        cwd=root,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(p) for p in (*also, source)),
            **(env or {}),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.send_signal(stop)
        with trio.move_on_after(30):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_ready(url: str, limit_s: float = 30) -> None:
    """Until the status server at ``url`` says ready."""
    async with httpx.AsyncClient() as http:
        with trio.fail_after(limit_s):
            while True:
                try:
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)
