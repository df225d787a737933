"""Memory end to end (SPEC §14): conversations that outlive edits and restarts, and facts about
people — the real runtime, real WebSockets, a real streaming LLM on 127.0.0.1, and each store
(SQLite, PostgreSQL, PostgreSQL with pgvector)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.browser import chromium_page, needs_chromium
from tests.fake_brains import NOTES, FakeLLM, Plan, start_fake
from tests.postgres import PostgresServer
from tests.runtime_helpers import options, wait_state, write
from tests.test_web_chat import agent, ask, events_until, socket_url
from voxbridge import testing
from voxbridge.memory.backend import AddTurn
from voxbridge.memory.records import QUESTION, StoredTurn, new_exchange
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.shard import Shard
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


@needs_chromium
async def test_the_chat_page_goes_on_after_a_reload_and_offers_a_new_conversation(
    tmp_path: Path,
) -> None:
    llm = FakeLLM(Plan([{"reply": "Hello Ann."}, {"reply": "Hi, stranger."}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        rt = await start(nursery, tmp_path, "sqlite")
        url = f"{rt.status_url}/chat/helper"

        def browse() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with chromium_page() as page:
                page.goto(url)
                page.wait_for_selector("#state.on", timeout=10_000)
                page.fill("#text", "I am Ann")
                page.keyboard.press("Enter")
                page.wait_for_selector(".msg.agent:not(.writing)", timeout=10_000)
                seen["id"] = page.evaluate("localStorage.getItem('voxbridge.chat.helper')")
                page.reload()  # the same conversation, shown again
                page.wait_for_function("document.querySelectorAll('.msg').length === 2")
                seen["after_reload"] = page.locator(".msg").all_inner_texts()
                page.click("#new")
                page.wait_for_function("document.querySelectorAll('.msg').length === 0")
                page.wait_for_selector("#state.on", timeout=10_000)
                page.fill("#text", "who am I?")
                page.keyboard.press("Enter")
                page.wait_for_selector(".msg.agent:not(.writing)", timeout=10_000)
                seen["new_id"] = page.evaluate("localStorage.getItem('voxbridge.chat.helper')")
                page.reload()
                page.wait_for_function("document.querySelectorAll('.msg').length === 2")
                seen["new_after_reload"] = page.locator(".msg").all_inner_texts()
            return seen

        seen = await trio.to_thread.run_sync(browse)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", seen["id"])
        assert seen["after_reload"] == ["I am Ann", "Hello Ann."]
        assert seen["new_id"] != seen["id"]
        assert seen["new_after_reload"] == ["who am I?", "Hi, stranger."]
        # The new conversation started afresh: the LLM was not shown Ann's.
        assert said(llm.requests[-1]) == [("user", "who am I?")]
        nursery.cancel_scope.cancel()


async def test_memory_keep_expires_what_is_older(tmp_path: Path) -> None:
    llm = FakeLLM()
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url, extra="memory: {keep: 1h}\n")
        write(tmp_path, "keeper.yaml", "name: Keeper\nmemory: {keep: forever}\n")
        rt = await start(nursery, tmp_path, "sqlite")
        store = rt.memory.store
        assert store is not None and await store.opened()
        now = time.time()
        for agent_id in ("helper", "keeper", "gone"):  # "gone": no file any more (default: 90d)
            for age, text in ((2 * 3600, "old"), (100 * 86400, "ancient"), (60, "new")):
                store.put(
                    AddTurn(
                        StoredTurn(agent_id, "web:x", new_exchange(), QUESTION, text, now - age)
                    )
                )
        assert await store.flush() == 0
        removed = await rt.memory.expire()
        assert (removed.turns, removed.facts) == (3, 0)  # helper's old and ancient, gone's ancient

        async def kept(agent_id: str) -> list[str]:
            turns: list[StoredTurn] = await store.read(
                lambda b: b.recent_turns(agent_id, "web:x", 10), default=[]
            )
            return [t.text for t in turns]

        assert await kept("helper") == ["new"]
        assert await kept("keeper") == ["old", "ancient", "new"]
        assert await kept("gone") == ["old", "new"]
        nursery.cancel_scope.cancel()


async def test_a_reshard_moves_an_agent_and_its_memory_follows(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Replicas share one PostgreSQL: an agent that a re-shard (2 → 3) moves to another replica
    finds its conversation there."""
    url = postgres_server.new_database()
    llm = FakeLLM(Plan([{"reply": "Hello Ann."}, {"reply": "You are Ann."}]))
    ids = [f"agent-{n}" for n in range(12)]
    moved = next(i for i in ids if Shard(0, 2).owns(i) and not Shard(0, 3).owns(i))
    now_on = next(i for i in range(3) if Shard(i, 3).owns(moved))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        for agent_id in ids:
            write(
                tmp_path,
                f"{agent_id}.yaml",
                f"name: {agent_id}\nllm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
                "plugins:\n  web: {}\n",
            )

        async def replica(shard: Shard) -> Runtime:
            opts = options(
                tmp_path,
                listen="127.0.0.1:0",
                store=url,
                shard=shard,
                state_dir=tmp_path / f"state-{shard.index}-of-{shard.count}",
            )
            rt: Runtime = await nursery.start(
                lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
            )
            assert shard.owns(moved)
            await wait_state(rt, (moved, "web"), ActorState.RUNNING)
            return rt

        first = await replica(Shard(0, 2))
        async with open_websocket_url(socket_url(first, moved)) as ws:
            await hello(ws, "c")
            await ask(ws, "I am Ann")
        await first.shutdown()
        later = await replica(Shard(now_on, 3))
        async with open_websocket_url(socket_url(later, moved)) as ws:
            assert await hello(ws, "c") == [
                {"role": "user", "text": "I am Ann"},
                {"role": "assistant", "text": "Hello Ann."},
            ]
        nursery.cancel_scope.cancel()
