"""Helpers for runtime tests: a Runtime over real files, without the watcher (the tests feed
paths to the reconciler themselves, which keeps them on Trio's autojump clock)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import trio

from voxbridge import Plugin, testing
from voxbridge.runtime.fleet import RunOptions, Runtime
from voxbridge.runtime.state import ActorState


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


def options(tmp_path: Path, **changes: object) -> RunOptions:
    base: dict[str, object] = {
        "agents_dir": tmp_path / "agents.d",
        "keys_dir": tmp_path / "keys",
        "state_dir": tmp_path / "state",
        "listen": None,
        "grace": 2.0,
    }
    base.update(changes)
    (tmp_path / "agents.d").mkdir(exist_ok=True)
    return RunOptions(**base)  # type: ignore[arg-type]


def make_runtime(
    nursery: trio.Nursery, tmp_path: Path, *extra: Plugin, **changes: object
) -> Runtime:
    plugins = dict(testing.plugins())
    plugins.update({p.name: p for p in extra})
    return Runtime(options(tmp_path, **changes), nursery, plugins, rng=NoJitter())


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / "agents.d" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


async def wait_until(rt: Runtime, cond: Callable[[], bool], limit_s: float = 10) -> None:
    """Wait, event by event from the state table, until ``cond()`` holds."""
    with rt.table.subscribe() as events, trio.fail_after(limit_s):
        while not cond():
            await events.receive()


async def wait_state(rt: Runtime, key: tuple[str, str], state: ActorState) -> None:
    def reached() -> bool:
        s = rt.table.get(key)
        return s is not None and s.state == state

    await wait_until(rt, reached)
