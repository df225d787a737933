"""``voxbridge chat`` as a subprocess against a real streaming LLM on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from tests.conftest import _captured, clean_env
from tests.fake_brains import FakeLLM, FakeN8n, Plan, start_fake
from tests.runtime_helpers import write
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair


def agent(tmp_path: Path, llm: str, extra: str = "") -> None:
    write(
        tmp_path,
        "helper.yaml",
        f"name: Helper\nsystem_prompt: Be brief.\n{extra}"
        f"llm: {{base_url: '{llm}/v1', model: m, timeout: 5s}}\n",
    )


class Chat:
    """A ``voxbridge chat`` process, its stdin a pipe, its output read as it comes."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.out = bytearray()
        self.err = bytearray()

    @classmethod
    async def start(cls, tmp_path: Path, *args: str) -> Chat:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "voxbridge", "chat", *args],
            cwd=tmp_path,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return cls(proc)

    async def read_until(self, marker: str) -> None:
        assert self.proc.stdout is not None
        with trio.fail_after(15):
            while marker.encode() not in self.out:
                chunk = await self.proc.stdout.receive_some()
                assert chunk, f"output ended before {marker!r}: {self.out.decode()!r}"
                self.out += chunk

    async def say(self, line: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(line.encode() + b"\n")

    async def finish(self) -> tuple[int, str, str]:
        """Close stdin (Ctrl-D), read everything, wait for the exit."""
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        await self.proc.stdin.aclose()

        async def drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
            while chunk := await stream.receive_some():
                into += chunk

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, self.proc.stdout, self.out)
                nursery.start_soon(drain, self.proc.stderr, self.err)
                await self.proc.wait()
        _captured.append(self.out.decode() + self.err.decode())  # for the leak scan
        return self.proc.returncode, self.out.decode(), self.err.decode()


async def test_once_streams_the_answer_and_exits(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"chunks": ["Hello ", "from ", "the ", "terminal."], "chunk_delay": 0.3}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        chat = await Chat.start(tmp_path, "helper", "--once", "hi")
        await chat.read_until("Hello")
        assert llm.chunks_sent < 4  # on screen while the LLM is still writing
        code, out, err = await chat.finish()
        assert (code, out, err) == (0, "Hello from the terminal.\n", "")
        assert llm.requests[0]["messages"][-1] == {"role": "user", "content": "hi"}
        nursery.cancel_scope.cancel()


async def test_a_conversation_keeps_its_history_until_ctrl_d(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"reply": "Nice to meet you, Ann."}, {"reply": "You are Ann."}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url, extra="history: 6\n")
        chat = await Chat.start(tmp_path, "Helper")  # by name, too
        await chat.say("I am Ann")
        await chat.read_until("Ann.")
        await chat.say("who am I?")
        await chat.read_until("You are Ann.")
        code, out, _ = await chat.finish()
        assert code == 0
        assert out.splitlines() == ["Nice to meet you, Ann.", "You are Ann."]
        assert [m["content"] for m in llm.requests[1]["messages"]] == [
            "Be brief.",
            "I am Ann",
            "Nice to meet you, Ann.",
            "who am I?",
        ]
        nursery.cancel_scope.cancel()


async def test_ctrl_c_stops_the_answer_in_flight_not_the_chat(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"chunks": ["one ", "two ", "three ", "four"], "chunk_delay": 0.4}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        chat = await Chat.start(tmp_path, "helper")
        await chat.say("count")
        await chat.read_until("one")
        chat.proc.send_signal(signal.SIGINT)
        await chat.read_until("[stopped]")
        with trio.fail_after(2):
            await llm.hung_up.wait()  # the request was closed
        llm.plan = Plan([{"reply": "fine"}])
        await chat.say("next")
        await chat.read_until("fine")
        code, out, _ = await chat.finish()
        assert code == 0
        assert out.splitlines()[0].startswith("one") and out.splitlines()[0].endswith("[stopped]")
        assert llm.requests[1]["messages"][-2]["content"].endswith("…")
        nursery.cancel_scope.cancel()


