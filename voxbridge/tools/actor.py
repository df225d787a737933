"""A tool server's actor: one per MCP server of an agent, supervised like a plugin's.

It connects (a stdio server is started as a child process), offers the server to the agent's
answers while it runs (``ctx.provide``), lists its tools again whenever the server says they
changed, and raises when the connection ends, so the supervisor restarts it with backoff. Its
row in the state table is ``(agent, "tools.<name>")``: the same states, restarts and metrics as
a plugin's, and an edit of one server's section restarts that actor alone.
"""

from __future__ import annotations

import trio

from ..config.model import ToolServerConfig
from ..errors import ToolServerError
from ..plugins.api import Context
from .server import McpServer, connect

__all__ = ["describe", "run"]

REFRESH_GAP = 1.0  # seconds between two listings: a server announcing changes endlessly is slowed


def describe(server: McpServer) -> str:
    """The health note: which tools the server offers."""
    names = [t.name for t in server.tools]
    if not names:
        allowed = server.config.allow
        return f"offers none of allow: {', '.join(allowed)}" if allowed else "offers no tools"
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"{len(names)} tool{'s' if len(names) != 1 else ''}: {shown}"


async def run(
    config: ToolServerConfig, ctx: Context, *, task_status: trio.TaskStatus[None]
) -> None:
    """Serve the tool server ``config`` for the agent's answers until cancelled.

    Raises:
        ToolServerError: it cannot start, or its connection ended (the process exited).
    """
    async with connect(config) as server:
        with ctx.provide(server):
            ctx.note(describe(server))
            task_status.started()
            while True:
                async with trio.open_nursery() as nursery:

                    async def ended() -> None:
                        await server.ended.wait()
                        nursery.cancel_scope.cancel()

                    async def changed() -> None:
                        await server.changed.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(ended)
                    nursery.start_soon(changed)
                if server.ended.is_set():
                    raise ToolServerError(server.why)
                server.changed = trio.Event()
                await server.refresh()
                ctx.log.info("🔧 %s: its tools changed (%s)", ctx.plugin, describe(server))
                ctx.note(describe(server))
                await trio.sleep(REFRESH_GAP)  # changes announced meanwhile: one more listing
