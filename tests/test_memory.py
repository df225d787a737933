"""Memory end to end (SPEC §14): conversations that outlive edits and restarts, and facts about
people — the real runtime, real WebSockets, a real streaming LLM on 127.0.0.1, and each store
(SQLite, PostgreSQL, PostgreSQL with pgvector)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.fake_brains import NOTES, FakeLLM, Plan, start_fake
from tests.runtime_helpers import options, wait_state
from tests.test_web_chat import agent, ask, events_until, socket_url
from voxbridge import testing
from voxbridge.memory.backend import AddTurn
from voxbridge.memory.records import QUESTION, StoredTurn, new_exchange
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState


async def start(nursery: trio.Nursery, tmp_path: Path, store: str, **changes: Any) -> Runtime:
    opts = options(tmp_path, listen="127.0.0.1:0", store=store, **changes)
    rt: Runtime = await nursery.start(
        lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
    )
    await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
    return rt


async def hello(ws: WebSocketConnection, conversation: str) -> list[dict[str, str]]:
    await ws.send_message(json.dumps({"type": "hello", "conversation": conversation}))
    (event,) = await events_until(ws, {"history", "error"})
    assert event["type"] == "history", event
    turns: list[dict[str, str]] = event["turns"]
    return turns


def said(request: dict[str, Any]) -> list[tuple[str, str]]:
    """What the LLM was shown, as (role, text), the system message left out."""
    return [(m["role"], m["content"]) for m in request["messages"] if m["role"] != "system"]


def system(request: dict[str, Any]) -> str:
    first = request["messages"][0]
    return str(first["content"]) if first["role"] == "system" else ""


async def test_a_web_conversation_outlives_an_edit_and_a_restart(
    tmp_path: Path, store_url: str
) -> None:
    llm = FakeLLM(Plan([{"reply": "Hello Ann."}, {"reply": "You are Ann."}]))
    async with trio.open_nursery() as outer:
        await start_fake(outer, llm)
        agent(tmp_path, llm.base_url, extra="history: 6\n")
        async with trio.open_nursery() as nursery:
            rt = await start(nursery, tmp_path, store_url)
            async with open_websocket_url(socket_url(rt)) as ws:
                assert await hello(ws, "chat-1") == []
                assert (await ask(ws, "I am Ann"))[-1] == {"type": "done"}
            # An edit, then a restart (SIGTERM's way: actors stopped, memory settled).
            agent(tmp_path, llm.base_url, extra="history: 6\nsystem_prompt: Be brief.\n")
            await rt.shutdown()
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            rt = await start(nursery, tmp_path, store_url)
            async with open_websocket_url(socket_url(rt)) as ws:
                assert await hello(ws, "chat-1") == [
                    {"role": "user", "text": "I am Ann"},
                    {"role": "assistant", "text": "Hello Ann."},
                ]
                await ask(ws, "who am I?")
            # Another conversation is another conversation.
            async with open_websocket_url(socket_url(rt)) as ws:
                assert await hello(ws, "chat-2") == []
            nursery.cancel_scope.cancel()
        assert said(llm.requests[-1]) == [
            ("user", "I am Ann"),
            ("assistant", "Hello Ann."),
            ("user", "who am I?"),
        ]
        outer.cancel_scope.cancel()


async def test_a_bad_hello_is_refused_and_a_late_one_too(tmp_path: Path) -> None:
    llm = FakeLLM()
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        rt = await start(nursery, tmp_path, "sqlite")
        async with open_websocket_url(socket_url(rt)) as ws:
            for bad in ("", "x" * 65, "a/b", 42):
                await ws.send_message(json.dumps({"type": "hello", "conversation": bad}))
                (event,) = await events_until(ws, {"error", "history"})
                assert event["type"] == "error" and "1 to 64" in event["message"]
            await ask(ws, "hi")
            await ws.send_message(json.dumps({"type": "hello", "conversation": "late"}))
            (event,) = await events_until(ws, {"error", "history"})
            assert event == {
                "type": "error",
                "message": "hello comes first, before any message: reconnect to switch",
            }
        nursery.cancel_scope.cancel()


async def test_start_up_reads_no_conversation_and_one_loads_when_first_used(
    tmp_path: Path,
) -> None:
    llm = FakeLLM()
    async with trio.open_nursery() as outer:
        await start_fake(outer, llm)
        agent(tmp_path, llm.base_url)
        async with trio.open_nursery() as nursery:
            rt = await start(nursery, tmp_path, "sqlite")
            assert rt.memory.store is not None
            await rt.memory.ready()
            # Many stored conversations, none read by a start.
            rt.memory.store.put(
                AddTurn(
                    StoredTurn("helper", "web:old", new_exchange(), QUESTION, "hi", time.time())
                )
            )
            await rt.shutdown()
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            rt = await start(nursery, tmp_path, "sqlite")
            assert "memory_history_load" not in rt.table.histograms
            async with open_websocket_url(socket_url(rt)) as ws:
                assert await hello(ws, "old") == [{"role": "user", "text": "hi"}]
            assert rt.table.histograms["memory_history_load"].n == 1
            nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def test_facts_are_learned_off_the_reply_path_and_recalled_into_answers(
    tmp_path: Path, store_url: str
) -> None:
    llm = FakeLLM(Plan([{"reply": "Noted."}]))
    llm.notes = ['Here you go: ["Prefers metric units.", "Has a dog called Rex."]']
    embeddings = "  embeddings: {base_url: '{llm}/v1', model: bow}\n"
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        memory = "memory:\n  facts: true\n  recall: 1\n" + embeddings.replace("{llm}", llm.base_url)
        agent(tmp_path, llm.base_url, extra=memory)
        rt = await start(nursery, tmp_path, store_url)
        async with open_websocket_url(socket_url(rt)) as ws:
            await hello(ws, "ann")
            await ask(ws, "I use metric units and my dog is Rex")
            # Learned after the answer, from the exchange: what the person said, with the
            # notes kept so far (none yet).
            with trio.fail_after(10):
                await rt.memory.settle()
            (note,) = llm.note_requests
            assert system(note).startswith(NOTES)
            assert "web:ann" not in system(note)
            assert said(note) == [
                ("user", "the person: I use metric units and my dog is Rex\nAssistant: Noted.")
            ]
            facts = await rt.memory.of("helper").facts("web:ann")
            assert sorted(f.text for f in facts) == [
                "Has a dog called Rex.",
                "Prefers metric units.",
            ]
            # Recalled by relevance into the next answer's system message (recall: 1).
            await ask(ws, "how long is a mile in units I like?")
            prompt = system(llm.requests[-1])
            assert "What you remember about the person asking" in prompt
            assert "- Prefers metric units." in prompt and "Rex" not in prompt
            await ask(ws, "what is my dog called?")
            prompt = system(llm.requests[-1])
            assert "- Has a dog called Rex." in prompt and "metric" not in prompt
        store = rt.memory.store
        assert store is not None and store.backend is not None
        if store.backend.vectors:  # the question was embedded to recall by meaning too
            assert any("dog" in str(r["input"]) for r in llm.embedding_requests)
        assert rt.table.histograms["memory_recall"].n >= 2
        nursery.cancel_scope.cancel()
