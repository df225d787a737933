"""MCP servers through the SDK on Trio: real child processes (``mcp-server-time``, the lab) and
a real streamable HTTP server on 127.0.0.1, each misbehaving in its own way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import sniffio
import trio

from tests.fake_brains import serve_app
from tests.mcp_lab import http_app
from voxbridge.config.model import ToolServerConfig
from voxbridge.errors import ToolServerError
from voxbridge.secrets.crypto import Secret
from voxbridge.tools.server import connect
from voxbridge.tools.stdio import MAX_MESSAGE

LAB = Path(__file__).with_name("mcp_lab.py")


def lab(mode: str = "stdio", **changes: Any) -> ToolServerConfig:
    return ToolServerConfig("lab", command=(sys.executable, str(LAB), mode), **changes)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pgid: int, limit_s: float = 10.0) -> bool:
    """Whether every process of group ``pgid`` is gone within ``limit_s`` (processes end on
    their own time: this polls the kernel, it tests no timing logic)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


async def test_the_sdk_runs_on_trio_as_it_is() -> None:
    """The SDK's own stdio client and session, unchanged, inside trio.run (pytest-trio)."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    assert sniffio.current_async_library() == "trio"
    params = StdioServerParameters(command="mcp-server-time", args=["--local-timezone", "UTC"])
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        result = await session.call_tool("get_current_time", {"timezone": "UTC"})
    assert {"get_current_time", "convert_time"} <= names
    assert not result.is_error


async def test_mcp_server_time_lists_and_answers_through_voxbridge() -> None:
    config = ToolServerConfig("time", command=("mcp-server-time", "--local-timezone", "UTC"))
    async with connect(config) as server:
        assert [t.name for t in server.tools] == ["get_current_time", "convert_time"]
        text, ok = await server.call("get_current_time", {"timezone": "Europe/Paris"})
        assert ok and '"timezone": "Europe/Paris"' in text
        text, ok = await server.call("get_current_time", {"timezone": "Nowhere/Atlantis"})
        assert not ok and "Nowhere/Atlantis" in text  # an error is a result, not a crash
        text, ok = await server.call("no_such_tool", {})
        assert not ok and text.startswith("error:")


async def test_allow_offers_only_the_tools_named() -> None:
    config = ToolServerConfig(
        "time", command=("mcp-server-time",), allow=("convert_time", "not_there")
    )
    async with connect(config) as server:
        assert [t.name for t in server.tools] == ["convert_time"]


async def test_tool_errors_are_results() -> None:
    async with connect(lab()) as server:
        text, ok = await server.call("fail", {})
        assert not ok and "Error executing tool fail" in text
        text, ok = await server.call("echo", {"wrong": 1})
        assert not ok and text  # invalid arguments: the server's words, for the LLM


async def test_a_server_that_cannot_start_says_why() -> None:
    with pytest.raises(ToolServerError, match=r"cannot be started: .*no-such-mcp-program"):
        async with connect(ToolServerConfig("x", command=("no-such-mcp-program",))):
            pass
    with pytest.raises(ToolServerError, match="status 3: lab: planned exit"):
        async with connect(lab("exit")):
            pass
    with pytest.raises(ToolServerError, match=r"cannot reach it \(ConnectError"):
        async with connect(ToolServerConfig("x", url="http://127.0.0.1:9/mcp")):
            pass
    with pytest.raises(ToolServerError, match="cwd /no/such/dir"):
        async with connect(lab(cwd="/no/such/dir")):
            pass


async def test_invalid_json_rpc_and_an_endless_line_end_the_connection() -> None:
    with pytest.raises(ToolServerError, match="not JSON-RPC"):
        async with connect(lab("garbage")):
            pass
    with pytest.raises(ToolServerError, match=f"over {MAX_MESSAGE >> 20} MiB"):
        async with connect(lab("huge-line")):
            pass


async def test_the_environment_is_the_servers_own() -> None:
    os.environ["VOXBRIDGE_TEST_LEAK"] = "voxbridge-env-must-not-reach-tools"
    try:
        config = lab(env=MappingProxyType({"LAB_TOKEN": Secret("lab-token-in-env-only")}))
        async with connect(config) as server:
            assert await server.call("env", {"name": "LAB_TOKEN"}) == (
                "lab-token-in-env-only",
                True,
            )
            assert await server.call("env", {"name": "VOXBRIDGE_TEST_LEAK"}) == ("", True)
            assert (await server.call("env", {"name": "PATH"}))[0]
    finally:
        del os.environ["VOXBRIDGE_TEST_LEAK"]


async def test_list_changed_is_heard() -> None:
    async with connect(lab()) as server:
        assert "extra" not in [t.name for t in server.tools]
        assert await server.call("grow", {}) == ("grown", True)
        with trio.fail_after(10):
            await server.changed.wait()
        await server.refresh()
        assert "extra" in [t.name for t in server.tools]
        assert await server.call("extra", {}) == ("extra here", True)


async def test_a_notification_flood_is_slowed_not_swallowed_whole() -> None:
    async with connect(lab()) as server:
        started = trio.current_time()
        text, ok = await server.call("flood", {"count": 400})
        took = trio.current_time() - started
    assert ok and text == "sent 400"
    assert server.notifications >= 400
    # 200 pass at once (the burst), the rest at 50 a second: the server waited for us.
    assert took >= (400 - 200) / 50 * 0.8


async def test_stopping_takes_the_whole_process_group_down() -> None:
    async with connect(lab()) as server:
        pgid = int((await server.call("family", {}))[0])
        assert group_alive(pgid)
    assert wait_gone(pgid)


@pytest.fixture
async def http_lab(nursery: trio.Nursery) -> tuple[str, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    app = http_app()

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            seen.append(headers)
            if headers.get("authorization") != "Bearer lab-http-token-42":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"no"})
                return
        await app(scope, receive, send)

    base = await nursery.start(serve_app, guarded)
    return f"{base}/mcp", seen


async def test_streamable_http_with_secret_headers(
    http_lab: tuple[str, list[dict[str, str]]],
) -> None:
    url, seen = http_lab
    headers = MappingProxyType({"Authorization": Secret("Bearer lab-http-token-42")})
    config = ToolServerConfig("lab", url=url, headers=headers)
    async with connect(config) as server:
        assert "echo" in [t.name for t in server.tools]
        assert await server.call("echo", {"text": "over http"}) == ("over http", True)
        text, ok = await server.call("big", {"kib": 64})
        assert ok and len(text) == 64 * 1024
    assert seen and all(h.get("authorization") == "Bearer lab-http-token-42" for h in seen)
    with pytest.raises(ToolServerError):
        async with connect(ToolServerConfig("lab", url=url, timeout=5)):
            pass  # no token: refused, and said so


async def test_a_huge_http_response_is_cut_off(http_lab: tuple[str, list[dict[str, str]]]) -> None:
    url, _ = http_lab
    headers = MappingProxyType({"Authorization": Secret("Bearer lab-http-token-42")})
    async with connect(ToolServerConfig("lab", url=url, headers=headers, timeout=20)) as server:
        text, ok = await server.call("big", {"kib": (MAX_MESSAGE >> 10) + 512})
        assert not ok and text.startswith("error:")
        assert await server.call("echo", {"text": "still here"}) == ("still here", True)


ORPHAN = textwrap.dedent(
    """
    import sys, trio
    from voxbridge.config.model import ToolServerConfig
    from voxbridge.tools.server import connect

    async def main():
        config = ToolServerConfig("lab", command=(sys.executable, sys.argv[1]))
        async with connect(config) as server:
            print((await server.call("family", {}))[0], flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


def test_a_sigkilled_voxbridge_leaves_no_tool_process() -> None:
    """The leash: nothing of the server's group survives its parent's SIGKILL."""
    with subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(LAB)], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        pgid = int(parent.stdout.readline())
        assert group_alive(pgid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert wait_gone(pgid), "a tool process outlived voxbridge's SIGKILL"
