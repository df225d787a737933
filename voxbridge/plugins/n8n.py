"""The ``n8n`` plugin type: the agent's brain reached through an n8n webhook."""

from __future__ import annotations

from .api import Plugin

__all__ = ["PLUGIN"]

PLUGIN = Plugin(
    name="n8n",
    summary="An n8n workflow as the agent's brain (primary, or fallback when the LLM fails)",
    schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "webhook_url": {
                "description": "The workflow's webhook URL (a capability: kept encrypted).",
                "type": "string",
                "x-secret": True,
            },
            "mode": {
                "description": "primary: n8n answers; fallback: used when the LLM fails.",
                "enum": ["primary", "fallback"],
            },
            "timeout": {"$ref": "#/$defs/duration", "description": "Per request. Default 60s."},
        },
        "required": ["webhook_url"],
    },
    actor="voxbridge.plugins.n8n_webhook:run",
)
