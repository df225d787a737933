"""Resource figures without caps: process CPU and RSS, and how late Trio wakes tasks up.

Scheduling lag is the time between when a sleeping task asked to wake and when it ran: the
honest measure of an overloaded event loop (a blocking call in an actor shows up here).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

import trio

__all__ = ["Monitor", "ProcessSample"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One sample: CPU % of one core since the previous sample, resident memory, lag."""

    cpu_percent: float = 0.0
    rss_bytes: int = 0
    lag_s: float = 0.0
    lag_max_s: float = 0.0
    cpu_seconds_total: float = 0.0


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Monitor:
    """Samples the process every ``interval`` seconds and the loop's lag every ``tick``."""

    def __init__(self, interval: float = 5.0, tick: float = 0.25) -> None:
        self.interval = interval
        self.tick = tick
        self.latest = ProcessSample(rss_bytes=rss_bytes(), cpu_seconds_total=cpu_seconds())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample forever."""
        task_status.started()
        last_wall, last_cpu = time.monotonic(), cpu_seconds()
        lag_max = 0.0
        while True:
            lag = 0.0
            next_sample = trio.current_time() + self.interval
            while trio.current_time() < next_sample:
                asked = trio.current_time() + self.tick
                await trio.sleep_until(asked)
                lag = max(0.0, trio.current_time() - asked)
                lag_max = max(lag_max, lag)
            wall, cpu = time.monotonic(), cpu_seconds()
            percent = 100.0 * (cpu - last_cpu) / max(wall - last_wall, 1e-9)
            self.latest = ProcessSample(percent, rss_bytes(), lag, lag_max, cpu)
            last_wall, last_cpu, lag_max = wall, cpu, 0.0
