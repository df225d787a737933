"""``voxbridge status``: the running instance as a table, and ``--follow`` for live changes."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Any

import httpx

from .errors import UsageError, VoxbridgeError

__all__ = ["show_status", "table"]


def _ago(ts: float | None) -> str:
    if not ts:
        return ""
    s = max(0, round(time.time() - ts))
    return (
        f"{s}s"
        if s < 60
        else f"{s // 60}m{s % 60:02d}s"
        if s < 3600
        else f"{s // 3600}h{s % 3600 // 60:02d}m"
    )


def table(agents: list[dict[str, Any]]) -> str:
    """The agents by plugins table, aligned for a terminal."""
    rows = [("AGENT", "PLUGIN", "STATE", "RESTARTS", "FOR", "LAST ERROR")]
    for agent in agents:
        name = ("⭐ " if agent.get("is_default") else "") + agent["id"]
        if agent.get("error") and not agent.get("plugins"):
            rows.append((name, "-", "error", "", "", agent["error"][0]))
            continue
        for plugin, p in agent.get("plugins", {}).items():
            rows.append(
                (
                    name,
                    plugin,
                    p.get("state", ""),
                    str(p.get("restarts", "")),
                    _ago(p.get("since")),
                    (p.get("last_error") or "")[:80],
                )
            )
        if not agent.get("plugins"):
            rows.append((name, "-", "no plugins", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return (
        "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5]
            for row in rows
        ).rstrip()
        + "\n"
    )


def show_status(url: str, token: str | None, *, json_out: bool, follow: bool) -> int:
    """Print the status (and follow it); returns the exit code.

    Raises:
        UsageError: the server cannot be reached or refuses the token.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    try:
        response = httpx.get(f"{base}/api/agents", headers=headers, timeout=5)
    except httpx.HTTPError as exc:
        raise UsageError(
            f"no voxbridge status server at {base} ({type(exc).__name__}): is `voxbridge run` "
            "running, and with which --listen?"
        ) from None
    if response.status_code == 401:
        raise UsageError(f"{base} wants an API token: pass --api-token")
    if response.status_code != 200:
        raise VoxbridgeError(f"{base}/api/agents answered HTTP {response.status_code}")
    agents = response.json()["agents"]
    sys.stdout.write(json.dumps(agents, indent=2) + "\n" if json_out else table(agents))
    sys.stdout.flush()
    if follow:
        import trio

        trio.run(_follow, base, token, json_out)
    return 0


async def _follow(base: str, token: str | None, json_out: bool) -> None:
    from trio_websocket import open_websocket_url

    ws_url = base.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else None
    async with open_websocket_url(ws_url + "/api/events", extra_headers=headers) as ws:
        while True:
            event = json.loads(await ws.get_message())
            if json_out:
                print(json.dumps(event), flush=True)
                continue
            when = dt.datetime.fromtimestamp(event["ts"]).strftime("%H:%M:%S")
            kind = event["type"]
            if kind == "actor":
                error = f"  {event['last_error']}" if event.get("last_error") else ""
                print(
                    f"{when}  {event['agent']}/{event['plugin']}  {event['state']}{error}",
                    flush=True,
                )
            elif kind != "hello":
                detail = "; ".join(event.get("problems", [])) or event.get("file", "")
                print(f"{when}  {kind}  {event.get('agent', '')}  {detail}".rstrip(), flush=True)
