"""Supervision on Trio's autojump clock: exact retry instants, isolation, parking."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.runtime_helpers import make_runtime, wait_state, write
from voxbridge import Plugin, testing
from voxbridge.errors import PermanentFailure
from voxbridge.plugins.api import Context
from voxbridge.runtime.state import ActorState
from voxbridge.runtime.version import blob_id

starts: list[float] = []


async def _flaky(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    """Ready at once; crashes after `after` seconds for the first `crashes` attempts."""
    starts.append(trio.current_time())
    task_status.started()
    await trio.sleep(float(ctx.config.settings.get("after", 0)))
    if len(starts) <= int(ctx.config.settings.get("crashes", 3)):
        raise ConnectionError(f"boom {len(starts)}")
    await trio.sleep_forever()


FLAKY = Plugin(
    "flaky",
    "test",
    {"type": "object", "properties": {"after": {"type": "number"}, "crashes": {"type": "integer"}}},
    _flaky,
)


@pytest.fixture(autouse=True)
def _reset() -> None:
    starts.clear()
    testing.attempts.clear()


async def test_retries_at_exact_backoff_instants(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    write(tmp_path, "a.yaml", "plugins:\n  flaky: {crashes: 4}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, FLAKY)
        t0 = trio.current_time()
        await rt.reconciler.rescan()
        await trio.sleep(100)
        # Crashes at once 4 times: waits 1, 2, 4, 8 s (no jitter in tests), then runs.
        assert [t - t0 for t in starts] == [0, 1, 3, 7, 15]
        status = rt.table.get(("a", "flaky"))
        assert status is not None
        assert status.state == ActorState.RUNNING
        assert status.restarts == 4
        assert status.last_error == "ConnectionError: boom 4"
        nursery.cancel_scope.cancel()


async def test_policy_override_and_reset_after_healthy_run(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    # Crashes after 30 s of running: with reset_after 20s each crash counts as the first.
    write(
        tmp_path,
        "a.yaml",
        "restart: {initial: 5s, factor: 3, reset_after: 20s}\n"
        "plugins:\n  flaky: {crashes: 3, after: 30}\n",
    )
    write(
        tmp_path,
        "b.yaml",
        "restart: {initial: 5s, factor: 3, reset_after: 1h}\n"
        "plugins:\n  crashy: {crashes: 3, after: 30s}\n",
    )
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, FLAKY)
        t0 = trio.current_time()
        await rt.reconciler.rescan()
        await trio.sleep(1000)
        assert [round(t - t0) for t in starts] == [0, 35, 70, 105]
        # Without the reset the waits grow: 5, 15, 45.
        b = rt.table.get(("b", "crashy"))
        assert b is not None
        assert b.restarts == 3
        assert testing.attempts["b", "crashy"] == 4
        nursery.cancel_scope.cancel()


async def test_a_crashing_actor_never_affects_its_siblings(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    write(tmp_path, "a.yaml", "plugins:\n  crashy: {crashes: 1000}\n  echo: {}\n")
    write(tmp_path, "b.yaml", "plugins:\n  echo: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        await trio.sleep(3600)
        for key in (("a", "echo"), ("b", "echo")):
            s = rt.table.get(key)
            assert s is not None
            assert (s.state, s.restarts) == (ActorState.RUNNING, 0)
            assert testing.attempts[key] == 1
        crashy = rt.table.get(("a", "crashy"))
        assert crashy is not None
        assert crashy.state == ActorState.BACKOFF
        assert crashy.restarts > 10  # 1+2+4+...+256, then every 300 s
        nursery.cancel_scope.cancel()


async def test_permanent_failure_is_parked_until_the_file_changes(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    path = write(tmp_path, "a.yaml", "plugins:\n  broken: {reason: invalid token}\n  echo: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path)
        await rt.reconciler.rescan()
        await trio.sleep(3600)
        s = rt.table.get(("a", "broken"))
        assert s is not None
        assert (s.state, s.last_error, s.restarts) == (
            ActorState.FAILED,
            "PermanentFailure: invalid token",
            0,
        )
        assert testing.attempts["a", "broken"] == 1
        # Any change to the file gives it another try, even outside its section.
        path.write_text("description: retry\n" + path.read_text())
        assert await rt.reconciler.apply_paths([path]) == ["updated"]
        await trio.sleep(1)
        assert testing.attempts["a", "broken"] == 2
        assert testing.attempts["a", "echo"] == 1  # its sibling was not restarted
        # A comment-only change (same configuration) also re-arms it.
        path.write_text("# again\n" + path.read_text())
        assert await rt.reconciler.apply_paths([path]) == ["unchanged"]
        await trio.sleep(1)
        assert testing.attempts["a", "broken"] == 3
        nursery.cancel_scope.cancel()


async def test_errors_are_redacted_of_the_agents_secrets(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    leak = "hunter2-token"

    async def leaky(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
        raise PermanentFailure(f"bad token {ctx.agent.system_prompt.reveal()}")  # type: ignore[union-attr]

    from voxbridge.secrets.crypto import seal
    from voxbridge.secrets.keys import generate_key_pair

    pub = generate_key_pair(tmp_path / "keys", "k")
    write(
        tmp_path,
        "a.yaml",
        f"system_prompt: {seal(leak, pub.key, 'system_prompt')}\nplugins:\n  leaky: {{}}\n",
    )
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, Plugin("leaky", "test", {}, leaky))
        await rt.reconciler.rescan()
        await wait_state(rt, ("a", "leaky"), ActorState.FAILED)
        s = rt.table.get(("a", "leaky"))
        assert s is not None
        assert s.last_error == "PermanentFailure: bad token [secret]"
        nursery.cancel_scope.cancel()


async def test_stop_gives_a_grace_period_then_abandons(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    write(tmp_path, "a.yaml", "plugins:\n  stubborn: {linger: 1h}\n  echo: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, grace=3.0)
        await rt.reconciler.rescan()
        await wait_state(rt, ("a", "stubborn"), ActorState.RUNNING)
        t0 = trio.current_time()
        await rt.shutdown()
        assert trio.current_time() - t0 == pytest.approx(3.0)
        for key in (("a", "stubborn"), ("a", "echo")):
            s = rt.table.get(key)
            assert s is not None
            assert s.state == ActorState.STOPPED
        nursery.cancel_scope.cancel()


async def test_actor_that_returns_is_restarted(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async def quits(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    write(tmp_path, "a.yaml", "plugins:\n  quits: {}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, Plugin("quits", "test", {}, quits))
        await rt.reconciler.rescan()
        await trio.sleep(10)
        s = rt.table.get(("a", "quits"))
        assert s is not None
        assert s.last_error == "the actor returned (actors must run until cancelled)"
        assert s.restarts >= 3
        nursery.cancel_scope.cancel()


def test_redaction_covers_every_decrypted_field() -> None:
    from types import MappingProxyType

    from voxbridge import Agent, LLMConfig, PluginConfig, Secret
    from voxbridge.runtime.supervisor import redact

    agent = Agent(
        id="a",
        file=Path("a.yaml"),
        name="A",
        system_prompt=Secret("persona-text-1"),
        llm=LLMConfig(Secret("https://llm.internal/v1"), "m", api_key=Secret("sk-key-2")),
        plugins=MappingProxyType(
            {
                "n8n": PluginConfig(
                    "n8n",
                    True,
                    MappingProxyType(
                        {"webhook_url": Secret("https://hook/3"), "list": (Secret("nested-4"),)}
                    ),
                )
            }
        ),
    )
    text = "persona-text-1 https://llm.internal/v1 sk-key-2 https://hook/3 nested-4 public"
    assert redact(text, agent) == "[secret] [secret] [secret] [secret] [secret] public"


lives: list[tuple[str, str, float]] = []  # (event, token, when)


async def _session(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    """Connects for `connect` seconds, then serves; the token "bad" is refused for good."""
    token = str(ctx.config.settings["token"])
    if token == "bad":
        raise PermanentFailure("the token was refused (401)")
    await trio.sleep(float(ctx.config.settings.get("connect", 5)))
    lives.append(("up", token, trio.current_time()))
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        lives.append(("down", token, trio.current_time()))


SESSION = Plugin(
    "session",
    "test: a session that may overlap with its successor",
    {"type": "object", "properties": {"token": {"type": "string"}, "connect": {"type": "number"}}},
    _session,
    overlap=True,
)


async def test_an_overlap_plugin_is_swapped_make_before_break(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    lives.clear()
    path = write(tmp_path, "a.yaml", "plugins:\n  session: {token: one}\n")
    key = ("a", "session")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, SESSION)
        await rt.reconciler.rescan()
        await wait_state(rt, key, ActorState.RUNNING)
        states: list[ActorState] = []
        with rt.table.subscribe() as events:
            path.write_text("plugins:\n  session: {token: two}\n")
            t0 = trio.current_time()
            await rt.reconciler.apply_paths([path])
            await trio.sleep(60)
            while events._queue:
                event = await events.receive()
                if event.type == "actor":
                    states.append(event.data["state"])
        # The new session was up (5 s to connect) before the old one went down.
        assert lives[1:] == [("up", "two", t0 + 5), ("down", "one", t0 + 5)]
        assert set(states) == {ActorState.RUNNING}  # never starting, never stopped
        s = rt.table.get(key)
        assert s is not None and (s.state, s.swap, s.restarts) == (ActorState.RUNNING, None, 0)

        # A token refused for good: the old session serves on, and says why.
        two = blob_id(path.read_bytes())
        path.write_text("plugins:\n  session: {token: bad}\n")
        await rt.reconciler.apply_paths([path])
        await trio.sleep(3600)
        s = rt.table.get(key)
        assert s is not None and s.state == ActorState.RUNNING and s.swap is not None
        assert (s.swap.state, s.swap.error) == (
            ActorState.FAILED,
            "PermanentFailure: the token was refused (401)",
        )
        assert lives[-1] == ("down", "one", t0 + 5)  # "two" is still up
        # ...and the live version is the one that serves, the refused one beside it (21.7),
        # also when a comment-only edit gives the refused token another try.
        for bad in (
            "plugins:\n  session: {token: bad}\n",
            "# again\nplugins: {session: {token: bad}}\n",
        ):
            path.write_text(bad)
            await rt.reconciler.apply_paths([path])
            await trio.sleep(3600)
            live = rt.table.version("a")
            assert live is not None and (live.blob, live.previous) == (two, None)
            assert live.rejected is not None and live.rejected.blob == blob_id(bad.encode())
            assert live.rejected.errors == (
                "plugins.session: PermanentFailure: the token was refused (401)",
            )

        # Fixing the file completes the swap; going back to the running token just ends it.
        path.write_text("plugins:\n  session: {token: three}\n")
        t1 = trio.current_time()
        await rt.reconciler.apply_paths([path])
        await trio.sleep(60)
        assert lives[-2:] == [("up", "three", t1 + 5), ("down", "two", t1 + 5)]
        three = rt.table.version("a")
        assert three is not None and three.blob == blob_id(path.read_bytes())
        assert (three.rejected, three.previous) == (None, None)
        path.write_text("plugins:\n  session: {token: bad}\n")
        await rt.reconciler.apply_paths([path])
        path.write_text("plugins:\n  session: {token: three}\n")
        await rt.reconciler.apply_paths([path])
        await trio.sleep(60)
        s = rt.table.get(key)
        assert s is not None and (s.state, s.swap) == (ActorState.RUNNING, None)
        assert lives[-1] == ("down", "two", t1 + 5)  # "three" was never interrupted
        nursery.cancel_scope.cancel()


async def test_without_overlap_or_when_not_running_the_old_actor_stops_first(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    lives.clear()
    plain = Plugin("plain", "test", SESSION.schema, _session)  # no overlap declared
    path = write(tmp_path, "a.yaml", "plugins:\n  plain: {token: one}\n")
    async with trio.open_nursery() as nursery:
        rt = make_runtime(nursery, tmp_path, plain, SESSION)
        await rt.reconciler.rescan()
        await trio.sleep(10)
        path.write_text("plugins:\n  plain: {token: two}\n")
        t0 = trio.current_time()
        await rt.reconciler.apply_paths([path])
        await trio.sleep(10)
        assert lives == [("up", "one", 5), ("down", "one", t0), ("up", "two", t0 + 5)]
        # An overlap plugin that is not running yet has nothing to keep: restarted as usual.
        lives.clear()
        path.write_text("plugins:\n  session: {token: one}\n")
        await rt.reconciler.apply_paths([path])
        path.write_text("plugins:\n  session: {token: two}\n")
        await rt.reconciler.apply_paths([path])
        await trio.sleep(10)
        assert [e[:2] for e in lives] == [("down", "two"), ("up", "two")]
        nursery.cancel_scope.cancel()
