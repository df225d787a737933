"""An agent's tools for one answer: what the LLM is offered, and each call run, bounded, shown.

Tools reach the LLM as ``<server>__<tool>`` (OpenAI's names allow ``[a-zA-Z0-9_-]{1,64}``, no
dots); people see ``server.tool``. A call runs within its server's ``timeout``; whatever
happens — an error, a timeout, a server that is down, arguments that are not JSON — becomes a
result the LLM reads. Results are cut to :data:`RESULT_LIMIT` bytes and wrapped in a
``<tool-output>`` element the system prompt calls untrusted data (a result cannot close the
element early: the tag's name is defused inside it). Each call is logged with the tool, its
duration and outcome — never its arguments nor its result — and counted for ``/metrics``.

MCP servers are found through ``server_of`` (their actors provide them while they run); n8n
tools need no actor: each call is one POST to the workflow's webhook (not retried: a workflow
has effects).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import trio

from ..brain.n8n import parse_n8n
from ..brain.tools import ToolCall, ToolResult, arguments
from ..config.model import Agent, ToolServerConfig
from ..errors import BrainError

__all__ = ["RESULT_LIMIT", "AgentToolbox", "Record", "llm_name", "mark", "tool_spec"]

log = logging.getLogger("voxbridge.tools")

RESULT_LIMIT = 16 * 1024
"""Bytes of one tool result the LLM gets, at most."""
_ILLEGAL = re.compile(r"[^a-zA-Z0-9_-]")
_TAG = re.compile(r"tool-output", re.IGNORECASE)

Record = Callable[[str, str, float], None]
"""``record(tool, outcome, seconds)``: a call for the metrics (outcome ``ok``, ``error``,
``timeout``)."""


@functools.lru_cache(maxsize=4096)
def llm_name(server: str, tool: str | None = None) -> str:
    """The name the LLM knows a tool by: ``server__tool`` in OpenAI's alphabet, at most 64
    characters (a hash keeps long ones apart)."""
    name = _ILLEGAL.sub("_", server if tool is None else f"{server}__{tool}")
    if len(name) > 64:
        digest = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
        name = f"{name[:55]}_{digest}"
    return name


def tool_spec(name: str, description: str, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """One entry of the OpenAI ``tools`` field."""
    parameters = dict(schema) if schema else {"type": "object", "properties": {}}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def mark(shown: str, text: str) -> str:
    """``text`` cut to RESULT_LIMIT bytes and wrapped as untrusted output of ``shown``."""
    data = text.encode("utf-8", "replace")
    if len(data) > RESULT_LIMIT:
        kept = data[: RESULT_LIMIT - 100].decode("utf-8", "ignore")
        text = f"{kept}\n[cut: the result had {len(data)} bytes; the first {len(kept)} are shown]"
    text = _TAG.sub("tool_output", text)
    return f'<tool-output tool="{shown}">\n{text}\n</tool-output>'


class AgentToolbox:
    """The tools of ``agent`` on offer now (a :class:`~voxbridge.brain.Toolbox`)."""

    def __init__(
        self,
        agent: Agent,
        server_of: Callable[[str], object | None],
        http: httpx.AsyncClient,
        record: Record = lambda _tool, _outcome, _seconds: None,
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
    ) -> None:
        self._agent = agent
        self._http = http
        self._record = record
        self._log = logger
        self._specs: list[dict[str, Any]] = []
        self._index: dict[str, tuple[ToolServerConfig, Any, str | None, str]] = {}
        for name, config in agent.tools.items():
            if config.kind == "n8n":
                self._add(config, None, None, config.description, config.parameters)
                continue
            server = server_of(name)
            if server is None or getattr(server, "config", None) != config:
                continue  # not running (yet, or any more): its tools are not on offer
            for tool in getattr(server, "tools", ()):
                self._add(config, server, tool.name, tool.description, tool.schema)

    def _add(
        self,
        config: ToolServerConfig,
        server: object,
        tool: str | None,
        description: str,
        schema: Mapping[str, Any] | None,
    ) -> None:
        name = llm_name(config.name, tool)
        shown = config.name if tool is None else f"{config.name}.{tool}"
        self._index[name] = (config, server, tool, shown)
        self._specs.append(tool_spec(name, description, schema))

    def specs(self) -> Sequence[Mapping[str, Any]]:
        return self._specs

    def shown(self, name: str) -> str:
        found = self._index.get(name)
        return found[3] if found else name

    async def call(self, call: ToolCall) -> ToolResult:
        found = self._index.get(call.name)
        shown = found[3] if found else call.name
        started = trio.current_time()
        outcome = "error"
        try:
            if found is None:
                text, ok = f"error: there is no tool named {call.name}", False
            else:
                config, server, tool, _ = found
                text, ok = "", False
                with trio.move_on_after(config.timeout) as scope:
                    text, ok = await self._run(config, server, tool, call)
                if scope.cancelled_caught:
                    outcome = "timeout"
                    text = f"error: no answer within {config.timeout:g}s (the call was cancelled)"
            if ok:
                outcome = "ok"
        finally:
            took = trio.current_time() - started
            self._record(shown, outcome, took)
            self._log.info(
                "🔧 %s: %s in %.0f ms", shown, outcome, took * 1000, extra={"tool": shown}
            )
        return ToolResult(mark(shown, text), ok)

    async def _run(
        self, config: ToolServerConfig, server: Any, tool: str | None, call: ToolCall
    ) -> tuple[str, bool]:
        try:
            args = arguments(call)
        except ValueError as exc:
            return f"error: the arguments are not a JSON object ({exc})", False
        if tool is None:
            return await self._n8n(config, args)
        result: tuple[str, bool] = await server.call(tool, args)
        return result

    async def _n8n(self, config: ToolServerConfig, args: Mapping[str, Any]) -> tuple[str, bool]:
        assert config.n8n is not None
        try:
            response = await self._http.post(config.n8n.reveal(), json=dict(args))
        except httpx.TransportError as exc:
            return f"error: the workflow cannot be reached ({type(exc).__name__})", False
        if response.status_code >= 400:
            return f"error: the workflow answered HTTP {response.status_code}", False
        try:
            return parse_n8n(response), True
        except BrainError:  # JSON in another shape: the LLM can read it as it is
            return json.dumps(response.json(), ensure_ascii=False), True