async def test_n8n_agents_and_failures(tmp_path: Path) -> None:
    public = generate_key_pair(tmp_path / "keys", "k")
    hook = FakeN8n(Plan([{"json": {"output": "from the workflow"}}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, hook)
        url = seal(f"{hook.base_url}/webhook/chat-secret", public.key, "plugins.n8n.webhook_url")
        write(tmp_path, "flow.yaml", f"plugins:\n  n8n: {{webhook_url: '{url}', mode: primary}}\n")
        chat = await Chat.start(tmp_path, "flow", "--once", "hello")
        assert await chat.finish() == (0, "from the workflow\n", "")
        # No LLM reachable: a clear error within seconds, exit 1, no traceback.
        agent(tmp_path, "http://127.0.0.1:9")
        chat = await Chat.start(tmp_path, "helper", "--once", "hello")
        code, out, err = await chat.finish()
        assert (code, out) == (1, "")
        assert "the LLM at http://127.0.0.1:9/v1: cannot reach it" in err
        assert "Traceback" not in err
        chat = await Chat.start(tmp_path, "nobody", "--once", "hello")
        code, _, err = await chat.finish()
        assert code == 2 and "no agent 'nobody' in agents.d/ (agents: flow, helper)" in err
        nursery.cancel_scope.cancel()


async def test_text_that_is_not_utf8_is_refused_in_words_and_the_chat_goes_on(
    tmp_path: Path,
) -> None:
    """Issue 21.2: `--once "$(printf 'caf\\xe9')"` and a piped line with byte 0xff printed an
    ExceptionGroup traceback (httpx could not encode the text), and the next line went
    unanswered."""
    llm = FakeLLM(Plan([{"reply": "Hello."}, {"reply": "Still here."}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        chat = await Chat.start(tmp_path, "helper", "--once", os.fsdecode(b"caf\xe9"))
        code, out, err = await chat.finish()
        assert (code, out) == (1, "")
        assert err.startswith("❌ not sent: byte 0xe9 at character 4 is not UTF-8")
        chat = await Chat.start(tmp_path, "helper")
        assert chat.proc.stdin is not None
        await chat.proc.stdin.send_all(b"hi\n\xffoops\nthere\n")
        code, out, err = await chat.finish()
        assert code == 1  # a line went unanswered: scripts can tell
        assert out.splitlines() == ["Hello.", "Still here."]
        assert "❌ not sent: byte 0xff at character 1 is not UTF-8" in err
        assert "Traceback" not in err
        assert [r["messages"][-1]["content"] for r in llm.requests] == ["hi", "there"]
        nursery.cancel_scope.cancel()


async def test_piped_lines_that_go_unanswered_exit_1(tmp_path: Path) -> None:
    """Issue 21.3: with every answer failing, a piped chat exited 0."""
    agent(tmp_path, "http://127.0.0.1:9")
    chat = await Chat.start(tmp_path, "helper")
    await chat.say("hi")
    await chat.say("there")
    code, out, err = await chat.finish()
    assert (code, out) == (1, "")
    assert err.count("the LLM at http://127.0.0.1:9/v1: cannot reach it") == 2


async def test_a_conversation_goes_on_across_runs_and_another_is_apart(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"reply": "Hello Ann."}, {"reply": "You are Ann."}, {"reply": "Who?"}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        for args in (
            ("--once", "I am Ann"),
            ("--once", "who am I?"),
            ("--once", "who am I?", "--conversation", "other"),
        ):
            chat = await Chat.start(tmp_path, "helper", *args)
            code, _, err = await chat.finish()
            assert code == 0, err
        contents = [[m["content"] for m in r["messages"][1:]] for r in llm.requests]
        assert contents[1] == ["I am Ann", "Hello Ann.", "who am I?"]
        assert contents[2] == ["who am I?"]
        chat = await Chat.start(tmp_path, "helper", "--conversation", "a/b")
        code, _, err = await chat.finish()
        assert code == 2 and "--conversation 'a/b': use 1 to 64 letters" in err
        nursery.cancel_scope.cancel()


async def test_the_terminal_chat_uses_the_agents_tools_and_prints_them(tmp_path: Path) -> None:
    llm = FakeLLM(
        Plan(
            [
                {
                    "tool_calls": [
                        {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}
                    ]
                },
                {"reply": "It is time."},
            ]
        )
    )
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        tools = "tools:\n  time: {command: [mcp-server-time, --local-timezone, UTC]}\n"
        agent(tmp_path, llm.base_url, extra=tools)
        chat = await Chat.start(tmp_path, "helper", "--once", "what time is it?")
        code, out, err = await chat.finish()
        assert (code, out) == (0, "It is time.\n")
        assert "🔧 time.get_current_time…" in err
        result = llm.requests[1]["messages"][-1]
        assert result["role"] == "tool" and '"timezone": "UTC"' in result["content"]
        nursery.cancel_scope.cancel()
