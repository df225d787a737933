"""Benchmark: what a tool call costs voxbridge (issue 18).

An answer that calls one tool: the LLM (tests/fake_brains.py's FakeLLM, zero latency, on
127.0.0.1) streams a tool call in pieces; voxbridge assembles it, calls the tool and sends the
result back to the LLM, which then answers. Per answer:

    overhead = (the request with the result reaches the LLM's app, before its body is read)
               - (the LLM sent the call's last piece) - (the tool's own time, as it measured it)

The LLM runs in a process of its own, as a real one does (``--serve-llm``), and reports its
times (``time.perf_counter()``: CLOCK_MONOTONIC, one clock for every process here). So the
overhead holds voxbridge's work (assembling the call, the MCP round trip's framing and parsing on
its side, capping and marking the result, the next request) plus the loopback HTTP and the MCP
server's framework, not the tool. The tool is the lab server's ``wait`` with 0 s (tests/
mcp_lab.py, written with the SDK's MCPServer), over stdio (a child process under the leash) and
over streamable HTTP (a server process of its own on 127.0.0.1). The baseline is the same
tool's MCP round trip alone (call → result, the SDK's session, nothing else), measured in the
same run.

    python bench/tools.py [--answers 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.responses import JSONResponse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import free_port, pct

from tests.fake_brains import FakeLLM, Plan
from voxbridge.brain import Message, Turn, think
from voxbridge.config.model import Agent, LLMConfig, ToolServerConfig
from voxbridge.tools.server import McpServer, connect
from voxbridge.tools.toolbox import AgentToolbox

LAB = Path(__file__).resolve().parent.parent / "tests" / "mcp_lab.py"
HERE = str(Path(__file__).resolve())
CALL = {"tool_calls": [{"name": "lab__wait", "arguments": {"seconds": 0}}]}


@asynccontextmanager
async def _process(*argv: str) -> AsyncIterator[None]:
    """Run ``argv`` (a Python script and its arguments) while the block runs."""
    proc = await trio.lowlevel.open_process([sys.executable, *argv])
    try:
        yield
    finally:
        proc.terminate()
        await proc.wait()


async def _ready(http: httpx.AsyncClient, url: str) -> None:
    """Wait until ``url`` answers (a server process has started)."""
    for _ in range(400):
        try:
            await http.get(url)
            return
        except httpx.TransportError:
            await trio.sleep(0.05)


async def _serve_llm(port: int, answers: int) -> None:
    """The fake LLM in this process, with ``/stats`` for its times."""
    llm = FakeLLM(Plan([CALL, {"reply": "ok"}] * answers))
    app = llm.app()

    async def stats(request: Any) -> JSONResponse:
        return JSONResponse(
            {"calls_done_at": llm.calls_done_at, "arrived_at": llm.arrived_at, "own": llm_owns(llm)}
        )

    app.add_route("/stats", stats)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = config.errorlog = None
    await serve(app, config, mode="asgi")  # type: ignore[arg-type]


def llm_owns(llm: FakeLLM) -> list[float]:
    """The tool's own time in each request that carries a result (the lab says "waited X")."""
    own = []
    for body in llm.requests:
        last = body["messages"][-1]
        if last.get("role") == "tool":
            own.append(float(str(last["content"]).split("waited ", 1)[1].split()[0]))
    return own


async def _answers(server: McpServer, base: str, answers: int, http: httpx.AsyncClient) -> None:
    """``answers`` answers that each call the tool once, through the LLM at ``base``."""
    agent = Agent(
        id="bench",
        file=Path("bench.yaml"),
        name="bench",
        llm=LLMConfig(base_url=base + "/v1", model="m"),
        tools={"lab": server.config},
    )
    message = Message("s", "u", "u", "wait for nothing")
    for _ in range(answers):
        toolbox = AgentToolbox(agent, lambda _: server, http)
        async with think(agent, message, [Turn("user", "go")], http=http, tools=toolbox) as a:
            async for _ in a:
                pass


def _overheads(stats: dict[str, list[float]], first: int, answers: int) -> list[float]:
    """Overhead (ms) of answers ``first`` to ``first + answers`` of the LLM's ``/stats``; the
    first few of each series warm the paths up and are left out."""
    overheads = []
    for n in range(first, first + answers):
        sent, arrived = stats["calls_done_at"][n], stats["arrived_at"][2 * n + 1]
        overheads.append(1000 * (arrived - sent - stats["own"][n]))
    return overheads[min(5, answers // 10) :]


async def _round_trips(server: McpServer, calls: int) -> list[float]:
    """The MCP round trip alone (ms): the SDK's call, the server's reply."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await server.call("wait", {"seconds": 0})
        times.append(1000 * (time.perf_counter() - started))
    return times[min(5, calls // 10) :]


async def measure(answers: int) -> dict[str, float]:
    """p50/p95 of the overhead per transport, beside the bare MCP round trip."""
    results: dict[str, float] = {}
    llm_port, lab_port = free_port(), free_port()
    base, lab_url = f"http://127.0.0.1:{llm_port}", f"http://127.0.0.1:{lab_port}/mcp"
    stdio = ToolServerConfig("lab", command=(sys.executable, str(LAB)))
    trips: dict[str, list[float]] = {}
    async with (
        _process(HERE, "--serve-llm", str(llm_port), str(2 * answers)),
        _process(str(LAB), "http", str(lab_port)),  # both start at once
        httpx.AsyncClient() as http,
    ):
        await _ready(http, f"{base}/stats")
        await _ready(http, lab_url)
        for label, config in (("", stdio), ("_http", ToolServerConfig("lab", url=lab_url))):
            async with connect(config) as server:
                await _answers(server, base, answers, http)
                trips[label] = await _round_trips(server, answers)
        stats = (await http.get(f"{base}/stats")).json()
    for n, label in enumerate(("", "_http")):
        over = _overheads(stats, n * answers, answers)
        results[f"tool_call_overhead{label}_p50_ms"] = pct(over, 50)
        results[f"tool_call_overhead{label}_p95_ms"] = pct(over, 95)
        results[f"mcp_round_trip{label}_p50_ms"] = pct(trips[label], 50)
        results[f"mcp_round_trip{label}_p95_ms"] = pct(trips[label], 95)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--answers", type=int, default=300)
    ap.add_argument("--serve-llm", nargs=2, type=int, metavar=("PORT", "ANSWERS"))
    args = ap.parse_args()
    if args.serve_llm:
        trio.run(_serve_llm, *args.serve_llm)
        return
    results = trio.run(measure, args.answers)
    for key, value in results.items():
        print(f"{key}: {value:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
