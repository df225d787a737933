"""The status server: JSON about agents and actors, live events, metrics and the dashboard.

It only reads the runtime's state table (and asks the supervisor for one thing: a restart).
Off loopback it requires the API token, as ``Authorization: Bearer <token>`` or, for browsers'
WebSockets and the dashboard link, ``?token=<token>``; /healthz and /readyz stay open for probes.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .metrics import render_metrics

if TYPE_CHECKING:
    from ..runtime.fleet import Runtime

__all__ = ["agent_view", "agents_view", "create_app", "serve_status"]

log = logging.getLogger("voxbridge.server")
EVENT_BUFFER = 1000  # events a WebSocket client may fall behind by before the oldest are dropped
_OPEN = frozenset({"/healthz", "/readyz"})


def _actor_view(runtime: Runtime, agent_id: str, plugin: str) -> dict[str, Any]:
    status = runtime.table.get((agent_id, plugin))
    if status is None:
        return {"state": "not running"}
    view = status.as_dict()
    del view["agent"], view["plugin"]
    view["counters"] = dict(runtime.table.counters((agent_id, plugin)))
    return view


def agent_view(runtime: Runtime, agent_id: str) -> dict[str, Any] | None:
    """One agent as the API shows it, or None if no file provides it."""
    agent = runtime.index.get(agent_id)
    path = runtime.reconciler.file_of(agent_id)
    problems = [str(p) for p in runtime.table.problems().get(str(path), ())] if path else []
    if agent is None:
        broken = [f for f in runtime.table.problems() if Path(f).stem == agent_id]
        if not broken:
            return None
        return {
            "id": agent_id,
            "name": None,
            "file": broken[0],
            "default": False,
            "is_default": False,
            "loaded": False,
            "error": [str(p) for p in runtime.table.problems()[broken[0]]],
            "plugins": {},
        }
    default_id = runtime.default_agent_id()
    owned = runtime.options.shard.owns(agent_id)
    return {
        "id": agent.id,
        "name": agent.name,
        "file": str(agent.file),
        "default": agent.default,
        "is_default": agent.id == default_id,
        "loaded": True,
        "owned": owned,
        "error": problems or None,
        "plugins": {
            t: (
                {"enabled": True, **_actor_view(runtime, agent.id, t)}
                if p.enabled
                else {"enabled": False, "state": "disabled"}
            )
            for t, p in agent.plugins.items()
        },
    }


def agents_view(runtime: Runtime) -> list[dict[str, Any]]:
    """Every agent, loaded or not, by id."""
    ids = set(runtime.index.by_id) | {Path(f).stem for f in runtime.table.problems()}
    views = (agent_view(runtime, agent_id) for agent_id in sorted(ids))
    return [v for v in views if v is not None]


def _authorized(runtime: Runtime, request: Request | WebSocket) -> bool:
    token = runtime.options.api_token
    if not token or request.url.path in _OPEN:
        return True
    header = request.headers.get("authorization", "")
    given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    given = given or request.query_params.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())


def create_app(runtime: Runtime) -> Starlette:
    """The ASGI app over ``runtime``."""

    def guarded(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not _authorized(runtime, request):
                return JSONResponse(
                    {"error": "unauthorized: send Authorization: Bearer <api token>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return await handler(request)

        return endpoint

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        if runtime.stopping:
            return JSONResponse({"status": "stopping"}, status_code=503)
        if not runtime.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "agents": len(runtime.index.by_id)})

    async def agents(request: Request) -> Response:
        return JSONResponse({"agents": agents_view(runtime)})

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
            {"agent": agent.id, "name": agent.name, **_actor_view(runtime, agent.id, plugin)}
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
        return HTMLResponse(page)

    async def events(websocket: WebSocket) -> None:
        if not _authorized(runtime, websocket):
            await websocket.close(code=4401)
            return
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

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/agents", guarded(agents)),
        Route("/api/agents/{agent_id}", guarded(one_agent)),
        Route("/api/plugins/{plugin}/status", guarded(plugin_status)),
        Route("/api/default-agent", guarded(default_agent)),
        Route(
            "/api/agents/{agent_id}/plugins/{plugin}/restart", guarded(restart), methods=["POST"]
        ),
        Route("/metrics", guarded(metrics)),
        Route("/", guarded(dashboard)),
        WebSocketRoute("/api/events", events),
    ]
    return Starlette(routes=routes)


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
        def started(self, binds: list[str]) -> None:
            url = binds[0]
            log.info("📊 Status server on %s (dashboard at /, metrics at /metrics)", url)
            task_status.started(url)

    app: Any = create_app(runtime)
    await serve(app, config, task_status=Started(), mode="asgi")  # type: ignore[arg-type]
