"""The status server over real HTTP and a real WebSocket, inside a real runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import _captured, clean_env
from tests.runtime_helpers import options, wait_state, wait_until, write
from voxbridge import Plugin, testing
from voxbridge.errors import PermanentFailure
from voxbridge.plugins.api import Context
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState
from voxbridge.runtime.version import blob_id
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair


async def start(nursery: trio.Nursery, tmp_path: Path, **changes: object) -> Runtime:
    opts = options(tmp_path, listen="127.0.0.1:0", **changes)
    rt: Runtime = await nursery.start(
        lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
    )
    assert rt.status_url is not None
    return rt


def recording(base_url: str | None) -> httpx.AsyncClient:
    """An httpx client whose every response body joins what the leak scan reads."""

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        _captured.append(response.text)

    return httpx.AsyncClient(base_url=base_url or "", event_hooks={"response": [keep]})


async def test_every_endpoint(tmp_path: Path) -> None:
    key = generate_key_pair(tmp_path / "keys", "k")
    api_key = seal("sk-status-api-secret", key.key, "llm.api_key")
    prompt = seal("a confidential persona", key.key, "system_prompt")
    write(
        tmp_path,
        "a.yaml",
        f"name: Alpha\ndefault: true\nsystem_prompt: {prompt}\n"
        f"llm: {{base_url: 'http://127.0.0.1:9/v1', model: m, api_key: '{api_key}'}}\n"
        "plugins:\n  echo: {}\n  slow: {delay: 0, enabled: false}\n",
    )
    write(tmp_path, "b.yaml", "plugins:\n  broken: {reason: bad token}\n")
    write(tmp_path, "c.yaml", "history: [oops\n")
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("b", "broken"), ActorState.FAILED)
        async with recording(rt.status_url) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).json() == {"status": "ready", "agents": 2}

            agents = (await http.get("/api/agents")).json()["agents"]
            assert [a["id"] for a in agents] == ["a", "b", "c"]
            a, b, c = agents
            assert (a["name"], a["default"], a["is_default"], a["error"]) == (
                "Alpha",
                True,
                True,
                None,
            )
            assert a["plugins"]["echo"]["state"] == "running"
            assert a["plugins"]["echo"]["detail"] == "prompt: [secret]"
            assert a["plugins"]["slow"] == {"enabled": False, "state": "disabled"}
            assert b["plugins"]["broken"]["last_error"] == "PermanentFailure: bad token"
            assert c["loaded"] is False
            assert c["error"][0].endswith(
                "c.yaml:2:1: YAML syntax error: while parsing a flow "
                "sequence, did not find expected ',' or ']'"
            )

            assert (await http.get("/api/agents/a")).json()["name"] == "Alpha"
            missing = await http.get("/api/agents/nope")
            assert (missing.status_code, missing.json()) == (404, {"error": "no agent 'nope'"})

            status = (await http.get("/api/plugins/broken/status")).json()
            assert status["by_state"] == {"failed": 1}
            assert (await http.get("/api/plugins/nope/status")).status_code == 404

            default = (await http.get("/api/default-agent")).json()
            assert (default["agent"], default["reason"]) == ("a", "default: true")

            r = await http.post("/api/agents/a/plugins/echo/restart")
            assert r.status_code == 202
            assert testing.attempts[("a", "echo")] >= 2
            assert (await http.post("/api/agents/a/plugins/nope/restart")).status_code == 404

            metrics = (await http.get("/metrics")).text
            assert 'voxbridge_actors{state="running"} 1.0' in metrics
            assert 'voxbridge_actors{state="failed"} 1.0' in metrics
            assert "voxbridge_load_errors 1.0" in metrics
            assert 'voxbridge_actor_up{agent="a",plugin="echo"} 1.0' in metrics
            assert "voxbridge_process_resident_memory_bytes" in metrics
            assert "voxbridge_scheduling_lag_seconds" in metrics

            page = await http.get("/")
            assert page.headers["content-type"].startswith("text/html")
            assert "<title>voxbridge</title>" in page.text
        nursery.cancel_scope.cancel()


async def test_a_token_is_required_when_set(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: A\n")
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path, api_token="s3cret")
        async with httpx.AsyncClient(base_url=rt.status_url) as http:
            assert (await http.get("/healthz")).status_code == 200  # probes stay open
            assert (await http.get("/readyz")).status_code == 200
            for path in ("/api/agents", "/metrics", "/"):
                r = await http.get(path)
                assert r.status_code == 401
                assert r.headers["www-authenticate"] == "Bearer"
            assert (
                await http.get("/api/agents", headers={"Authorization": "Bearer wrong"})
            ).status_code == 401
            ok = await http.get("/api/agents", headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200
            # The token no longer works in an API URL (it would land in logs and history)...
            assert (await http.get("/metrics?token=s3cret")).status_code == 401
            # ...a page opened once with it trades it for a cookie and drops it from the URL.
            r = await http.get("/?token=s3cret")
            assert r.status_code == 303 and r.headers["location"] == "/"
            cookie = r.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert "s3cret" not in cookie
            assert (await http.get("/api/agents")).status_code == 200  # the cookie, by itself
        async with httpx.AsyncClient(base_url=rt.status_url) as fresh:
            assert (await fresh.get("/?token=wrong")).status_code == 401
        ws_url = rt.status_url.replace("http", "ws") + "/api/events"
        async with open_websocket_url(
            ws_url, extra_headers=[(b"authorization", b"Bearer s3cret")]
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "hello"
        nursery.cancel_scope.cancel()


async def test_events_of_an_add_a_crash_a_backoff_and_a_removal_in_order(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        ws_url = rt.status_url.replace("http", "ws") + "/api/events"  # type: ignore[union-attr]
        async with open_websocket_url(ws_url) as ws:
            assert json.loads(await ws.get_message())["type"] == "hello"
            path = write(tmp_path, "evt.yaml", "plugins:\n  crashy: {crashes: 1, after: 0}\n")
            seen: list[tuple[str, str | None]] = []
            with trio.fail_after(10):
                while seen.count(("actor", "running")) < 2:
                    e = json.loads(await ws.get_message())
                    seen.append((e["type"], e.get("state")))
            path.unlink()
            with trio.fail_after(10):
                while seen[-1] != ("agent.removed", None):
                    e = json.loads(await ws.get_message())
                    seen.append((e["type"], e.get("state")))
        assert seen == [
            ("actor", "starting"),
            ("agent.loaded", None),
            ("actor", "running"),
            ("actor", "backoff"),
            ("actor", "starting"),
            ("actor", "running"),
            ("actor", "stopping"),
            ("actor", "stopped"),
            ("agent.removed", None),
        ]
        nursery.cancel_scope.cancel()


async def test_a_slow_websocket_consumer_never_stalls_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voxbridge.server import app

    monkeypatch.setattr(app, "EVENT_BUFFER", 10)
    paths = [write(tmp_path, f"a{n}.yaml", "system_prompt: v0\n") for n in range(100)]
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        ws_url = rt.status_url.replace("http", "ws") + "/api/events"  # type: ignore[union-attr]
        async with open_websocket_url(ws_url) as ws:
            await ws.get_message()
            # 100 reloads in one batch: far more events than the client's buffer of 10, produced
            # faster than its handler can send them.
            for path in paths:
                path.write_text("system_prompt: v1\n")
            with trio.fail_after(5):
                assert await rt.reconciler.apply_paths(paths) == ["updated"] * 100
            assert all(rt.index.get(f"a{n}").system_prompt == "v1" for n in range(100))  # type: ignore[union-attr]
            # Drop-oldest keeps the newest: the last load arrives, and on the way the client
            # is told exactly how many events it missed.
            missed = 0
            with trio.fail_after(10):
                while (e := json.loads(await ws.get_message())).get("agent") != "a99":
                    missed += e["count"] if e["type"] == "dropped" else 0
            assert missed > 0
            assert missed == rt.table.dropped_events
        nursery.cancel_scope.cancel()


def test_subscriptions_drop_the_oldest() -> None:
    from voxbridge.runtime.state import StateTable

    table = StateTable()
    with table.subscribe(maxlen=3) as feed:
        for n in range(5):
            table.publish("agent.loaded", {"agent": f"a{n}"})
        assert feed.dropped == 2

        async def drain() -> list[str]:
            return [(await feed.receive()).data["agent"] for _ in range(3)]

        assert trio.run(drain) == ["a2", "a3", "a4"]


async def test_readyz_is_503_while_stopping(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "plugins:\n  stubborn: {linger: 1s}\n")
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("a", "stubborn"), ActorState.RUNNING)
        async with httpx.AsyncClient(base_url=rt.status_url) as http:
            nursery.start_soon(rt.shutdown)
            await wait_until(rt, lambda: rt.stopping)
            r = await http.get("/readyz")
            assert (r.status_code, r.json()) == (503, {"status": "stopping"})
        nursery.cancel_scope.cancel()


def test_status_cli_table_json_and_errors(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "voxbridge", "status", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert r.returncode == 2
    assert "no voxbridge status server at http://127.0.0.1:9" in r.stderr

    async def main() -> None:
        write(tmp_path, "a.yaml", "default: true\nplugins:\n  echo: {}\n")
        async with trio.open_nursery() as nursery:
            rt = await start(nursery, tmp_path)
            await wait_state(rt, ("a", "echo"), ActorState.RUNNING)
            for args in ([], ["--json"]):
                out = await trio.to_thread.run_sync(
                    lambda a=args: subprocess.run(
                        [sys.executable, "-m", "voxbridge", "status", "--url", rt.status_url, *a],
                        capture_output=True,
                        text=True,
                        env=clean_env(),
                    )
                )
                assert out.returncode == 0, out.stderr
                if args:
                    assert json.loads(out.stdout)[0]["plugins"]["echo"]["state"] == "running"
                else:
                    lines = out.stdout.splitlines()
                    assert lines[0].split() == [
                        "AGENT",
                        "VERSION",
                        "PLUGIN",
                        "STATE",
                        "RESTARTS",
                        "FOR",
                        "LAST",
                        "ERROR",
                    ]
                    blob = blob_id((tmp_path / "agents.d" / "a.yaml").read_bytes())
                    assert lines[1].split()[:5] == ["⭐", "a", blob[:8], "echo", "running"]
            nursery.cancel_scope.cancel()

    trio.run(main)


def _table_printed(out: bytes, json_out: bool) -> bool:
    if not json_out:
        return b"memory:" in out  # the table's last line
    try:
        json.JSONDecoder().raw_decode(out.decode())
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("follow_json", [False, True])
async def test_status_follow_streams_changes(tmp_path: Path, follow_json: bool) -> None:
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        args = [sys.executable, "-m", "voxbridge", "status", "--url", rt.status_url, "--follow"]
        proc = await trio.lowlevel.open_process(
            args + (["--json"] if follow_json else []), stdout=subprocess.PIPE, env=clean_env()
        )
        assert proc.stdout is not None
        out = b""
        with trio.fail_after(15):
            # the table is printed once the changes are subscribed to: from then on nothing is
            # missed, however slowly the command started
            while not _table_printed(out, follow_json):
                out += await proc.stdout.receive_some()
            write(tmp_path, "late.yaml", "plugins:\n  echo: {}\n")
            while b"late" not in out or b"running" not in out:
                out += await proc.stdout.receive_some()
        proc.terminate()
        await proc.wait()
        text = out.decode()
        if follow_json:
            assert any(
                json.loads(line).get("agent") == "late"
                for line in text.splitlines()[1:]
                if line.startswith("{")
            )
        else:
            assert "late/echo  running" in text
        nursery.cancel_scope.cancel()


connected = trio.Event()


async def _gated(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    """Serves once `connected` is set (its token "good"); with any other token it is refused
    for good — after queueing a readiness report, as a bridge from another thread can."""
    if ctx.config.settings["token"] != "good":
        token = trio.lowlevel.current_trio_token()
        token.run_sync_soon(task_status.started)
        raise PermanentFailure("the service refused the token (401)")
    await connected.wait()
    task_status.started()
    await trio.sleep_forever()


GATED = Plugin(
    "gated",
    "test: ready once connected; a bad token fails for good",
    {"type": "object", "properties": {"token": {"type": "string"}}},
    _gated,
)


async def test_a_parked_actor_reads_failed_everywhere_and_none_runs_before_serving(
    tmp_path: Path,
) -> None:
    """Finding f: a token made invalid while the actor ran left it reading "running" (with the
    PermanentFailure as its last error, 0 restarts) in the API, the metrics and the status."""
    global connected
    connected = trio.Event()
    path = write(tmp_path, "a.yaml", "plugins:\n  gated: {token: good}\n")
    opts = options(tmp_path, listen="127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        rt: Runtime = await nursery.start(
            lambda task_status: serve(
                opts, plugins={**testing.plugins(), "gated": GATED}, task_status=task_status
            )
        )
        async with recording(rt.status_url) as http:

            async def state() -> str:
                agents = (await http.get("/api/agents")).json()["agents"]
                return str(agents[0]["plugins"]["gated"]["state"])

            # Not serving yet: starting, not running, wherever one looks.
            assert await state() == "starting"
            assert (
                'voxbridge_actor_up{agent="a",plugin="gated"} 0.0'
                in (await http.get("/metrics")).text
            )
            connected.set()
            await wait_state(rt, ("a", "gated"), ActorState.RUNNING)
            assert await state() == "running"

            path.write_text("plugins:\n  gated: {token: revoked}\n")
            await rt.reconciler.apply_paths([path])
            await wait_state(rt, ("a", "gated"), ActorState.FAILED)
            for _ in range(10):  # the late readiness report has had every chance to land
                await trio.lowlevel.checkpoint()
            a = (await http.get("/api/agents")).json()["agents"][0]["plugins"]["gated"]
            assert (a["state"], a["restarts"]) == ("failed", 0)
            assert a["last_error"] == "PermanentFailure: the service refused the token (401)"
            by_type = (await http.get("/api/plugins/gated/status")).json()
            assert by_type["by_state"] == {"failed": 1}
            metrics = (await http.get("/metrics")).text
            assert 'voxbridge_actor_up{agent="a",plugin="gated"} 0.0' in metrics
            assert 'voxbridge_actors{state="failed"} 1.0' in metrics
            assert 'voxbridge_actors{state="running"} 0.0' in metrics
            table = await trio.run_process(
                [sys.executable, "-m", "voxbridge", "status", "--url", str(rt.status_url)],
                capture_stdout=True,
                env=clean_env(),
            )
            row = table.stdout.decode().splitlines()[1].split()
            assert [row[0], *row[2:5]] == ["a", "gated", "failed", "0"]
        nursery.cancel_scope.cancel()


async def _beating(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    ctx.count("beats")
    ctx.count("beats", 2)
    await trio.sleep_forever()


async def test_finding_g_every_ctx_count_is_exported_as_a_metric(tmp_path: Path) -> None:
    """docs/plugins.md promises ctx.count() counters as metrics: a third-party plugin counting
    `beats` finds them in /metrics, in the one family the docs name."""
    beating = Plugin("heartbeat", "test: counts beats", {"type": "object"}, _beating)
    write(tmp_path, "a.yaml", "plugins:\n  heartbeat: {}\n")
    opts = options(tmp_path, listen="127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        rt: Runtime = await nursery.start(
            lambda task_status: serve(
                opts, plugins={**testing.plugins(), "heartbeat": beating}, task_status=task_status
            )
        )
        await wait_until(rt, lambda: rt.table.counters(("a", "heartbeat")).get("beats") == 3)
        async with recording(rt.status_url) as http:
            metrics = (await http.get("/metrics")).text
            view = (await http.get("/api/agents/a")).json()["plugins"]["heartbeat"]
        assert "# TYPE voxbridge_actor_counter_total counter" in metrics
        line = 'voxbridge_actor_counter_total{agent="a",counter="beats",plugin="heartbeat"} 3.0'
        assert line in metrics
        assert view["counters"] == {"beats": 3}
        nursery.cancel_scope.cancel()
