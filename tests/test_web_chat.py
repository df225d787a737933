"""The web plugin: the chat socket's protocol (SPEC §10) through the real runtime and status
server, real WebSockets, a real streaming LLM on 127.0.0.1 — and the page in real Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.browser import ARGS, CHROMIUM, needs_chromium
from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.runtime_helpers import options, wait_state, wait_until, write
from voxbridge import testing
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState


async def start(nursery: trio.Nursery, tmp_path: Path, **changes: Any) -> Runtime:
    opts = options(tmp_path, listen="127.0.0.1:0", **changes)
    rt: Runtime = await nursery.start(
        lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
    )
    return rt


def agent(tmp_path: Path, llm: str, agent_id: str = "helper", extra: str = "") -> Path:
    return write(
        tmp_path,
        f"{agent_id}.yaml",
        f"name: Helper\n{extra}llm: {{base_url: '{llm}/v1', model: m, timeout: 5s}}\n"
        "plugins:\n  web: {}\n",
    )


def socket_url(rt: Runtime, agent_id: str = "helper", name: str = "chat") -> str:
    assert rt.status_url is not None
    return rt.status_url.replace("http", "ws", 1) + f"/api/agents/{agent_id}/{name}"


async def handshake(url: str, **headers: str) -> int:
    """The HTTP status a WebSocket handshake to ``url`` gets with these headers."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    base = {"connection": "Upgrade", "upgrade": "websocket", "sec-websocket-version": "13"}
    async with httpx.AsyncClient() as http:
        response = await http.get(
            url.replace("ws", "http", 1), headers=base | {"sec-websocket-key": key} | headers
        )
    return response.status_code


async def events_until(ws: WebSocketConnection, last: set[str]) -> list[dict[str, Any]]:
    """Events up to and including the first whose type is in ``last``."""
    seen: list[dict[str, Any]] = []
    with trio.fail_after(10):
        while not seen or seen[-1]["type"] not in last:
            seen.append(json.loads(await ws.get_message()))
    return seen


async def ask(ws: WebSocketConnection, text: str) -> list[dict[str, Any]]:
    await ws.send_message(json.dumps({"type": "message", "text": text}))
    return await events_until(ws, {"done", "error"})


