"""One connected MCP server: its tools, and calls to them, through the SDK's ``ClientSession``.

The SDK is anyio, so its session runs in Trio's nursery as it is. Between the transport and
the session sits a guard: notifications beyond :data:`NOTIFY_RATE` a second are slowed down
(the pipe fills and the server waits: a flood costs it, not the process every agent shares),
items that are not messages are counted and dropped, and the end of the stream is noticed
(the actor then restarts the server with backoff).

A call never raises for what the server did: an error, a timeout, a broken connection become
a result the LLM reads (``error: ...``), and the answer goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp_types
import trio
from anyio.streams.memory import MemoryObjectSendStream
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from ..config.model import ToolServerConfig, reveal
from ..errors import ToolServerError
from .http import connect_http
from .stdio import INVALID_LIMIT, spawn

__all__ = ["NOTIFY_RATE", "McpServer", "McpTool", "connect"]

log = logging.getLogger("voxbridge.tools")

NOTIFY_RATE = 50.0
"""Notifications a second a server may send, on average, before it is slowed down."""
NOTIFY_BURST = 200


@dataclass(frozen=True, slots=True)
class McpTool:
    """One tool a server offers: its name there, what it says it does, its input schema."""

    name: str
    description: str
    schema: Mapping[str, Any]


class McpServer:
    """A connected server. :attr:`tools` is its current list (``allow`` applied)."""

    def __init__(self, config: ToolServerConfig, session: ClientSession) -> None:
        self.config = config
        self._session = session
        self.tools: tuple[McpTool, ...] = ()
        self.changed = trio.Event()
        """Set when the server says its tools changed (``notifications/tools/list_changed``)."""
        self.ended = trio.Event()
        """Set when the connection ended (the process exited, the stream broke)."""
        self.why = "the connection ended"
        """Why it ended, for operators (a server's stderr may quote its secrets: redact)."""
        self.explain: Callable[[], str] = lambda: "the connection ended"
        self.notifications = 0
        self.invalid = 0

    async def refresh(self) -> None:
        """Ask the server for its tools again (every page of the list).

        Raises:
            ToolServerError: it answered with an error or in an invalid shape.
        """
        tools: list[McpTool] = []
        cursor: str | None = None
        try:
            for _ in range(100):  # a server whose pages never end does not hang us
                params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
                listed = await self._session.list_tools(params=params)
                tools += [
                    McpTool(t.name, t.description or "", t.input_schema)
                    for t in listed.tools
                    if self.config.allows(t.name)
                ]
                cursor = listed.next_cursor
                if not cursor:
                    break
        except (MCPError, ValidationError) as exc:
            raise ToolServerError(f"tools/list failed: {_said(exc)}") from None
        self.tools = tuple(tools)

    async def call(self, tool: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        """Call ``tool`` (its name on this server); its text and whether it worked.

        Cancellation: the request is abandoned (the SDK tells the server it was cancelled).
        """
        if self.ended.is_set():
            return "error: the tool server is not running (it is being restarted)", False
        try:
            result = await self._session.call_tool(tool, dict(arguments))
        except MCPError as exc:
            return f"error: {_said(exc)}", False
        except (ValidationError, RuntimeError) as exc:
            return f"error: the server answered in an invalid shape ({type(exc).__name__})", False
        return _text(result), not result.is_error

    async def _on_message(self, message: object) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self.changed.set()

    async def guard(
        self, source: AsyncIterator[SessionMessage | Exception], sink: MemoryObjectSendStream[Any]
    ) -> None:
        """Transport → session, slowing a flood of notifications, dropping what is not a
        message; marks :attr:`ended` when the transport's stream ends."""
        tokens, last = float(NOTIFY_BURST), trio.current_time()
        try:
            async with sink, _closing(source):
                async for item in source:
                    if isinstance(item, Exception):
                        self.invalid += 1
                        if self.invalid > INVALID_LIMIT:
                            raise ToolServerError(f"over {INVALID_LIMIT} invalid messages")
                        continue
                    if isinstance(item.message, mcp_types.JSONRPCNotification):
                        self.notifications += 1
                        now = trio.current_time()
                        tokens = min(NOTIFY_BURST, tokens + (now - last) * NOTIFY_RATE)
                        last = now
                        if tokens < 1:
                            await trio.sleep((1 - tokens) / NOTIFY_RATE)
                            tokens, last = 1.0, trio.current_time()
                        tokens -= 1
                    await sink.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the session is gone: we are stopping
        finally:
            self.why = self.explain()
            self.ended.set()


@asynccontextmanager
async def _closing(stream: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await stream.aclose()


def _said(exc: BaseException) -> str:
    """What an SDK error says, short (a server's message may be long)."""
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _text(result: mcp_types.CallToolResult) -> str:
    """A result as text: text parts as they are, anything else named."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource) and isinstance(
            block.resource, mcp_types.TextResourceContents
        ):
            parts.append(block.resource.text)
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[a resource: {block.uri}]")
        else:
            mime = getattr(block, "mime_type", None) or getattr(
                getattr(block, "resource", None), "mime_type", ""
            )
            parts.append(f"[{block.type} {mime or ''} not shown]".replace("  ", " "))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


Explained = tuple[Any, Any, Callable[[], str]]  # read stream, write stream, why it ended


def _transport(config: ToolServerConfig) -> AbstractAsyncContextManager[Explained]:
    if config.kind == "stdio":
        env = {k: v.reveal() for k, v in config.env.items()}

        command = [reveal(part) for part in config.command]
        cwd = reveal(config.cwd) if config.cwd is not None else None

        @asynccontextmanager
        async def stdio() -> AsyncIterator[Explained]:
            async with spawn(command, env, cwd) as pipes:
                yield pipes.read, pipes.write, pipes.explain

        return stdio()
    assert config.url is not None
    url = reveal(config.url)
    headers = {k: v.reveal() for k, v in config.headers.items()}

    @asynccontextmanager
    async def http() -> AsyncIterator[Explained]:
        async with connect_http(url, headers, config.timeout) as (read, write):
            yield read, write, lambda: "the HTTP stream ended"

    return http()


@asynccontextmanager
async def connect(config: ToolServerConfig) -> AsyncIterator[McpServer]:
    """Start or reach the server, initialize a session and list its tools; the server while
    the block runs, stopped when it ends.

    Raises:
        ToolServerError: it cannot be started or reached, or does not answer in time.

    Cancellation: the connection is closed and a child process stopped (bounded).
    """
    try:
        async with _session(config) as server:
            yield server
    except BaseExceptionGroup as group:
        only = _only(group)
        if isinstance(only, ToolServerError):
            raise only from None
        if isinstance(only, httpx2.TransportError):
            raise ToolServerError(f"cannot reach it ({type(only).__name__}: {only})") from None
        raise


def _only(exc: BaseException) -> BaseException:
    """The one exception inside nested groups of one (nurseries wrap what they re-raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def _session(config: ToolServerConfig) -> AsyncIterator[McpServer]:
    async with _transport(config) as (read, write, explain), trio.open_nursery() as nursery:
        sink, guarded = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        server: McpServer | None = None

        async def handler(message: object) -> None:
            if server is not None:
                await server._on_message(message)

        session = ClientSession(guarded, write, message_handler=handler)
        server = McpServer(config, session)
        server.explain = explain
        nursery.start_soon(server.guard, read, sink)
        async with guarded, session:
            try:
                with trio.fail_after(config.timeout):
                    init = await _first(session.initialize(), server)
                    if init.capabilities.tools is not None:
                        await _first(server.refresh(), server)
            except trio.TooSlowError:
                raise ToolServerError(
                    f"no answer to initialize within {config.timeout:g}s"
                ) from None
            except (MCPError, ValidationError, RuntimeError) as exc:
                raise ToolServerError(f"initialize failed: {_said(exc)}") from None
            yield server
        nursery.cancel_scope.cancel()


async def _first(step: Any, server: McpServer) -> Any:
    """``step``, or why the connection ended under it (a server that exits at once)."""
    try:
        return await step
    except MCPError:
        with trio.move_on_after(1.0):
            await server.ended.wait()
        if server.ended.is_set():
            raise ToolServerError(server.why) from None
        raise
