"""Tool servers in the running fleet: one supervised actor per MCP server, an edit restarts that
server alone, deletion and shutdown leave no process behind; the web chat shows tool use; the
API, the metrics and the logs say what ran — through the real runtime and status server."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.browser import chromium_page, needs_chromium
from tests.conftest import CliRunner, clean_env
from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.runtime_helpers import options, wait_state, wait_until, write
from tests.test_discord_plugin import ANN, Rig, ready
from tests.test_tools import LAB, group_alive, wait_gone
from tests.test_web_chat import ask, socket_url
from voxbridge import testing
from voxbridge.plugins.discord.reply import CURSOR
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair
from voxbridge.tools.server import McpServer

LAB_CMD = f"[{sys.executable}, {LAB}]"


async def start(nursery: trio.Nursery, tmp_path: Path) -> Runtime:
    opts = options(tmp_path, listen="127.0.0.1:0", grace=5.0)
    rt: Runtime = await nursery.start(
        lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
    )
    return rt


async def start_with_lab(nursery: trio.Nursery, tmp_path: Path, llm: FakeLLM) -> Runtime:
    """A runtime with agent ``a``: ``llm``, the lab as its tool server, a web chat."""
    await start_fake(nursery, llm)
    write(
        tmp_path,
        "a.yaml",
        f"llm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
        f"tools:\n  lab: {{command: {LAB_CMD}}}\n"
        "plugins:\n  web: {}\n",
    )
    rt = await start(nursery, tmp_path)
    await wait_state(rt, ("a", "tools.lab"), ActorState.RUNNING)
    await wait_state(rt, ("a", "web"), ActorState.RUNNING)
    return rt


def server(rt: Runtime, name: str, agent: str = "a") -> McpServer:
    found = rt.service(agent, f"tools.{name}")
    assert isinstance(found, McpServer)
    return found


async def pgid_of(rt: Runtime, name: str) -> int:
    return int((await server(rt, name).call("family", {}))[0])


async def test_each_server_is_an_actor_and_an_edit_restarts_only_it(tmp_path: Path) -> None:
    text = f"tools:\n  lab: {{command: {LAB_CMD}, timeout: 20s}}\n  other: {{command: {LAB_CMD}}}\n"
    path = write(tmp_path, "a.yaml", text)
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("a", "tools.lab"), ActorState.RUNNING)
        await wait_state(rt, ("a", "tools.other"), ActorState.RUNNING)
        lab_group, other = await pgid_of(rt, "lab"), server(rt, "other")
        status = rt.table.get(("a", "tools.lab"))
        assert status is not None and (status.detail or "").startswith("10 tools: echo, wait")

        path.write_text(text.replace("timeout: 20s", "timeout: 25s"))
        await rt.apply([path])
        await wait_until(rt, lambda: rt.service("a", "tools.lab") is not None)
        assert wait_gone(lab_group), "the edited server's old process lives on"
        assert server(rt, "other") is other, "an unchanged server was restarted"
        assert server(rt, "lab").config.timeout == 25.0

        groups = [await pgid_of(rt, "lab"), await pgid_of(rt, "other")]
        path.unlink()
        await rt.apply([path])
        assert rt.table.get(("a", "tools.lab")) is None
        assert all(wait_gone(g) for g in groups), "a tool process outlived its agent"
        nursery.cancel_scope.cancel()


async def test_a_server_that_dies_is_restarted_with_backoff(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", f"tools:\n  lab: {{command: {LAB_CMD}}}\n")
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("a", "tools.lab"), ActorState.RUNNING)
        first = server(rt, "lab")
        os.killpg(await pgid_of(rt, "lab"), signal.SIGKILL)
        await wait_state(rt, ("a", "tools.lab"), ActorState.BACKOFF)
        status = rt.table.get(("a", "tools.lab"))
        assert status is not None and status.restarts == 1
        assert "exited" in (status.last_error or "")
        await wait_state(rt, ("a", "tools.lab"), ActorState.RUNNING)
        assert server(rt, "lab") is not first
        nursery.cancel_scope.cancel()


async def test_web_chat_shows_tool_use_and_the_api_and_metrics_say_what_ran(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    llm = FakeLLM(
        Plan(
            [
                {"tool_calls": [{"name": "lab__echo", "arguments": {"text": "secret-arg-99"}}]},
                {"reply": "The lab answered."},
            ]
        )
    )
    async with trio.open_nursery() as nursery:
        rt = await start_with_lab(nursery, tmp_path, llm)
        async with open_websocket_url(socket_url(rt, "a")) as ws:
            events = await ask(ws, "use the lab")
        assert events[:2] == [
            {"type": "tool", "name": "lab.echo", "state": "start"},
            {"type": "tool", "name": "lab.echo", "state": "done"},
        ]
        assert events[-1] == {"type": "done"}
        assert rt.status_url is not None
        async with httpx.AsyncClient(base_url=rt.status_url) as http:
            view = (await http.get("/api/agents/a")).json()["tools"]["lab"]
            metrics = (await http.get("/metrics")).text
        assert view["kind"] == "stdio" and view["state"] == "running"
        assert {"echo", "wait", "big"} <= set(view["tools"])
        line = 'voxbridge_tool_calls_total{agent="a",outcome="ok",tool="lab.echo"} 1.0'
        assert line in metrics
        assert "voxbridge_tool_seconds_count 1.0" in metrics
        nursery.cancel_scope.cancel()
    logged = [r.getMessage() for r in caplog.records if "lab.echo" in r.getMessage()]
    assert logged and "ok in" in logged[0]
    assert not any("secret-arg-99" in r.getMessage() for r in caplog.records)


def test_secrets_reach_only_the_servers_environment(tmp_path: Path, cli: CliRunner) -> None:
    """Encrypted env values open for the child alone: `voxbridge tools` shows the server
    working, neither it nor `check` prints the value."""
    keys = tmp_path / "keys"
    generate_key_pair(keys, "k")
    from voxbridge.secrets.keys import current_public_key

    token = seal("env-secret-value-31", current_public_key(keys).key, "tools.lab.env.LAB_TOKEN")
    write(
        tmp_path,
        "a.yaml",
        f"tools:\n  lab:\n    command: {LAB_CMD}\n    env: {{LAB_TOKEN: '{token}'}}\n",
    )
    checked = cli("check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    listed = cli("tools", "a", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "lab" in listed.stdout and "echo" in listed.stdout
    assert "env-secret-value-31" not in listed.stdout + listed.stderr


RUN = "voxbridge run --listen none --agents-dir agents.d --keys-dir keys --state-dir state"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_no_tool_process_outlives_voxbridge(tmp_path: Path, how: signal.Signals) -> None:
    generate_key_pair(tmp_path / "keys", "k")
    write(tmp_path, "a.yaml", f"tools:\n  lab: {{command: {LAB_CMD}}}\n")
    exe = Path(sys.executable).with_name("voxbridge")
    with subprocess.Popen(
        [str(exe), *RUN.split()[1:]],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        for line in proc.stderr:
            if "tools.lab ready" in line or time.monotonic() > deadline:
                break
        groups = _leash_groups(proc.pid)
        assert groups and all(group_alive(g) for g in groups)
        proc.send_signal(how)
        proc.communicate(timeout=30)
    assert proc.returncode == (0 if how == signal.SIGTERM else -signal.SIGKILL)
    assert all(wait_gone(g) for g in groups), f"a tool process outlived {how.name}"


def _leash_groups(parent: int) -> list[int]:
    """The process groups of the leashes ``parent`` started (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == parent and b"leash.py" in cmdline:
            found.append(int(stat[2]))
    return found


def test_tools_command_says_why_a_server_cannot_start(tmp_path: Path, cli: CliRunner) -> None:
    generate_key_pair(tmp_path / "keys", "k")
    write(
        tmp_path,
        "a.yaml",
        "tools:\n"
        "  time: {command: [mcp-server-time, --local-timezone, UTC]}\n"
        "  broken: {command: [no-such-mcp-server-program]}\n"
        "  refund:\n    n8n: http://127.0.0.1:9/webhook/x\n    description: Refund an order.\n",
    )
    listed = cli("tools", "a", cwd=tmp_path)
    assert listed.returncode == 78  # a plaintext n8n URL: the file does not load
    encrypted = cli("encrypt", "agents.d/a.yaml", cwd=tmp_path)
    assert encrypted.returncode == 0, encrypted.stderr
    listed = cli("tools", "a", cwd=tmp_path)
    assert listed.returncode == 1, listed.stdout  # one server cannot start
    out = listed.stdout
    assert "time.get_current_time" in out and "time.convert_time" in out
    assert "broken: cannot start: the command cannot be started" in out
    assert "refund (n8n workflow): Refund an order." in out
    json_out = cli("tools", "a", "--json", cwd=tmp_path)
    report = json.loads(json_out.stdout)
    assert report["time"]["tools"][0]["name"] == "get_current_time"
    assert report["broken"]["error"]


@needs_chromium
async def test_the_chat_page_and_the_dashboard_show_tools_as_text(tmp_path: Path) -> None:
    llm = FakeLLM(
        Plan(
            [
                {"tool_calls": [{"name": "lab__wait", "arguments": {"seconds": 1.5}}]},
                {"reply": "Waited **well**."},
            ]
        )
    )
    async with trio.open_nursery() as nursery:
        rt = await start_with_lab(nursery, tmp_path, llm)

        def browse() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with chromium_page() as page:
                page.goto(f"{rt.status_url}/chat/a")
                page.wait_for_selector("#state.on", timeout=10_000)
                page.fill("#text", "wait a bit")
                page.keyboard.press("Enter")
                page.wait_for_selector(".msg.tool", timeout=10_000)
                seen["during"] = page.inner_text(".msg.tool")
                page.wait_for_function(
                    "document.querySelector('.msg.tool').textContent.startsWith('used')"
                )
                page.wait_for_selector(".msg.agent:not(.writing)", timeout=10_000)
                seen["after"] = page.inner_text(".msg.tool")
                seen["children"] = page.eval_on_selector(".msg.tool", "e => e.children.length")
                seen["answer"] = page.inner_text(".msg.agent")
                page.goto(f"{rt.status_url}/")
                page.wait_for_selector('tr[data-plugin="tools.lab"]', timeout=10_000)
                seen["row"] = page.inner_text('tr[data-plugin="tools.lab"]')
            return seen

        seen = await trio.to_thread.run_sync(browse)
        nursery.cancel_scope.cancel()
    assert seen["during"] == "using lab.wait…"
    assert seen["after"] == "used lab.wait"
    assert seen["children"] == 0
    assert seen["answer"] == "Waited well."
    assert "running" in seen["row"] and "10 tools: echo" in seen["row"]


async def test_a_secret_a_server_prints_is_redacted_from_its_error(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_key_pair(keys, "k")
    from voxbridge.secrets.keys import current_public_key

    token = seal("lab-secret-token-77", current_public_key(keys).key, "tools.lab.env.LAB_TOKEN")
    exiting = f"[{sys.executable}, {LAB}, exit]"
    write(
        tmp_path,
        "a.yaml",
        f"tools:\n  lab:\n    command: {exiting}\n    env: {{LAB_TOKEN: '{token}'}}\n",
    )
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("a", "tools.lab"), ActorState.BACKOFF)
        status = rt.table.get(("a", "tools.lab"))
        assert status is not None and status.last_error is not None
        assert "status 3: lab: planned exit, token=[secret]" in status.last_error
        nursery.cancel_scope.cancel()


def test_voxbridge_status_shows_each_tool_server_as_a_row() -> None:
    from voxbridge.status import table

    agents = [
        {
            "id": "a",
            "plugins": {},
            "tools": {
                "lab": {"kind": "stdio", "state": "backoff", "restarts": 2, "last_error": "exited"},
                "refund": {"kind": "n8n", "state": "ready", "tools": ["refund"]},
            },
        }
    ]
    rows = table(agents).splitlines()
    assert len(rows) == 2  # the header, then the one server with an actor
    assert rows[1].split()[:5] == ["a", "-", "tools.lab", "backoff", "2"]
    assert rows[1].endswith("exited")


async def test_discord_shows_the_tool_line_then_the_answer(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.llm.plan = Plan(
        [
            {"tool_calls": [{"name": "lab__wait", "arguments": {"seconds": 1.2}}]},
            {"reply": "done waiting"},
        ]
    )
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", extra=f"tools:\n  lab: {{command: {LAB_CMD}}}\n")
        rt = await rig.start(nursery)
        await ready(rig, "a")
        await wait_state(rt, ("a", "tools.lab"), ActorState.RUNNING)
        msg = await rig.discord.send_message(
            "tok-a", content="wait", author_id=ANN, author_name="ann"
        )
        channel = int(msg["channel_id"])
        first = await rig.discord.wait_for(lambda r: r in rig.replies(channel))
        assert first.json["content"] == f"🔧 lab.wait…{CURSOR}"
        await rig.discord.wait_until(lambda: rig.discord.shown(channel, "tok-a") == "done waiting")
        assert len(rig.replies(channel)) == 1  # the same message, edited
        nursery.cancel_scope.cancel()
