"""Plugin types for tests and benchmarks, in the spirit of ``trio.testing``.

None of them talks to anything: they exist to exercise the runtime. Register them with a
runtime by passing them in its ``plugins`` mapping (see :func:`plugins`), or install them for a
``voxbridge run`` subprocess with :func:`write_entry_points`.

* ``slow`` — ready after ``delay`` (default 2 s) and then idle: start-up benchmarks.
* ``crashy`` — crashes ``crashes`` times (default 3), ``after`` seconds after starting, then runs.
* ``broken`` — fails permanently at once (an invalid token, say).
* ``echo`` — ready at once; notes the prompt it sees, for hot-reload checks.
* ``stubborn`` — ready at once; when cancelled, keeps cleaning up for ``linger`` (default 60 s).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import MappingProxyType

import trio

from .config.duration import parse_duration
from .errors import PermanentFailure
from .plugins.api import Context, Plugin, installed_plugins

__all__ = [
    "BROKEN",
    "CRASHY",
    "ECHO",
    "SLOW",
    "STUBBORN",
    "attempts",
    "plugins",
    "write_entry_points",
]

attempts: Counter[tuple[str, str]] = Counter()
"""How many times each (agent, plugin) actor was started in this process."""

_DURATION = {"$ref": "#/$defs/duration"}


async def _slow(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    attempts[ctx.agent_id, ctx.plugin] += 1
    await trio.sleep(parse_duration(ctx.config.settings.get("delay", 2.0)))
    task_status.started()
    await trio.sleep_forever()


async def _crashy(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    attempts[ctx.agent_id, ctx.plugin] += 1
    crashes = int(ctx.config.settings.get("crashes", 3))
    task_status.started()
    await trio.sleep(parse_duration(ctx.config.settings.get("after", 0)))
    if attempts[ctx.agent_id, ctx.plugin] <= crashes:
        raise RuntimeError(f"crash {attempts[ctx.agent_id, ctx.plugin]} of {crashes}")
    await trio.sleep_forever()


async def _broken(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    attempts[ctx.agent_id, ctx.plugin] += 1
    await trio.lowlevel.checkpoint()
    raise PermanentFailure(str(ctx.config.settings.get("reason", "this plugin always fails")))


async def _echo(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    attempts[ctx.agent_id, ctx.plugin] += 1
    task_status.started()
    agent = ctx.agent
    while True:
        # str(): an encrypted prompt shows as [secret]; health notes are public.
        ctx.note(f"prompt: {str(agent.system_prompt)[:40]}")
        agent = await ctx.agent_changed()


async def _stubborn(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    attempts[ctx.agent_id, ctx.plugin] += 1
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(parse_duration(ctx.config.settings.get("linger", 60.0)))


def _schema(**props: object) -> dict[str, object]:
    return {"type": "object", "additionalProperties": False, "properties": props}


SLOW = Plugin("slow", "Ready after a delay, then idle (tests)", _schema(delay=_DURATION), _slow)
CRASHY = Plugin(
    "crashy",
    "Crashes N times, then runs (tests)",
    _schema(crashes={"type": "integer", "minimum": 0}, after=_DURATION),
    _crashy,
)
BROKEN = Plugin("broken", "Fails permanently (tests)", _schema(reason={"type": "string"}), _broken)
ECHO = Plugin("echo", "Watches its agent's prompt (tests)", _schema(), _echo)
STUBBORN = Plugin("stubborn", "Slow to stop (tests)", _schema(linger=_DURATION), _stubborn)
_ALL = (SLOW, CRASHY, BROKEN, ECHO, STUBBORN)


def plugins() -> MappingProxyType[str, Plugin]:
    """The installed plugin types plus the testing ones."""
    found = dict(installed_plugins())
    found.update({p.name: p for p in _ALL})
    return MappingProxyType(dict(sorted(found.items())))


def write_entry_points(site_dir: Path) -> Path:
    """Lay out a ``voxbridge-testing`` distribution in ``site_dir`` as pip would install it, so a
    process with ``site_dir`` on ``PYTHONPATH`` finds the testing plugins through entry points.
    Returns the dist-info directory."""
    info = site_dir / "voxbridge_testing_plugins-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voxbridge-testing-plugins\nVersion: 1.0\n"
    )
    lines = [f"{p.name} = voxbridge.testing:{p.name.upper()}" for p in _ALL]
    (info / "entry_points.txt").write_text("[voxbridge.plugins]\n" + "\n".join(lines) + "\n")
    return info
