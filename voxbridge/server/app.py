"""The status server: JSON about agents and actors, live events, metrics, the dashboard, and
the pages and sockets actors offer (the ``web`` plugin's chat).

It reads the runtime's state table and services (and asks the supervisor for one thing: a
restart). Every request passes :mod:`~voxbridge.server.access` first: Host, Origin, API token.
"""

from __future__ import annotations

import html
import json
import logging
import time
from errno import EACCES, EADDRINUSE, EADDRNOTAVAIL
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..config.load import is_agent_id
from ..errors import ListenError
from .access import Access, Guard
from .metrics import render_metrics
from .views import actor_view, agent_view, agents_view, version_report, web_endpoints

if TYPE_CHECKING:
    from ..runtime.fleet import Runtime

__all__ = ["create_app", "serve_status"]

log = logging.getLogger("voxbridge.server")
EVENT_BUFFER = 1000  # events a WebSocket client may fall behind by before the oldest are dropped


def create_app(runtime: Runtime) -> Starlette:
    """The ASGI app over ``runtime``."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        if runtime.stopping:
            return JSONResponse({"status": "stopping"}, status_code=503)
        if not runtime.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "agents": len(runtime.index.by_id)})

    async def agents(request: Request) -> Response:
        health = runtime.memory.health()
        body: dict[str, Any] = {
            "agents": agents_view(runtime),
            "memory": health.as_dict() if health is not None else None,
        }
        wanted = request.query_params.get("version")
        if wanted is not None:
            body["at_version"] = await version_report(runtime, wanted)
        return JSONResponse(body)

    async def one_agent(request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        view = agent_view(runtime, agent_id)
        if view is None:
            return JSONResponse({"error": f"no agent '{agent_id}'"}, status_code=404)
        return JSONResponse(view)

    async def plugin_status(request: Request) -> Response:
        plugin = request.path_params["plugin"]
        if plugin not in runtime.plugins:
            return JSONResponse(
                {"error": f"no plugin type '{plugin}'; installed: {', '.join(runtime.plugins)}"},
                status_code=404,
            )
        actors = [
            {"agent": agent.id, "name": agent.name, **actor_view(runtime, agent.id, plugin)}
            for agent in sorted(runtime.index.by_id.values(), key=lambda a: a.id)
            if plugin in agent.enabled_plugins
        ]
        by_state: dict[str, int] = {}
        for actor in actors:
            by_state[actor["state"]] = by_state.get(actor["state"], 0) + 1
        return JSONResponse({"plugin": plugin, "by_state": by_state, "actors": actors})

    async def default_agent(request: Request) -> Response:
        info = runtime.default_agent.info()
        info["selections"] = {str(g): a for g, a in runtime.selections.all().items()}
        return JSONResponse(info)

    async def restart(request: Request) -> Response:
        key = (request.path_params["agent_id"], request.path_params["plugin"])
        if key not in runtime.supervisor:
            return JSONResponse({"error": f"no running actor {key[0]}/{key[1]}"}, status_code=404)
        log.info(
            "🔄 %s/%s restart requested through the API",
            *key,
            extra={"agent": key[0], "plugin": key[1]},
        )
        await runtime.supervisor.restart(key)
        return JSONResponse({"restarted": f"{key[0]}/{key[1]}"}, status_code=202)

    async def metrics(request: Request) -> Response:
        body, content_type = render_metrics(runtime)
        return Response(body, media_type=content_type)

    async def dashboard(request: Request) -> Response:
        page = files("voxbridge.server").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    async def events(websocket: WebSocket) -> None:
        await websocket.accept()
        with runtime.table.subscribe(maxlen=EVENT_BUFFER) as feed:
            await websocket.send_text(json.dumps({"type": "hello", "ts": time.time()}))
            async with trio.open_nursery() as nursery:

                async def until_closed() -> None:
                    try:
                        while True:
                            await websocket.receive_text()
                    except WebSocketDisconnect:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(until_closed)
                reported = 0
                while True:
                    event = await feed.receive()
                    if feed.dropped != reported:
                        missed = feed.dropped - reported
                        reported = feed.dropped
                        await websocket.send_text(
                            json.dumps(
                                {
                                    "type": "dropped",
                                    "ts": time.time(),
                                    "count": missed,
                                    "note": "this client fell behind: oldest events dropped",
                                }
                            )
                        )
                    await websocket.send_text(json.dumps(event.as_dict(), default=str))

    async def chat_page(request: Request) -> Response:
        agent_id = request.path_params["agent_id"]
        if not is_agent_id(agent_id):  # a NUL byte, markup...: never written into a page
            return PlainTextResponse("Not Found", status_code=404)
        for endpoints in web_endpoints(runtime, agent_id):
            page = endpoints.page("chat")
            if page is not None:
                return HTMLResponse(page, headers=_PAGE_HEADERS)
        return HTMLResponse(_no_chat(runtime, agent_id), status_code=404)

    async def agent_socket(websocket: WebSocket) -> None:
        agent_id = websocket.path_params["agent_id"]
        name = websocket.path_params["name"]
        for endpoints in web_endpoints(runtime, agent_id):
            if await endpoints.socket(name, websocket):
                return
        # Nothing serves it: say why in the protocol's own error event, then close.
        await websocket.accept()
        reason = f"no '{name}' socket for agent '{agent_id}'"
        if runtime.index.get(agent_id) is None:
            reason = f"no agent '{agent_id}' here"
        elif name in ("chat", "voice"):
            reason += ": enable its web plugin (plugins: {web: {enabled: true}})"
        await websocket.send_text(json.dumps({"type": "error", "message": reason}))
        await websocket.close(code=4404)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/agents", agents),
        Route("/api/agents/{agent_id}", one_agent),
        Route("/api/plugins/{plugin}/status", plugin_status),
        Route("/api/default-agent", default_agent),
        Route("/api/agents/{agent_id}/plugins/{plugin}/restart", restart, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/", dashboard),
        Route("/chat/{agent_id}", chat_page),
        WebSocketRoute("/api/events", events),
        WebSocketRoute("/api/agents/{agent_id}/{name}", agent_socket),
    ]
    return Starlette(routes=routes)


# The pages hold no token, and must not send one onwards either.
_PAGE_HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def _no_chat(runtime: Runtime, agent_id: str) -> str:
    agent = runtime.index.get(agent_id)
    if agent is None:
        why = f"There is no agent <b>{html.escape(agent_id)}</b> here."
    else:
        why = (
            f"Agent <b>{html.escape(agent.name)}</b> has no chat: add "
            "<code>plugins: {web: {enabled: true}}</code> to "
            f"<code>{html.escape(str(agent.file))}</code>."
        )
    return (
        '<!doctype html><meta charset="utf-8"><title>no chat</title>'
        f'<p>{why}</p><p><a href="/">Back to the dashboard</a></p>'
    )


async def serve_status(
    runtime: Runtime, listen: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the status app on ``listen`` (HOST:PORT; port 0 picks one); reports its URL."""
    config = Config()
    config.bind = [listen]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0

    class Started:  # hypercorn reports every bind; one is what we asked for
        url: str | None = None

        def started(self, binds: list[str]) -> None:
            self.url = binds[0]
            log.info("📊 Status server on %s (dashboard at /, metrics at /metrics)", self.url)
            task_status.started(self.url)

    options = runtime.options
    access = Access.of(listen, options.api_token, options.allow_hosts, options.allow_origins)
    app: Any = Guard(create_app(runtime), access)
    started = Started()
    try:
        await serve(app, config, task_status=started, mode="asgi")  # type: ignore[arg-type]
    except* OSError as group:
        if started.url is not None:
            raise
        raise ListenError(_cannot_listen(listen, group.exceptions[0])) from None


def _cannot_listen(listen: str, exc: BaseException) -> str:
    """Why the status server cannot bind ``listen``, and what to do (one line)."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    errno = exc.errno if isinstance(exc, OSError) else None
    why = {
        EADDRINUSE: "the address is in use (another `voxbridge run`?): stop that, or pass "
        "--listen HOST:PORT with a free port",
        EADDRNOTAVAIL: "it is not an address of this host: pass --listen with one of its "
        "addresses (127.0.0.1:4900)",
        EACCES: "not permitted (ports below 1024 need privileges): pass --listen with a port "
        "from 1024 up",
    }.get(errno or 0, f"{exc}: pass --listen HOST:PORT with another address")
    return f"cannot listen on {listen}: {why}, or --listen none to run without the status server"
