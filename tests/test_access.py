"""The probes' findings a to d against a running status server, each through a real client: a
foreign Origin cannot change state (CSRF) nor open a WebSocket (hijacking), a foreign Host gets
nothing (DNS rebinding), the API token leaves URLs for a cookie; and a page served from another
origin, in real Chromium, cannot drive the dashboard or the chat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.browser import ARGS, CHROMIUM, needs_chromium
from tests.fake_brains import FakeLLM, start_fake
from tests.runtime_helpers import wait_state
from tests.test_web_chat import agent, handshake, start
from voxbridge import testing
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.state import ActorState

EVIL = "http://evil.example"


async def fleet(nursery: trio.Nursery, tmp_path: Path, **changes: Any) -> Runtime:
    """A runtime with `helper` (web chat and voice) and `alpha` (an echo actor)."""
    llm = FakeLLM()
    await start_fake(nursery, llm)
    agent(tmp_path, llm.base_url, extra="voice: {}\n")
    (tmp_path / "agents.d" / "alpha.yaml").write_text("name: Alpha\nplugins:\n  echo: {}\n")
    rt = await start(nursery, tmp_path, **changes)
    await wait_state(rt, ("helper", "web"), ActorState.RUNNING)
    await wait_state(rt, ("alpha", "echo"), ActorState.RUNNING)
    return rt


async def test_finding_a_csrf_a_foreign_origin_cannot_restart_an_actor(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        rt = await fleet(nursery, tmp_path, allow_origins=("https://ops.example",))
        url = f"{rt.status_url}/api/agents/alpha/plugins/echo/restart"
        before = testing.attempts["alpha", "echo"]
        async with httpx.AsyncClient() as http:
            for origin in (EVIL, "http://127.0.0.1:1", "null"):
                refused = await http.post(url, headers={"Origin": origin})
                assert refused.status_code == 403, origin
                assert "cross-origin request" in refused.json()["error"]
            assert testing.attempts["alpha", "echo"] == before  # nothing restarted
            # The page's own origin, an allow-listed one, and scripts (no Origin) may.
            for headers in ({"Origin": str(rt.status_url)}, {"Origin": "https://ops.example"}, {}):
                assert (await http.post(url, headers=headers)).status_code == 202
        nursery.cancel_scope.cancel()


async def test_finding_b_dns_rebinding_a_foreign_host_gets_nothing(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        rt = await fleet(nursery, tmp_path, allow_hosts=("voxbridge.lan",))
        port = str(rt.status_url).rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=str(rt.status_url)) as http:
            for path in ("/api/agents", "/", "/metrics", "/chat/helper"):
                r = await http.get(path, headers={"Host": f"evil.example:{port}"})
                assert r.status_code == 403, path
                assert "DNS rebinding" in r.json()["error"]
                assert "Alpha" not in r.text
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"voxbridge.lan:{port}"):
                assert (await http.get("/api/agents", headers={"Host": host})).status_code == 200
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "path", ["/api/events", "/api/agents/helper/chat", "/api/agents/helper/voice"]
)
async def test_finding_c_a_foreign_origin_cannot_open_a_websocket(
    tmp_path: Path, path: str
) -> None:
    async with trio.open_nursery() as nursery:
        rt = await fleet(nursery, tmp_path)
        url = str(rt.status_url).replace("http", "ws", 1) + path
        for origin in (EVIL, "http://127.0.0.1:1", "null"):
            assert await handshake(url, origin=origin) == 403, origin
        assert await handshake(url, origin=str(rt.status_url)) == 101
        nursery.cancel_scope.cancel()


async def test_finding_d_the_token_leaves_urls_for_an_httponly_cookie(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        rt = await fleet(nursery, tmp_path, api_token="probe-token-1")
        async with httpx.AsyncClient(base_url=str(rt.status_url)) as http:
            assert (await http.get("/api/agents?token=probe-token-1")).status_code == 401
            page = await http.get("/chat/helper?token=probe-token-1&x=1")
            assert page.status_code == 303
            assert page.headers["location"] == "/chat/helper?x=1"  # the token is gone
            cookie = page.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            assert "probe-token-1" not in cookie
            assert (await http.get("/api/agents")).status_code == 200  # by the cookie
        async with httpx.AsyncClient(base_url=str(rt.status_url)) as script:
            assert (await script.get("/api/agents")).status_code == 401
            bearer = {"Authorization": "Bearer probe-token-1"}
            assert (await script.get("/api/agents", headers=bearer)).status_code == 200
        nursery.cancel_scope.cancel()


ATTACK = """<!doctype html><meta charset="utf-8"><title>evil</title><script>
const target = new URLSearchParams(location.search).get("target");
const ws = (path) => new Promise((done) => {
  const s = new WebSocket(target.replace("http", "ws") + path);
  s.onopen = () => { s.close(); done("open"); };
  s.onerror = () => done("refused");
});
async function post(path, init) {
  try { return String((await fetch(target + path, {method: "POST", ...init})).status); }
  catch (e) { return "blocked"; }
}
window.attack = async () => ({
  restart: await post("/api/agents/alpha/plugins/echo/restart", {mode: "no-cors"}),
  restart_cors: await post("/api/agents/alpha/plugins/echo/restart", {}),
  events: await ws("/api/events"),
  chat: await ws("/api/agents/helper/chat"),
  voice: await ws("/api/agents/helper/voice"),
});
</script>"""


@needs_chromium
async def test_a_page_from_another_origin_cannot_drive_the_dashboard_or_chat(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        rt = await fleet(nursery, tmp_path)

        async def evil(request: Any) -> HTMLResponse:
            return HTMLResponse(ATTACK)

        config = Config()
        config.bind = ["127.0.0.1:0"]  # another port of the same host: another origin
        app: Any = Starlette(routes=[Route("/", evil)])
        binds = await nursery.start(
            lambda task_status: hypercorn_serve(app, config, task_status=task_status)
        )
        attacker = binds[0]
        before = testing.attempts["alpha", "echo"]

        def browse() -> dict[str, str]:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                page = browser.new_page()
                page.goto(f"{attacker}/?target={rt.status_url}")
                seen: dict[str, str] = page.evaluate("window.attack()")
                # The same socket from the dashboard's own page opens (the test is not moot).
                page.goto(str(rt.status_url))
                page.wait_for_selector("#live.on", timeout=10_000)
                browser.close()
            return seen

        seen = await trio.to_thread.run_sync(browse)
        assert seen == {
            "restart": "0",  # an opaque no-cors answer: the server refused it (403)
            "restart_cors": "blocked",
            "events": "refused",
            "chat": "refused",
            "voice": "refused",
        }
        assert testing.attempts["alpha", "echo"] == before  # nothing was restarted
        nursery.cancel_scope.cancel()
