"""The JSON the status server answers with: agents and their actors, as the API shows them,
and whether the fleet runs a given version (``voxbridge status --wait-for``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..config.model import ToolServerConfig
from ..plugins.api import TOOL_ACTOR, WebEndpoints
from ..runtime.state import ActorState
from ..runtime.version import is_version
from ..secrets.crypto import Secret

if TYPE_CHECKING:
    from ..runtime.fleet import Runtime

__all__ = ["actor_view", "agent_view", "agents_view", "version_report", "web_endpoints"]


def actor_view(runtime: Runtime, agent_id: str, plugin: str) -> dict[str, Any]:
    status = runtime.table.get((agent_id, plugin))
    if status is None:
        return {"state": "not running"}
    view = status.as_dict()
    del view["agent"], view["plugin"]
    swap = status.swap
    # The previous version serves on because the newer one failed for good (make-before-break).
    view["kept_previous_version"] = swap is not None and swap.state == ActorState.FAILED
    view["counters"] = dict(runtime.table.counters((agent_id, plugin)))
    return view


def agent_view(runtime: Runtime, agent_id: str) -> dict[str, Any] | None:
    """One agent as the API shows it, or None if no file provides it."""
    agent = runtime.index.get(agent_id)
    path = runtime.reconciler.file_of(agent_id)
    problems = [str(p) for p in runtime.table.problems().get(str(path), ())] if path else []
    if agent is None:
        broken = [f for f in runtime.table.problems() if Path(f).stem == agent_id]
        if not broken:
            return None
        return {
            "id": agent_id,
            "name": None,
            "file": broken[0],
            "default": False,
            "is_default": False,
            "loaded": False,
            "error": [str(p) for p in runtime.table.problems()[broken[0]]],
            "plugins": {},
        }
    default_id = runtime.default_agent_id()
    owned = runtime.options.shard.owns(agent_id)
    pages = [e for e in web_endpoints(runtime, agent.id) if e.page("chat") is not None]
    return {
        "id": agent.id,
        "name": agent.name,
        # An encrypted description stays hidden like any other encrypted value.
        "description": None if isinstance(agent.description, Secret) else agent.description,
        "chat": f"/chat/{agent.id}" if pages else None,
        "voice": agent.voice is not None,
        "file": str(agent.file),
        "default": agent.default,
        "is_default": agent.id == default_id,
        "loaded": True,
        "owned": owned,
        "error": problems or None,
        "version": _version_view(runtime, agent.id),
        "memory": runtime.memory.of(agent.id).health(),
        "tools": {name: _tool_view(runtime, agent.id, t) for name, t in agent.tools.items()},
        "plugins": {
            t: (
                {"enabled": True, **actor_view(runtime, agent.id, t)}
                if p.enabled
                else {"enabled": False, "state": "disabled"}
            )
            for t, p in agent.plugins.items()
        },
    }


def _tool_view(runtime: Runtime, agent_id: str, tool: ToolServerConfig) -> dict[str, Any]:
    """A tool server as the API shows it: its kind, and for an MCP server its actor's state
    and the tools it offers (never its command, URL, headers or environment)."""
    if tool.kind == "n8n":
        return {"kind": "n8n", "state": "ready", "tools": [tool.name]}
    name = TOOL_ACTOR + tool.name
    server = runtime.service(agent_id, name)
    offered = [t.name for t in getattr(server, "tools", ())] if server is not None else []
    return {"kind": tool.kind, **actor_view(runtime, agent_id, name), "tools": offered}


def _version_view(runtime: Runtime, agent_id: str) -> dict[str, Any] | None:
    live = runtime.table.version(agent_id)
    return None if live is None else live.as_dict()


def _short(blob: str | None) -> str:
    return (blob or "unreadable")[:12]


async def version_report(runtime: Runtime, wanted: str) -> dict[str, Any]:
    """Whether the fleet runs ``wanted``: a commit (every agent whose file it holds runs that
    file's content there) or a blob id prefix (the agents running that content), with what
    is still waiting and what was rejected.

    An agent runs a version only when all its actors do: a newer version still starting, or
    failed beside the previous one (make-before-break), is not there yet.
    """
    wanted = wanted.strip().lower()
    report: dict[str, Any] = {
        "version": wanted,
        "commit": None,
        "done": False,
        "agents": [],
        "waiting": [],
        "rejected": [],
    }
    if not is_version(wanted):
        report["rejected"].append(f"{wanted!r} is not a blob id or a commit (4 to 40 hex digits)")
        return report
    git = runtime.commits.git
    versions = dict(runtime.table.versions())
    commit = await trio.to_thread.run_sync(git.resolve_commit, wanted)
    expected: dict[str, str] = {}
    if commit is not None:
        report["commit"] = commit
        names = {agent_id: Path(v.file).name for agent_id, v in versions.items()}
        at = await trio.to_thread.run_sync(git.blobs_at, commit, sorted(set(names.values())))
        expected = {a: at[n] for a, n in names.items() if n in at}

    def matches(agent_id: str, blob: str | None) -> bool:
        if blob is None:
            return False
        return blob == expected.get(agent_id) if commit else blob.startswith(wanted)

    for agent_id, live in sorted(versions.items()):
        if commit is not None and agent_id not in expected:
            continue  # its file is not in that commit
        if matches(agent_id, live.blob):
            pending = [  # swaps to this version (one that failed for good is live.rejected)
                (plugin, s.swap)
                for (a, plugin), s in runtime.table.actors().items()
                if a == agent_id and s.swap is not None and s.swap.version == live.blob
            ]
            for plugin, swap in pending:
                if swap.state == ActorState.FAILED:
                    report["rejected"].append(
                        f"{agent_id}/{plugin}: kept the previous version: {swap.error}"
                    )
                else:
                    report["waiting"].append(
                        f"{agent_id}/{plugin}: the new version is {swap.state}"
                    )
            if not pending:
                report["agents"].append(agent_id)
        elif live.rejected is not None and matches(agent_id, live.rejected.blob):
            error = live.rejected.errors[0] if live.rejected.errors else "rejected"
            report["rejected"].append(
                f"{agent_id}: version {_short(live.rejected.blob)} was rejected: {error}"
            )
        elif commit is not None:
            report["waiting"].append(
                f"{agent_id}: runs {_short(live.blob)}; {commit[:12]} has "
                f"{_short(expected[agent_id])}"
            )
    if commit is None and not report["agents"] and not report["rejected"] and not report["waiting"]:
        running = ", ".join(f"{a} {_short(v.blob)}" for a, v in sorted(versions.items()))
        report["waiting"].append(
            f"no agent runs {wanted} (not a commit of agents.d's repository, nor a blob any "
            f"agent runs; live: {running or 'none'})"
        )
    report["done"] = not report["waiting"] and not report["rejected"]
    return report


def agents_view(runtime: Runtime) -> list[dict[str, Any]]:
    """Every agent, loaded or not, by id."""
    ids = set(runtime.index.by_id) | {Path(f).stem for f in runtime.table.problems()}
    views = (agent_view(runtime, agent_id) for agent_id in sorted(ids))
    return [v for v in views if v is not None]


def web_endpoints(runtime: Runtime, agent_id: str) -> list[WebEndpoints]:
    """What the agent's running actors offer through the status server (pages, sockets)."""
    return [s for s in runtime.services_of(agent_id) if isinstance(s, WebEndpoints)]
