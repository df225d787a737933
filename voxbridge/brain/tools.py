"""Tools as the brain sees them: the calls an LLM asks for, what is shown of them, and one round.

The brain knows a :class:`Toolbox` only through this protocol (what to offer the LLM, how to run
one call); the MCP servers and n8n workflows behind it live in :mod:`voxbridge.tools`. A round
runs every call the LLM asked for at once, in a nursery: each call is bounded by its own
timeout inside the toolbox, and leaving the answer cancels them all with it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import trio

__all__ = ["ToolCall", "ToolResult", "ToolUse", "Toolbox", "run_round"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the LLM asked for: its id (answered with the result), the tool's name as the
    LLM knows it, and the arguments as the JSON text the LLM wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a call gave: the text for the LLM (already capped and marked as untrusted), and
    whether it worked (an error is a result too: the LLM reads it and goes on)."""

    text: str
    ok: bool


@dataclass(frozen=True, slots=True)
class ToolUse:
    """What people see of a call: ``name`` as ``server.tool``, ``state`` ``start``, ``done``
    or ``error``. Never its arguments nor its result."""

    name: str
    state: Literal["start", "done", "error"]
    call_id: str = ""


class Toolbox(Protocol):
    """An agent's tools for one answer."""

    def specs(self) -> Sequence[Mapping[str, Any]]:
        """The OpenAI ``tools`` field: every tool on offer now (empty: none)."""
        ...

    def shown(self, name: str) -> str:
        """The name people see for the LLM's name of a tool (``time.get_current_time``)."""
        ...

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one call within its timeout; failures come back as a result, never raised.

        Cancellation: the call is cancelled (a stdio server is told so).
        """
        ...


async def run_round(
    toolbox: Toolbox, calls: Sequence[ToolCall], show: Callable[[ToolUse], Awaitable[None]]
) -> list[dict[str, Any]]:
    """Run ``calls`` concurrently; the ``tool`` messages that answer them, in their order.

    ``show`` is told when each starts and ends.
    """
    results: list[ToolResult | None] = [None] * len(calls)

    async def one(i: int, call: ToolCall) -> None:
        name = toolbox.shown(call.name)
        await show(ToolUse(name, "start", call.id))
        result = await toolbox.call(call)
        results[i] = result
        await show(ToolUse(name, "done" if result.ok else "error", call.id))

    async with trio.open_nursery() as nursery:
        for i, call in enumerate(calls):
            nursery.start_soon(one, i, call)
    return [
        {"role": "tool", "tool_call_id": call.id, "content": result.text if result else ""}
        for call, result in zip(calls, results, strict=True)
    ]


def asked(calls: Sequence[ToolCall], text: str) -> dict[str, Any]:
    """The assistant message that asked for ``calls`` (with any text it wrote beside them)."""
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in calls
        ],
    }


def arguments(call: ToolCall) -> dict[str, Any]:
    """The call's arguments as a mapping.

    Raises:
        ValueError: they are not a JSON object (the LLM wrote something else).
    """
    if not call.arguments.strip():
        return {}
    value = json.loads(call.arguments)
    if not isinstance(value, dict):
        raise ValueError(f"arguments must be a JSON object, not {type(value).__name__}")
    return value
