"""An agent's tool servers without a runtime: ``voxbridge chat`` and ``talk`` use its tools
in-process, ``voxbridge tools AGENT`` lists what each server offers (or why it cannot start).

Every server is connected at once; one that cannot start is reported and the others serve. The
servers stop (process group and all) when the block ends.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio

from ..config.model import Agent, ToolServerConfig
from ..errors import ToolServerError
from ..runtime.supervisor import redact
from .toolbox import AgentToolbox

if TYPE_CHECKING:
    from .server import McpServer

__all__ = ["Servers", "open_servers", "open_toolbox", "tools_command"]

log = logging.getLogger("voxbridge.tools")


@dataclass
class Servers:
    """An agent's MCP servers, as far as they started: the running ones and why the others
    did not (redacted)."""

    running: dict[str, McpServer] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


@asynccontextmanager
async def open_servers(agent: Agent) -> AsyncIterator[Servers]:
    """Connect every MCP server of ``agent`` at once; the lot while the block runs."""
    from .server import connect  # the MCP SDK: loaded only for an agent with servers

    servers = Servers()

    async def hold(config: ToolServerConfig, *, task_status: trio.TaskStatus[None]) -> None:
        started = False
        try:
            async with connect(config) as server:
                servers.running[config.name] = server
                task_status.started()
                started = True
                await trio.sleep_forever()
        except ToolServerError as exc:
            servers.running.pop(config.name, None)
            servers.failed[config.name] = redact(str(exc), agent)
            if not started:
                task_status.started()

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as starting:  # all at once; on when each is up or out
            for config in agent.tools.values():
                if config.kind != "n8n":
                    starting.start_soon(nursery.start, hold, config)
        try:
            yield servers
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_toolbox(
    agent: Agent, http: httpx.AsyncClient
) -> AsyncIterator[Callable[[], AgentToolbox | None]]:
    """The agent's tools for an in-process command: a factory of toolboxes (one per answer;
    None for an agent without tools). A server that cannot start is logged, not fatal."""
    if not agent.tools:
        yield lambda: None
        return
    async with open_servers(agent) as servers:
        for name, why in servers.failed.items():
            log.warning("⚠️ tool server %s cannot start: %s", name, why)
        yield lambda: AgentToolbox(agent, servers.running.get, http)


def tools_command(agents_dir: Path, keys_dir: Path, wanted: str, as_json: bool) -> int:
    """``voxbridge tools AGENT``: each server's tools, or why it cannot start; exit 1 if any
    cannot.

    Raises:
        UsageError, ConfigError: the agent cannot be found or loaded.
    """
    from ..terminal import find_agent

    agent = find_agent(agents_dir, keys_dir, wanted)

    async def main() -> Servers:
        async with open_servers(agent) as servers:
            return Servers(dict(servers.running), dict(servers.failed))

    servers = trio.run(main)
    report: dict[str, Any] = {}
    for name, config in agent.tools.items():
        if config.kind == "n8n":
            report[name] = {
                "kind": "n8n",
                "tools": [{"name": name, "description": config.description}],
            }
        elif name in servers.running:
            offered = [
                {"name": t.name, "description": t.description} for t in servers.running[name].tools
            ]
            report[name] = {"kind": config.kind, "tools": offered}
        else:
            report[name] = {"kind": config.kind, "error": servers.failed.get(name, "not started")}
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        _print(agent, report)
    return 1 if servers.failed else 0


def _print(agent: Agent, report: dict[str, Any]) -> None:
    if not report:
        print(f"{agent.id} has no tools (add a tools: section to {agent.file})")
    for name, entry in report.items():
        if "error" in entry:
            print(f"✗ {name}: cannot start: {entry['error']}")
        elif entry["kind"] == "n8n":
            print(f"✓ {name} (n8n workflow): {entry['tools'][0]['description']}")
        else:
            print(f"✓ {name} ({entry['kind']}): {len(entry['tools'])} tools")
            for tool in entry["tools"]:
                first = (tool["description"] or "").strip().splitlines()
                print(f"    {name}.{tool['name']}" + (f" — {first[0]}" if first else ""))
    sys.stdout.flush()
