"""Memory when things go wrong (SPEC §14): a process killed mid-answer, a full disk, a damaged
database, PostgreSQL stopped and started, two processes on one state directory. Real parts: a
real tmpfs that fills up, real files, real servers, `voxbridge run` as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.conftest import clean_env
from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.postgres import IN_CI, debian_bin, need, running
from tests.runtime_helpers import wait_until
from tests.test_memory import hello, start
from tests.test_web_chat import agent, ask, events_until, socket_url
from voxbridge.memory.backend import AddTurn
from voxbridge.memory.records import QUESTION, StoredTurn, new_exchange
from voxbridge.memory.sqlite import SQLiteBackend
from voxbridge.memory.store import Store
from voxbridge.runtime.fleet import Runtime


@contextlib.contextmanager
def tiny_disk(where: Path, size: str = "16m") -> Iterator[Path]:
    """A real filesystem of ``size`` (tmpfs) mounted at ``where``: it fills up for real."""
    if os.getuid() != 0:
        message = "mounting a tmpfs needs root (CI runs as root)"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the file that did it."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    return filler


async def memory_view(rt: Runtime) -> dict[str, Any]:
    assert rt.status_url is not None
    async with httpx.AsyncClient() as http:
        body = (await http.get(rt.status_url + "/api/agents")).json()
    view: dict[str, Any] = body["agents"][0]["memory"]
    return view


async def metric(rt: Runtime, line: str) -> bool:
    assert rt.status_url is not None
    async with httpx.AsyncClient() as http:
        return line in (await http.get(rt.status_url + "/metrics")).text


EVERYTHING = ["first", "one", "second", "two", "third", "three"]
"""The three exchanges of a fault test: asked before, during and after the fault."""


async def kept(tmp_path: Path, store: str, conversation: str, **changes: Any) -> list[str]:
    """What a fresh runtime on ``store`` holds of a conversation: its turns' words."""
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path, store, **changes)
        async with open_websocket_url(socket_url(rt)) as ws:
            turns = await hello(ws, conversation)
        nursery.cancel_scope.cancel()
    return [t["text"] for t in turns]


async def test_a_full_disk_degrades_memory_answers_go_on_and_it_catches_up(
    tmp_path: Path,
) -> None:
    llm = FakeLLM(Plan([{"reply": "one"}, {"reply": "two"}, {"reply": "three"}]))
    with tiny_disk(tmp_path / "state") as state:
        async with trio.open_nursery() as outer:
            await start_fake(outer, llm)
            agent(tmp_path, llm.base_url)
            async with trio.open_nursery() as nursery:
                rt = await start(nursery, tmp_path, "sqlite", state_dir=state)
                async with open_websocket_url(socket_url(rt)) as ws:
                    await hello(ws, "c")
                    await ask(ws, "first")
                    filler = fill(state)
                    # Both answered, the second with the first in its context: from what the
                    # process holds, though nothing more reaches the disk.
                    assert (await ask(ws, "second"))[-1] == {"type": "done"}
                    assert [m["content"] for m in llm.requests[-1]["messages"]] == [
                        "first",
                        "one",
                        "second",
                    ]
                    await wait_until(rt, lambda: not rt.memory.store.ok)  # type: ignore[union-attr]
                    view = await memory_view(rt)
                    assert view["state"] == "degraded" and "disk is full" in view["detail"]
                    assert view["pending"] >= 1
                    assert await metric(rt, 'voxbridge_memory_degraded{agent="helper"} 1.0')
                    await ask(ws, "third")
                    filler.unlink()  # space again: what waited is written
                    await wait_until(rt, lambda: rt.memory.store.ok, 30)  # type: ignore[union-attr]
                    assert rt.memory.health().pending == 0  # type: ignore[union-attr]
                    assert await metric(rt, 'voxbridge_memory_degraded{agent="helper"} 0.0')
                await rt.shutdown()
                nursery.cancel_scope.cancel()
            assert await kept(tmp_path, "sqlite", "c", state_dir=state) == EVERYTHING
            outer.cancel_scope.cancel()


async def test_writes_beyond_what_a_down_store_can_hold_are_counted_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tiny_disk(tmp_path / "state") as state:
        db = state / "memory.db"

        def opener() -> tuple[SQLiteBackend, None]:
            return SQLiteBackend(db), None

        store = Store(opener, f"sqlite:{db}", max_queue=5)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            assert await store.opened()
            filler = fill(state)
            for i in range(8):
                turn = StoredTurn(
                    "a", "web:x", new_exchange(), QUESTION, f"q{i} " * 50, time.time()
                )
                store.put(AddTurn(turn))
            with trio.fail_after(10):
                assert not await store.committed(8)
            health = store.health()
            assert health.lost == 3 and health.pending == 5
            assert "memory lost 1 write(s): more than 5 were waiting for the store" in caplog.text
            filler.unlink()
            with trio.fail_after(30):
                await store.healthy()
                assert await store.flush() == 0
            nursery.cancel_scope.cancel()
        backend = SQLiteBackend(db)
        kept = backend.recent_turns("a", "web:x", 10)
        assert [t.text.split()[0] for t in kept] == ["q3", "q4", "q5", "q6", "q7"]
        backend.close()


