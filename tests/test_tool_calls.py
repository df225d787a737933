"""The brain with tools: a fake OpenAI-compatible LLM that streams tool calls (real HTTP), the
lab MCP server as a real child process, a fake n8n webhook for n8n tools."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
import trio

from tests.fake_brains import FakeLLM, FakeN8n, Plan, start_fake
from voxbridge import BrainError, Secret
from voxbridge.brain import Message, N8nClient, ToolCall, ToolResult, ToolUse, Turn, think
from voxbridge.brain.answer import UNTRUSTED
from voxbridge.config.model import Agent, LLMConfig, PluginConfig, ToolServerConfig
from voxbridge.tools.server import McpServer, McpTool, connect
from voxbridge.tools.toolbox import RESULT_LIMIT, AgentToolbox, llm_name, mark

LAB = Path(__file__).with_name("mcp_lab.py")
MESSAGE = Message("s", "u", "ann", "what time is it?")
HISTORY = [Turn("user", "what time is it?")]


def agent_with(
    base: str, tools: Mapping[str, ToolServerConfig], *, steps: int = 5, **extra: Any
) -> Agent:
    return Agent(
        id="a",
        file=Path("agents.d/a.yaml"),
        name="A",
        system_prompt="You help.",
        llm=LLMConfig(base_url=base + "/v1", model="m"),
        tools=MappingProxyType(dict(tools)),
        tool_steps=steps,
        **extra,
    )


LAB_CONFIG = ToolServerConfig("lab", command=(sys.executable, str(LAB)))


@pytest.fixture
async def lab_server() -> AsyncIterator[McpServer]:
    async with connect(LAB_CONFIG) as server:
        yield server


async def events_of(agent: Agent, http: httpx.AsyncClient, **kw: Any) -> list[str | ToolUse]:
    seen: list[str | ToolUse] = []
    async with think(agent, MESSAGE, HISTORY, http=http, **kw) as answer:
        async for item in answer.events():
            seen.append(item)
    return seen


async def test_streamed_tool_calls_are_assembled_run_and_answered(lab_server: McpServer) -> None:
    fake = FakeLLM(
        Plan(
            [
                {"tool_calls": [{"name": "lab__echo", "arguments": {"text": "it is noon"}}]},
                {"reply": "The tool says it is noon."},
            ]
        )
    )
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        agent = agent_with(base, {"lab": LAB_CONFIG})
        toolbox = AgentToolbox(agent, lambda _: lab_server, http)
        seen = await events_of(agent, http, tools=toolbox)
        nursery.cancel_scope.cancel()
    assert seen[:2] == [
        ToolUse("lab.echo", "start", "call_0"),
        ToolUse("lab.echo", "done", "call_0"),
    ]
    assert "".join(s for s in seen if isinstance(s, str)) == "The tool says it is noon. "
    first, second = fake.requests
    offered = {t["function"]["name"] for t in first["tools"]}
    assert {"lab__echo", "lab__wait", "lab__big"} <= offered
    assert "tool_choice" not in first
    assert UNTRUSTED in first["messages"][0]["content"]
    asked, answered = second["messages"][-2:]
    assert asked == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": "lab__echo", "arguments": json.dumps({"text": "it is noon"})},
            }
        ],
    }
    assert answered == {
        "role": "tool",
        "tool_call_id": "call_0",
        "content": '<tool-output tool="lab.echo">\nit is noon\n</tool-output>',
    }


class Barrier:
    """A toolbox whose calls finish only once ``n`` of them have started: run one at a time,
    they would wait for ever."""

    def __init__(self, n: int) -> None:
        self.n, self.started, self.cancelled = n, 0, 0
        self.all_in = trio.Event()

    def specs(self) -> Sequence[Mapping[str, Any]]:
        return [
            {"type": "function", "function": {"name": "slow", "parameters": {"type": "object"}}}
        ]

    def shown(self, name: str) -> str:
        return f"box.{name}"

    async def call(self, call: ToolCall) -> ToolResult:
        self.started += 1
        if self.started == self.n:
            self.all_in.set()
        try:
            await self.all_in.wait()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        return ToolResult(f"done {call.id}", True)


async def test_the_calls_of_a_round_run_at_once() -> None:
    calls = [{"id": f"c{n}", "name": "slow"} for n in range(3)]
    fake = FakeLLM(Plan([{"tool_calls": calls}, {"reply": "all done"}]))
    box = Barrier(3)
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        with trio.fail_after(10):
            seen = await events_of(agent_with(base, {}), http, tools=box)
        nursery.cancel_scope.cancel()
    assert [s.state for s in seen if isinstance(s, ToolUse)] == ["start"] * 3 + ["done"] * 3
    results = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == ["c0", "c1", "c2"]  # in the LLM's order


async def test_cancelling_the_answer_cancels_the_calls_in_flight() -> None:
    calls = [{"id": f"c{n}", "name": "slow"} for n in range(2)]
    fake = FakeLLM(Plan([{"tool_calls": calls}, {"reply": "never"}]))
    box = Barrier(3)  # never complete: two calls wait for a third
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        with trio.fail_after(10):
            async with think(agent_with(base, {}), MESSAGE, HISTORY, http=http, tools=box) as a:
                async for item in a.events():
                    if isinstance(item, ToolUse) and box.started == 2:
                        break  # the person went away (a barge-in, a closed socket)
        nursery.cancel_scope.cancel()
    assert box.cancelled == 2
    assert len(fake.requests) == 1


async def test_tool_steps_bounds_the_rounds_then_the_llm_must_answer() -> None:
    call = {"tool_calls": [{"name": "slow"}]}
    fake = FakeLLM(Plan([call, call, {"reply": "with what I have"}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        box = Barrier(1)
        seen = await events_of(agent_with(base, {}, steps=2), http, tools=box)
        nursery.cancel_scope.cancel()
    assert len(fake.requests) == 3
    assert [r.get("tool_choice") for r in fake.requests] == [None, None, "none"]
    assert "".join(s for s in seen if isinstance(s, str)).strip() == "with what I have"


async def test_an_llm_that_never_stops_calling_tools_gets_an_error() -> None:
    fake = FakeLLM(Plan([{"tool_calls": [{"name": "slow"}]}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        with pytest.raises(BrainError, match="still asked for tools after 1 rounds"):
            await events_of(agent_with(base, {}, steps=1), http, tools=Barrier(1))
        nursery.cancel_scope.cancel()


async def test_results_are_capped_and_marked_untrusted(lab_server: McpServer) -> None:
    calls = [
        {"id": "big", "name": "lab__big", "arguments": {"kib": 100}},
        {"id": "html", "name": "lab__markup"},
        {"id": "bad", "name": "lab__echo", "arguments": "not an object"},
        {"id": "none", "name": "lab__no_such_tool"},
    ]
    fake = FakeLLM(Plan([{"tool_calls": calls}, {"reply": "ok"}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        agent = agent_with(base, {"lab": LAB_CONFIG})
        seen = await events_of(agent, http, tools=AgentToolbox(agent, lambda _: lab_server, http))
        nursery.cancel_scope.cancel()
    results = {m["tool_call_id"]: m["content"] for m in fake.requests[1]["messages"][-4:]}
    assert len(results["big"].encode()) <= RESULT_LIMIT + 100
    assert "[cut: the result had 102400 bytes" in results["big"]
    assert results["html"].count("</tool-output>") == 1  # the result's own is defused
    assert "<script>alert(2)</script>" in results["html"]  # data, passed on as it is
    assert "error: the arguments are not a JSON object" in results["bad"]
    assert "error: there is no tool named lab__no_such_tool" in results["none"]
    states = {s.call_id: s.state for s in seen if isinstance(s, ToolUse)}
    assert states == {"big": "done", "html": "done", "bad": "error", "none": "error"}


async def test_a_call_that_hangs_times_out_on_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Hung:
        config = ToolServerConfig("hung", command=("x",), timeout=30.0)
        tools = (McpTool("wait", "Waits.", {"type": "object"}),)

        async def call(self, tool: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
            await trio.sleep_forever()
            raise AssertionError

    recorded: list[tuple[str, str, float]] = []
    agent = agent_with("http://127.0.0.1:9", {"hung": Hung.config})
    async with httpx.AsyncClient() as http:
        box = AgentToolbox(agent, lambda _: Hung(), http, lambda *r: recorded.append(r))
        result = await box.call(ToolCall("c", llm_name("hung", "wait"), "{}"))
    assert not result.ok
    assert "error: no answer within 30s" in result.text
    assert recorded == [("hung.wait", "timeout", 30.0)]


async def test_a_model_without_tool_support_is_asked_without_tools() -> None:
    fake = FakeLLM(Plan([{"refuse_tools": 400, "reply": "plain answer"}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        agent = agent_with(base, {})
        for _ in range(2):
            seen = await events_of(agent, http, tools=Barrier(1))
            assert "".join(s for s in seen if isinstance(s, str)).strip() == "plain answer"
        nursery.cancel_scope.cancel()
    # asked with tools once (refused), then without, and never with them again
    assert ["tools" in r for r in fake.requests] == [True, False, False]


async def test_n8n_tools_post_their_arguments_to_the_workflow() -> None:
    fake = FakeLLM(
        Plan(
            [
                {"tool_calls": [{"name": "refund", "arguments": {"order_id": "A-17"}}]},
                {"reply": "Refunded."},
            ]
        )
    )
    hook = FakeN8n(Plan([{"json": {"output": "order A-17 refunded"}}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        hook_base = await start_fake(nursery, hook)
        params = {"type": "object", "properties": {"order_id": {"type": "string"}}}
        refund = ToolServerConfig(
            "refund",
            n8n=Secret(f"{hook_base}/webhook/refund-secret-path"),
            description="Refund an order by its id.",
            parameters=MappingProxyType(params),
        )
        agent = agent_with(base, {"refund": refund})
        seen = await events_of(agent, http, tools=AgentToolbox(agent, lambda _: None, http))
        nursery.cancel_scope.cancel()
    assert hook.requests == [{"order_id": "A-17"}]
    (spec,) = fake.requests[0]["tools"]
    assert spec["function"] == {
        "name": "refund",
        "description": "Refund an order by its id.",
        "parameters": params,
    }
    assert fake.requests[1]["messages"][-1]["content"] == mark("refund", "order A-17 refunded")
    assert ToolUse("refund", "done", "call_0") in seen


async def test_the_n8n_fallback_still_answers_when_the_llm_fails() -> None:
    fake = FakeLLM(Plan([{"status": 400}]))
    hook = FakeN8n(Plan([{"json": {"output": "n8n here"}}]))
    async with trio.open_nursery() as nursery, httpx.AsyncClient() as http:
        base = await start_fake(nursery, fake)
        hook_base = await start_fake(nursery, hook)
        settings = MappingProxyType(
            {"webhook_url": Secret(f"{hook_base}/webhook/x"), "mode": "fallback"}
        )
        agent = agent_with(
            base, {}, plugins=MappingProxyType({"n8n": PluginConfig("n8n", True, settings)})
        )
        n8n = N8nClient.from_settings(http, settings)
        seen = await events_of(agent, http, tools=Barrier(1), n8n=n8n)
        nursery.cancel_scope.cancel()
    assert seen == ["n8n here"]
    assert "tools" in fake.requests[0]
