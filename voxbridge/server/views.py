"""The JSON the status server answers with: agents and their actors, as the API shows them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..plugins.api import WebEndpoints
from ..secrets.crypto import Secret

if TYPE_CHECKING:
    from ..runtime.fleet import Runtime

__all__ = ["actor_view", "agent_view", "agents_view", "web_endpoints"]


def actor_view(runtime: Runtime, agent_id: str, plugin: str) -> dict[str, Any]:
    status = runtime.table.get((agent_id, plugin))
    if status is None:
        return {"state": "not running"}
    view = status.as_dict()
    del view["agent"], view["plugin"]
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
        "plugins": {
            t: (
                {"enabled": True, **actor_view(runtime, agent.id, t)}
                if p.enabled
                else {"enabled": False, "state": "disabled"}
            )
            for t, p in agent.plugins.items()
        },
    }


def agents_view(runtime: Runtime) -> list[dict[str, Any]]:
    """Every agent, loaded or not, by id."""
    ids = set(runtime.index.by_id) | {Path(f).stem for f in runtime.table.problems()}
    views = (agent_view(runtime, agent_id) for agent_id in sorted(ids))
    return [v for v in views if v is not None]


def web_endpoints(runtime: Runtime, agent_id: str) -> list[WebEndpoints]:
    """What the agent's running actors offer through the status server (pages, sockets)."""
    return [s for s in runtime.services_of(agent_id) if isinstance(s, WebEndpoints)]
