"""The reconciler over real files, fed paths directly (no watcher), on the autojump clock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

from tests.runtime_helpers import make_runtime, wait_state, write
from voxbridge import testing
from voxbridge.runtime.state import ActorState

AGENT = """\
name: Support
system_prompt: first prompt
plugins:
  echo: {}
  slow: {delay: 1s}
"""


@pytest.fixture(autouse=True)
def _reset() -> None:
    testing.attempts.clear()


def states(rt: object) -> dict[tuple[str, str], str]:
    return {k: s.state.value for k, s in rt.table.actors().items()}  # type: ignore[attr-defined]


async def test_edits_restart_only_what_changed(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    path = write(tmp_path, "support.yaml", AGENT)
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        await trio.sleep(2)
        assert states(rt) == {("support", "echo"): "running", ("support", "slow"): "running"}
        echo = ("support", "echo")

        # Prompt edit: nothing restarts, the running actor sees the new prompt.
        path.write_text(AGENT.replace("first prompt", "second prompt"))
        assert await rt.reconciler.apply_paths([path]) == ["updated"]
        await trio.sleep(0.1)
        assert testing.attempts == {echo: 1, ("support", "slow"): 1}
        s = rt.table.get(echo)
        assert s is not None
        assert s.detail == "prompt: second prompt"

        # Same content again: a no-op.
        assert await rt.reconciler.apply_paths([path]) == ["unchanged"]

        # One plugin's section changes: only it restarts.
        path.write_text(AGENT.replace("first prompt", "second prompt").replace("1s", "2s"))
        assert await rt.reconciler.apply_paths([path]) == ["updated"]
        await trio.sleep(3)
        assert testing.attempts == {echo: 1, ("support", "slow"): 2}

        # Disable one, add another: one stops (and leaves the table), one starts.
        path.write_text(
            "name: Support\nplugins:\n  echo: {enabled: false}\n  slow: {delay: 2s}\n"
            "  crashy: {crashes: 0}\n"
        )
        assert await rt.reconciler.apply_paths([path]) == ["updated"]
        await trio.sleep(1)
        assert states(rt) == {("support", "slow"): "running", ("support", "crashy"): "running"}
        assert testing.attempts[("support", "slow")] == 2

        # Removal stops everything, and the actors leave the table (after saying so).
        path.unlink()
        with rt.table.subscribe() as events:
            assert await rt.reconciler.apply_paths([path]) == ["removed"]
            seen = [(await events.receive()).as_dict() for _ in range(5)]
        # (Trio schedules the two stops in either order.)
        assert sorted((e["plugin"], e["state"]) for e in seen[:4]) == [
            ("crashy", "stopped"),
            ("crashy", "stopping"),
            ("slow", "stopped"),
            ("slow", "stopping"),
        ]
        assert seen[4]["type"] == "agent.removed"
        assert states(rt) == {}
        assert rt.index.get("support") is None
        nursery.cancel_scope.cancel()


async def test_a_broken_edit_keeps_the_last_good_version(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    path = write(tmp_path, "support.yaml", AGENT)
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        await wait_state(rt, ("support", "slow"), ActorState.RUNNING)
        with rt.table.subscribe() as events:
            path.write_text("name: [broken\n")
            assert await rt.reconciler.apply_paths([path]) == ["error"]
            event = await events.receive()
        assert event.type == "agent.error"
        assert event.data["problems"][0].startswith(f"{path}:2:1: YAML syntax error")
        agent = rt.index.get("support")
        assert agent is not None
        assert agent.system_prompt == "first prompt"
        assert states(rt) == {("support", "echo"): "running", ("support", "slow"): "running"}
        assert list(rt.table.problems()) == [str(path)]
        # Fixed: the error clears; the same configuration restarts nothing.
        path.write_text(AGENT)
        assert await rt.reconciler.apply_paths([path]) == ["updated"]
        assert rt.table.problems() == {}
        assert testing.attempts[("support", "slow")] == 1
        nursery.cancel_scope.cancel()


async def test_a_file_that_never_loaded_starts_nothing(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    write(tmp_path, "bad.yaml", "plugins:\n  echo: {nope: 1}\n")
    write(tmp_path, "good.yaml", "plugins:\n  echo: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        await trio.sleep(1)
        assert states(rt) == {("good", "echo"): "running"}
        assert list(rt.table.problems()) == [str(tmp_path / "agents.d" / "bad.yaml")]
        nursery.cancel_scope.cancel()


async def test_conflicts_resolve_when_the_other_file_changes(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    a = write(tmp_path, "a.yaml", "name: Same\ndefault: true\nplugins:\n  echo: {}\n")
    write(tmp_path, "b.yaml", "name: same\nplugins:\n  echo: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        assert sorted(rt.index.by_id) == ["a"]
        a.write_text("name: Other\nplugins:\n  echo: {}\n")
        await rt.reconciler.apply_paths([a])
        assert sorted(rt.index.by_id) == ["a", "b"]
        assert rt.table.problems() == {}
        nursery.cancel_scope.cancel()


async def test_editor_litter_and_foreign_paths_are_ignored(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        litter = [write(tmp_path, n, "x: [") for n in (".a.yaml.swp", "a.yaml~", "4913", "a.tmp")]
        other = tmp_path / "elsewhere.yaml"
        other.write_text("name: x\n")
        assert await rt.reconciler.apply_paths([*litter, other]) == ["ignored"] * 5
        assert rt.table.problems() == {}
        nursery.cancel_scope.cancel()


async def test_every_applied_change_clears_the_default_agent_cache(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    a = write(tmp_path, "a.yaml", "plugins:\n  discord: {enabled: false}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        assert rt.default_agent_id() is None
        b = write(tmp_path, "b.yaml", "default: true\n")
        await rt.reconciler.apply_paths([b])
        assert rt.default_agent_id() == "b"  # well within the TTL, yet fresh
        b.unlink()
        await rt.reconciler.apply_paths([b])
        assert rt.default_agent_id() is None
        a.write_text("default: true\n")
        await rt.reconciler.apply_paths([a])
        assert rt.default_agent_id() == "a"
        nursery.cancel_scope.cancel()


async def test_sharded_runtime_runs_only_its_agents(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    from voxbridge.runtime.shard import Shard

    for i in range(20):
        write(tmp_path, f"agent-{i}.yaml", "plugins:\n  echo: {}\n")
    owned = []
    for index in range(3):
        async with trio.open_nursery() as nursery:
            rt = make_runtime(nursery, tmp_path, shard=Shard(index, 3))
            await rt.reconciler.rescan()
            await trio.sleep(1)
            owned.append({k[0] for k in rt.table.actors()})
            assert len(rt.index.by_id) == 20  # every replica knows every agent
            nursery.cancel_scope.cancel()
    assert sorted(a for s in owned for a in s) == sorted(f"agent-{i}" for i in range(20))


async def test_the_startup_summary_counts_in_words(
    tmp_path: Path, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 21.5: "Initialized 1 plugins across 1 agents"."""
    write(tmp_path, "support.yaml", "plugins:\n  slow: {delay: 1500ms}\n")
    caplog.set_level("INFO", "voxbridge.run")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        began = trio.current_time()
        await rt.reconciler.rescan()
        await rt.summarize_start(began)
        nursery.cancel_scope.cancel()
    assert [r.getMessage() for r in caplog.records if r.name == "voxbridge.run"] == [
        "✅ Initialized 1 plugin across 1 agent in 1.5s"
    ]


async def test_the_startup_summary_counts_tool_servers_apart_from_plugins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent's MCP servers are actors, but not plugins: the summary names them apart. (On
    the real clock: the server is a real process, which a jumping clock would outrun.)"""
    write(
        tmp_path,
        "support.yaml",
        "plugins:\n  echo: {}\ntools:\n  gone: {command: [no-such-mcp-server-program]}\n",
    )
    caplog.set_level("INFO", "voxbridge.run")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        began = trio.current_time()
        await rt.reconciler.rescan()
        with trio.fail_after(20):
            await rt.summarize_start(began)
        nursery.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records if r.name == "voxbridge.run"]
    assert len(said) == 2, said
    assert re.fullmatch(r"✅ Initialized 1 plugin across 1 agent in \d+\.\ds", said[0])
    assert said[1] == "⚠️ 1 tool server failed to initialize"
