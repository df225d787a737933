"""The ``n8n`` actor: owns the HTTP client to the agent's webhook and offers it as a brain."""

from __future__ import annotations

import httpx
import trio

from ..brain import N8nClient
from ..config.duration import parse_duration
from .api import Context

__all__ = ["run"]


async def run(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    """Serve brain requests for the agent's other actors until cancelled.

    It does not call the webhook to prove it works: a workflow call has effects. Its health
    note says how the last call went.
    """
    settings = ctx.config.settings
    timeout = parse_duration(settings.get("timeout", 60.0))
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0)) as http:
        client = N8nClient.from_settings(http, settings, on_result=ctx.note)
        with ctx.provide(client):
            ctx.note(f"mode {settings.get('mode', 'fallback')}; no call yet")
            task_status.started()
            await trio.sleep_forever()