async def test_an_answer_streams_as_deltas_and_the_conversation_is_kept(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"chunks": ["Hello ", "there, ", "Ann."], "chunk_delay": 0.3}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url, extra="system_prompt: Be kind.\nhistory: 4\n")
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        async with open_websocket_url(socket_url(rt)) as ws:
            await ws.send_message(json.dumps({"type": "message", "text": "hi, I am Ann"}))
            first = json.loads(await ws.get_message())
            # The first delta is here while the LLM has sent one chunk of three.
            assert first == {"type": "delta", "text": "Hello "}
            assert llm.chunks_sent == 1
            rest = await events_until(ws, {"done"})
            assert [e.get("text") for e in rest] == ["there, ", "Ann.", None]
            assert rest[-1] == {"type": "done"}

            llm.plan = Plan([{"reply": "You are Ann."}])
            events = await ask(ws, "who am I?")
            assert "".join(e.get("text", "") for e in events).strip() == "You are Ann."
            assert llm.requests[1]["messages"] == [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "hi, I am Ann"},
                {"role": "assistant", "content": "Hello there, Ann."},
                {"role": "user", "content": "who am I?"},
            ]
        # A new connection is a new conversation.
        async with open_websocket_url(socket_url(rt)) as ws:
            await ask(ws, "again")
            assert len(llm.requests[2]["messages"]) == 2  # the system prompt and "again"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ("hello?", r"not JSON .*: send \{\"type\": \"message\""),
        ('{"type": "shout", "text": "hi"}', r"unknown type 'shout'"),
        ("[1, 2]", r"unknown type None"),
        ('{"type": "message", "text": ""}', r'"text" must be a non-empty string'),
        ('{"type": "message", "text": 42}', r'"text" must be a non-empty string'),
        (
            '{"type": "message", "text": "\\ud800"}',
            r'"text" is not valid Unicode \(U\+D800 at character 1 is half of a surrogate pair',
        ),
        ('{"type": "message", "text": "caf\\udce9"}', r"byte 0xe9 at character 4 is not UTF-8"),
        (b"\x00\x01binary", r"send JSON text frames"),
        ('{"type": "message", "text": "' + "x" * 1_048_576 + '"}', r"message too large"),
    ],
)
async def test_bad_input_gets_an_error_and_the_connection_goes_on(
    tmp_path: Path, frame: str | bytes, error: str
) -> None:
    llm = FakeLLM(Plan([{"reply": "still fine"}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        async with open_websocket_url(socket_url(rt), message_queue_size=4) as ws:
            await ws.send_message(frame)
            (event,) = await events_until(ws, {"error"})
            assert re.search(error, event["message"]), event["message"]
            events = await ask(ws, "and now?")
            assert events[-1] == {"type": "done"}
        assert llm.requests and len(llm.requests) == 1
        nursery.cancel_scope.cancel()


async def test_an_unknown_agent_or_one_without_web_gets_an_error(tmp_path: Path) -> None:
    write(tmp_path, "quiet.yaml", "name: Quiet\n")
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        for agent_id, why in (
            ("nobody", "no agent 'nobody' here"),
            ("quiet", "enable its web plugin"),
        ):
            async with open_websocket_url(socket_url(rt, agent_id)) as ws:
                event = json.loads(await ws.get_message())
                assert event["type"] == "error" and why in event["message"]
        async with httpx.AsyncClient(base_url=rt.status_url or "") as http:
            page = await http.get("/chat/quiet")
            assert page.status_code == 404 and "plugins: {web: {enabled: true}}" in page.text
            # Issue 21.5: what cannot be an agent id never reaches a page (a NUL byte did).
            for bad in ("quiet%00", "%3Cb%3Ehi", "Quiet", "quiet%0A", "-x"):
                page = await http.get(f"/chat/{bad}")
                assert (page.status_code, page.text) == (404, "Not Found"), bad
                assert page.headers["content-type"].startswith("text/plain")
            assert (await http.get("/healthz")).status_code == 200  # the server goes on
        nursery.cancel_scope.cancel()


async def test_the_agent_deleted_mid_answer(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"chunks": ["a "] * 50, "chunk_delay": 0.2}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        path = agent(tmp_path, llm.base_url)
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        async with open_websocket_url(socket_url(rt)) as ws:
            await ws.send_message(json.dumps({"type": "message", "text": "talk"}))
            assert json.loads(await ws.get_message())["type"] == "delta"
            path.unlink()
            await rt.reconciler.apply_paths([path])
            events = await events_until(ws, {"error"})
            assert "stopped mid-answer" in events[-1]["message"]
            with trio.fail_after(2):
                await llm.hung_up.wait()  # the LLM request went with it
            # The connection stays; the agent is gone.
            events = await ask(ws, "still there?")
            assert events == [
                {
                    "type": "error",
                    "message": "agent 'helper' is not available: its file was removed or its "
                    "web plugin is off (reload this page once it is back)",
                }
            ]
        nursery.cancel_scope.cancel()


async def test_cancel_stops_the_answer_and_keeps_what_was_said(tmp_path: Path) -> None:
    llm = FakeLLM(Plan([{"chunks": ["one ", "two ", "three ", "four"], "chunk_delay": 0.3}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        async with open_websocket_url(socket_url(rt)) as ws:
            await ws.send_message(json.dumps({"type": "message", "text": "count"}))
            await ws.get_message()
            await ws.send_message(json.dumps({"type": "cancel"}))
            events = await events_until(ws, {"done"})
            assert events[-1] == {"type": "done", "cut": True}
            with trio.fail_after(2):
                await llm.hung_up.wait()
            llm.plan = Plan([{"reply": "ok"}])
            await ask(ws, "next")
            said = llm.requests[1]["messages"][-2]
            assert said["role"] == "assistant" and said["content"].startswith("one")
            assert said["content"].endswith("…")
        nursery.cancel_scope.cancel()


async def test_no_llm_reachable_says_which_url_and_what_to_do(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        path = agent(tmp_path, "http://127.0.0.1:9")
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        started = trio.current_time()
        async with open_websocket_url(socket_url(rt)) as ws:
            (event,) = await ask(ws, "hello?")
        assert trio.current_time() - started < 6  # within seconds, not a hang
        assert event["type"] == "error"
        assert "the LLM at http://127.0.0.1:9/v1: cannot reach it" in event["message"]
        assert "`ollama serve`" in event["message"]
        # The base_url's own line and column (issue 21.5: it pointed at `llm:`).
        assert f"set llm.base_url in {path}:2:7 to a running" in event["message"]
        nursery.cancel_scope.cancel()


async def test_other_sites_cannot_drive_the_chat(tmp_path: Path) -> None:
    llm = FakeLLM()
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        url = socket_url(rt)
        for origin in ("http://evil.example", "http://127.0.0.1:1"):  # another port: another origin
            assert await handshake(url, origin=origin) == 403
        assert await handshake(url, host="evil.example") == 403  # DNS rebinding
        own = rt.status_url.encode()  # type: ignore[union-attr]
        async with open_websocket_url(url, extra_headers=[(b"origin", own)]) as ws:
            assert (await ask(ws, "hi"))[-1] == {"type": "done"}
        assert len(llm.requests) == 1
        nursery.cancel_scope.cancel()


@needs_chromium
async def test_the_chat_page_in_chromium(tmp_path: Path) -> None:
    chunks = [f"word{n} " for n in range(12)]
    llm = FakeLLM(Plan([{"chunks": chunks, "chunk_delay": 0.25}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url, extra="description: Answers anything\n")
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        url = f"{rt.status_url}/chat/helper"

        def browse() -> dict[str, Any]:
            from playwright.sync_api import sync_playwright

            seen: dict[str, Any] = {}
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#state.on", timeout=10_000)
                seen["title"] = page.title()
                page.fill("#text", "tell me twelve words")
                page.keyboard.press("Enter")
                # The answer grows while the LLM is still writing...
                page.wait_for_selector(".msg.agent.writing", timeout=10_000)
                page.wait_for_function(
                    "document.querySelector('.msg.agent').textContent.includes('word1')"
                )
                seen["partial"] = page.inner_text(".msg.agent")
                seen["sent_then"] = llm.chunks_sent
                # ...and is whole once done.
                page.wait_for_selector(".msg.agent:not(.writing)", timeout=10_000)
                seen["final"] = page.inner_text(".msg.agent")
                seen["user"] = page.inner_text(".msg.user")
                browser.close()
            return seen

        seen = await trio.to_thread.run_sync(browse)
        assert seen["title"] == "Helper · voxbridge"
        assert seen["user"] == "tell me twelve words"
        assert seen["sent_then"] < len(chunks)
        assert seen["partial"].startswith("word0 word1")
        assert seen["final"] == "".join(chunks).strip()
        nursery.cancel_scope.cancel()


async def test_the_dashboard_links_agents_with_web_to_their_chat(tmp_path: Path) -> None:
    write(tmp_path, "quiet.yaml", "name: Quiet\n")
    agent(tmp_path, "http://127.0.0.1:9")
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        await wait_until(rt, lambda: rt.table.get(("helper", "web")) is not None)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        async with httpx.AsyncClient(base_url=rt.status_url or "") as http:
            agents = {a["id"]: a for a in (await http.get("/api/agents")).json()["agents"]}
            assert agents["helper"]["chat"] == "/chat/helper"
            assert agents["quiet"]["chat"] is None
            page = await http.get("/chat/helper")
            assert page.status_code == 200 and "<title>voxbridge chat</title>" in page.text
            assert page.headers["referrer-policy"] == "no-referrer"
        nursery.cancel_scope.cancel()


HOSTILE = """\
# Weather *today*
Some **bold**, _em_, `x<y>`, ~~old~~ and snake_case_name.

- one
- two with [a link](https://example.com/a?b=1)
  - nested
1. first
2. second

> quoted <b>not bold</b>

```html
<script>window.pwned = "code block"</script>
```

<img src=x onerror="window.pwned='img'">
<script>window.pwned = 'script'</script>
[click me](javascript:window.pwned='link') [data](data:text/html,hi)
<a href="javascript:window.pwned='a'">raw anchor</a>
<iframe src="javascript:window.pwned='iframe'"></iframe>
Visit https://example.org/path. Or [mail](mailto:a@example.com).

| a | b |
|---|---|
| <svg onload="window.pwned='svg'"> | **x** |
"""


@needs_chromium
async def test_the_models_markdown_is_shown_and_its_html_stays_text(tmp_path: Path) -> None:
    """Issue 21.10: the page showed the LLM's Markdown raw; it is rendered now, safely: what the
    model writes as HTML (script, event handlers, javascript: links) stays text."""
    chunks = [HOSTILE[i : i + 40] for i in range(0, len(HOSTILE), 40)]  # splits mid-syntax
    llm = FakeLLM(Plan([{"chunks": chunks, "chunk_delay": 0.02}]))
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agent(tmp_path, llm.base_url)
        rt = await start(nursery, tmp_path)
        await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
        url = f"{rt.status_url}/chat/helper"

        def browse() -> dict[str, Any]:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page()
                dialogs: list[str] = []
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.goto(url)
                page.wait_for_selector("#state.on", timeout=10_000)
                page.fill("#text", "show me")
                page.keyboard.press("Enter")
                page.wait_for_selector(".msg.agent:not(.writing)", timeout=10_000)
                page.wait_for_timeout(500)  # time for an onerror or onload to fire
                seen: dict[str, Any] = page.evaluate(
                    """() => {
                      const m = document.querySelector(".msg.agent");
                      const all = (s) => [...m.querySelectorAll(s)];
                      return {
                        pwned: window.pwned ?? null,
                        active: all("script, img, iframe, svg, object, embed, style").length,
                        handlers: all("*").flatMap((e) => [...e.attributes])
                          .filter((a) => a.name.startsWith("on")).length,
                        h1: all("h1").map((e) => e.innerHTML),
                        strong: all("strong").map((e) => e.textContent),
                        em: all("em").map((e) => e.textContent),
                        code: all("p code").map((e) => e.textContent),
                        del: all("del").map((e) => e.textContent),
                        ul: all("ul > li").length, nested: all("ul ul > li").length,
                        ol: all("ol > li").map((e) => e.textContent),
                        quote: all("blockquote").map((e) => e.textContent),
                        pre: all("pre code").map((e) => [e.dataset.lang, e.textContent]),
                        links: all("a").map((e) => [e.textContent, e.href, e.rel, e.target]),
                        cells: all("th, td").map((e) => e.textContent),
                        text: m.textContent,
                      };
                    }"""
                )
                seen["dialogs"] = dialogs
                # Drawn icons, not emoji (boxes where no emoji font is installed).
                seen["mic"] = page.evaluate("document.querySelectorAll('#mic svg').length")
                seen["emoji"] = page.evaluate(
                    "/\\p{Emoji_Presentation}/u.test(document.documentElement.outerHTML)"
                )
                browser.close()
            return seen

        seen = await trio.to_thread.run_sync(browse)
        nursery.cancel_scope.cancel()
    assert (seen["pwned"], seen["active"], seen["handlers"], seen["dialogs"]) == (None, 0, 0, [])
    assert seen["h1"] == ["Weather <em>today</em>"]
    assert seen["strong"] == ["bold", "x"]
    assert seen["em"] == ["today", "em"]  # not snake_case_name
    assert (seen["code"], seen["del"]) == (["x<y>"], ["old"])
    assert (seen["ul"], seen["nested"], seen["ol"]) == (3, 1, ["first", "second"])
    assert seen["quote"] == ["quoted <b>not bold</b>"]
    assert seen["pre"] == [["html", '<script>window.pwned = "code block"</script>']]
    assert seen["links"] == [
        ["a link", "https://example.com/a?b=1", "noopener noreferrer", "_blank"],
        ["https://example.org/path", "https://example.org/path", "noopener noreferrer", "_blank"],
        ["mail", "mailto:a@example.com", "noopener noreferrer", "_blank"],
    ]
    for raw in (
        "<img src=x onerror=\"window.pwned='img'\">",
        "<script>window.pwned = 'script'</script>",
        "click me data",  # javascript: and data: links are text, not links
        "<a href=\"javascript:window.pwned='a'\">raw anchor</a>",
        "<iframe src=\"javascript:window.pwned='iframe'\"></iframe>",
        "snake_case_name",
    ):
        assert raw in seen["text"], raw
    assert seen["cells"] == ["a", "b", "<svg onload=\"window.pwned='svg'\">", "x"]
    assert (seen["mic"], seen["emoji"]) == (1, False)