async def test_postgresql_stopped_and_started_again(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"reply": "one"}, {"reply": "two"}, {"reply": "three"}]))
    with running(need(debian_bin(), "PostgreSQL (Debian's postgresql package)")) as pg:
        url = pg.new_database()
        async with trio.open_nursery() as outer:
            await start_fake(outer, llm)
            agent(tmp_path, llm.base_url)
            async with trio.open_nursery() as nursery:
                rt = await start(nursery, tmp_path, url)
                store = rt.memory.store
                assert store is not None
                async with open_websocket_url(socket_url(rt)) as ws:
                    await hello(ws, "p")
                    await ask(ws, "first")
                    await trio.to_thread.run_sync(pg.stop)
                    # Answered at once, from what the process holds; memory says it is down.
                    with trio.fail_after(10):
                        assert (await ask(ws, "second"))[-1] == {"type": "done"}
                    await wait_until(rt, lambda: not store.ok, 20)
                    view = await memory_view(rt)
                    assert view["state"] == "degraded"
                    assert (
                        "cannot reach" in view["detail"] and "postgres@127.0.0.1" in view["detail"]
                    )
                    with trio.fail_after(10):
                        await ask(ws, "third")
                    await trio.to_thread.run_sync(pg.start)
                    await wait_until(rt, lambda: store.ok, 40)
                    with trio.fail_after(10):
                        assert await store.flush() == 0
                await rt.shutdown()
                nursery.cancel_scope.cancel()
            assert await kept(tmp_path, url, "p") == EVERYTHING
            outer.cancel_scope.cancel()


# --- voxbridge run, as a subprocess -----------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Run:
    """``voxbridge run`` in tmp_path on a free port, its output read line by line."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxbridge", "run", "--listen", f"127.0.0.1:{self.port}", *args],
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    @property
    def chat(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/agents/helper/chat"

    async def until(self, needle: str, limit_s: float = 30) -> str:
        assert self.proc.stdout is not None
        with trio.fail_after(limit_s):
            while True:
                line = await trio.to_thread.run_sync(self.proc.stdout.readline)
                if not line:
                    raise AssertionError(f"{needle!r} not seen:\n{''.join(self.lines)}")
                self.lines.append(line)
                if needle in line:
                    return line

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig``; the exit status once the process has ended."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(20)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()  # whatever happened in the test: no process left behind


async def test_sigkill_mid_answer_keeps_the_question(tmp_path: Path) -> None:
    words = [f"w{i} " for i in range(40)]
    llm = FakeLLM(Plan([{"chunks": words, "chunk_delay": 0.2}, {"reply": "again"}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        with Run(tmp_path) as run:
            await run.until("Chat with")
            async with open_websocket_url(run.chat) as ws:
                await hello(ws, "kill")
                await ws.send_message(
                    json.dumps({"type": "message", "text": "tell me a long story"})
                )
                await events_until(ws, {"delta"})
                assert run.kill() == -signal.SIGKILL
        with Run(tmp_path) as run:
            await run.until("Chat with")
            async with open_websocket_url(run.chat) as ws:
                turns = await hello(ws, "kill")
                assert turns[0] == {"role": "user", "text": "tell me a long story"}
                # At most the answer in flight is lost (it was never whole).
                assert len(turns) == 1
                await ask(ws, "are you there?")
            assert [m["content"] for m in llm.requests[-1]["messages"]] == [
                "tell me a long story",
                "are you there?",
            ]
            assert run.kill(signal.SIGTERM) == 0
        nursery.cancel_scope.cancel()


async def test_a_damaged_database_is_moved_aside_loudly_and_memory_starts_afresh(
    tmp_path: Path,
) -> None:
    state = tmp_path / ".voxbridge"
    state.mkdir()
    (state / "memory.db").write_bytes(b"SQLite format 3\0" + os.urandom(8192))
    llm = FakeLLM()
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        with Run(tmp_path) as run:
            line = await run.until("damaged")
            assert "moved aside to" in line and ".voxbridge/memory.db.corrupt-" in line
            await run.until("Chat with")
            async with httpx.AsyncClient() as http:
                body = (await http.get(f"http://127.0.0.1:{run.port}/api/agents")).json()
            assert body["memory"]["state"] == "ok"
            assert "moved aside" in body["memory"]["notice"]
            async with open_websocket_url(run.chat) as ws:
                await hello(ws, "fresh")
                await ask(ws, "hello again")
            assert run.kill(signal.SIGTERM) == 0
        aside = [p.name for p in state.iterdir() if ".corrupt-" in p.name]
        assert len(aside) == 1
        assert (state / aside[0]).read_bytes().startswith(b"SQLite format 3\0")
        nursery.cancel_scope.cancel()


async def test_a_second_process_on_the_same_state_directory_refuses(tmp_path: Path) -> None:
    llm = FakeLLM()
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        with Run(tmp_path) as first:
            await first.until("Chat with")
            with Run(tmp_path) as second:
                out, _ = second.proc.communicate(timeout=30)
                assert second.proc.returncode == 75, out
            assert re.search(
                rf"another voxbridge \(pid {first.proc.pid}\) is running on the state directory "
                r"\.voxbridge: stop it first, or give this one its own --state-dir",
                out,
            ), out
            assert "Traceback" not in out
            assert first.proc.poll() is None
            assert first.kill(signal.SIGTERM) == 0
        nursery.cancel_scope.cancel()
