"""The ``web`` plugin type: talk to the agent in a browser, through the status server.

With ``plugins: {web: {enabled: true}}`` the status server serves ``GET /chat/<agent-id>`` (a chat
page) and ``WS /api/agents/<agent-id>/chat`` (SPEC §10's JSON protocol). The actor offers both
as a service (:class:`~voxbridge.plugins.api.WebEndpoints`) that the server finds through the
runtime; the server never imports this package.
"""

from __future__ import annotations

from ..api import Plugin

__all__ = ["PLUGIN"]

PLUGIN = Plugin(
    name="web",
    summary="A chat page for this agent on the status server (/chat/<agent-id>)",
    schema={"type": "object", "additionalProperties": False, "properties": {}},
    actor="voxbridge.plugins.web.actor:run",
)
