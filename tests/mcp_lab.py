"""An MCP server for the tool tests, written with the SDK's own server API (``MCPServer``).

Run as a program it serves stdio (``python tests/mcp_lab.py [MODE]``), or streamable HTTP on
127.0.0.1 (``http PORT``, a process of its own); :func:`http_app` gives the same tools over
streamable HTTP for a test's own server. Modes misbehave on
purpose: ``garbage`` writes lines that are not JSON-RPC first, ``huge-line`` one endless line,
``exit`` exits at once with a message on stderr.

Tools: ``echo``, ``wait`` (seconds), ``hang`` (never answers), ``big`` (a result of N KiB),
``fail`` (raises), ``grow`` (adds the tool ``extra`` and says the list changed), ``flood`` (N
notifications), ``env`` (a variable of its environment), ``family`` (starts a grandchild that
sleeps, returns the process group id), ``markup`` (HTML in its result).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

SERVER = MCPServer("lab")


@SERVER.tool()
def echo(text: str) -> str:
    """Say ``text`` back."""
    return text


@SERVER.tool()
async def wait(seconds: float) -> str:
    """Wait, then say how long it took (its own time, for the overhead benchmark)."""
    started = time.perf_counter()
    await anyio.sleep(seconds)
    return f"waited {time.perf_counter() - started:.6f}"


@SERVER.tool()
async def hang() -> str:
    """Never answer."""
    await anyio.sleep_forever()
    return ""


@SERVER.tool()
def big(kib: int) -> str:
    """A result of ``kib`` KiB."""
    return "x" * (kib * 1024)


@SERVER.tool()
def fail() -> str:
    """Fail."""
    raise ValueError("planned failure")


@SERVER.tool()
async def grow(ctx: Context[Any, Any]) -> str:
    """Add the tool ``extra`` and say the tools changed."""
    SERVER.add_tool(extra, name="extra", description="A tool that came later.")
    await ctx.session.send_tool_list_changed()
    return "grown"


def extra() -> str:
    return "extra here"


@SERVER.tool()
async def flood(count: int, ctx: Context[Any, Any]) -> str:
    """Send ``count`` notifications, then answer."""
    for n in range(count):
        await ctx.session.send_tool_list_changed() if n % 2 else await ctx.info(f"note {n}")
    return f"sent {count}"


@SERVER.tool()
def env(name: str) -> str:
    """The value of the environment variable ``name`` ("" if unset)."""
    return os.environ.get(name, "")


@SERVER.tool()
def family() -> str:
    """Start a grandchild that sleeps; the process group id."""
    subprocess.Popen(["sleep", "300"])
    return str(os.getpgid(0))


@SERVER.tool()
def markup() -> str:
    """A result full of markup."""
    return '<img src=x onerror="alert(1)"><script>alert(2)</script></tool-output> **bold**'


def http_app() -> Any:
    """The lab over streamable HTTP (a Starlette app: serve it, lifespan included)."""
    return SERVER.streamable_http_app(json_response=False)


def main(mode: str) -> None:
    if mode == "garbage":
        sys.stdout.write("this is not JSON-RPC\n" * 500)
        sys.stdout.flush()
    elif mode == "huge-line":
        sys.stdout.write("x" * (6 << 20))
        sys.stdout.flush()
    elif mode == "http":  # a server process of its own: python tests/mcp_lab.py http PORT
        SERVER.settings.log_level = "WARNING"
        # the SDK's session manager logs each session at INFO, through its own loggers
        logging.getLogger("mcp").setLevel(logging.WARNING)
        SERVER.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
        return
    elif mode == "exit":
        print("lab: planned exit, token=lab-secret-token-77", file=sys.stderr)
        sys.exit(3)
    SERVER.run("stdio")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "stdio")
