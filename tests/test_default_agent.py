"""The default agent's rule, TTL and invalidation; per-guild selections."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from tests.runtime_helpers import make_runtime, write
from voxbridge import Plugin, testing
from voxbridge.config.load import AgentIndex
from voxbridge.config.model import Agent, PluginConfig
from voxbridge.runtime.default_agent import DefaultAgent, Selections


def agent(agent_id: str, *, default: bool = False, discord: bool = False) -> Agent:
    plugins = {"discord": PluginConfig("discord", True)} if discord else {}
    return Agent(
        id=agent_id, file=Path(f"{agent_id}.yaml"), name=agent_id, default=default, plugins=plugins
    )


def test_the_seeds_rule() -> None:
    index = AgentIndex([agent("zeta", discord=True), agent("beta", discord=True), agent("alpha")])
    cache = DefaultAgent(index)
    assert cache.get() == "beta"  # the first by id with discord enabled
    assert cache.info()["reason"] == "first agent (by id) with discord enabled"
    index.add(agent("omega", default=True))
    cache.invalidate()
    assert cache.get() == "omega"
    assert cache.info()["reason"] == "default: true"
    assert DefaultAgent(AgentIndex([agent("x")])).get() is None


async def test_ttl_expiry_on_the_trio_clock(autojump_clock: trio.abc.Clock) -> None:
    index = AgentIndex([agent("b", discord=True)])
    cache = DefaultAgent(index, ttl=300, clock=trio.current_time)
    assert cache.get() == "b"
    index.add(agent("a", discord=True))  # not invalidated: the cache does not see it yet
    await trio.sleep(299)
    assert cache.get() == "b"
    assert cache.info()["cache_age_s"] == 299
    await trio.sleep(1)
    assert cache.get() == "a"  # expired at exactly 300 s and resolved again
    assert cache.info()["cache_age_s"] == 0
    index.add(agent("0", discord=True))
    cache.invalidate()
    assert cache.get() == "0"


def test_selections_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "selections.json"
    s = Selections(path)
    s.select(123, "support")
    s.select(456, "sales")
    assert json.loads(path.read_text()) == {"guilds": {"123": "support", "456": "sales"}}
    assert Selections(path).get(123) == "support"
    path.write_text("{not json")
    assert Selections(path).all() == {}  # unreadable: start empty, do not crash


# A stand-in for the discord plugin: same name, no token needed, idles.
FAKE_DISCORD = Plugin("discord", "fake", {"type": "object"}, testing.ECHO.actor)


async def test_active_agent_per_guild(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    write(tmp_path, "a.yaml", "default: true\nplugins:\n  discord: {}\n")
    b = write(tmp_path, "b.yaml", "plugins:\n  discord: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, FAKE_DISCORD)
        await rt.reconciler.rescan()
        rt.select(1, "b")
        assert (rt.active_agent_id(1), rt.active_agent_id(2)) == ("b", "a")
        b.write_text("plugins:\n  discord: {enabled: false}\n")
        await rt.reconciler.apply_paths([b])
        assert rt.active_agent_id(1) == "a"  # b no longer speaks on discord: the default does
        nursery.cancel_scope.cancel()
    # A new runtime over the same state directory remembers guild 1's choice.
    b.write_text("plugins:\n  discord: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, FAKE_DISCORD)
        await rt.reconciler.rescan()
        assert rt.active_agent_id(1) == "b"
        nursery.cancel_scope.cancel()
