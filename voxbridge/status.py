"""``voxbridge status``: the running instance as a table, and ``--follow`` for live changes."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Any

import httpx

from .errors import UsageError, VoxbridgeError

__all__ = ["memory_text", "show_status", "table", "version_text", "wait_for"]

WAIT_POLL = 0.25  # seconds between looks while waiting for a version


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


def version_text(version: dict[str, Any] | None) -> str:
    """A live version as the table shows it: the blob id's first 8 digits, and the commit's."""
    if not version:
        return "-"
    text = str(version["blob"])[:8]
    return text + (f"@{str(version['commit'])[:8]}" if version.get("commit") else "")


def table(agents: list[dict[str, Any]]) -> str:
    """The agents by plugins table, aligned for a terminal."""
    rows = [("AGENT", "VERSION", "PLUGIN", "STATE", "RESTARTS", "FOR", "LAST ERROR")]
    for agent in agents:
        name = ("⭐ " if agent.get("is_default") else "") + agent["id"]
        version = agent.get("version")
        live = version_text(version)
        if agent.get("error") and not agent.get("plugins"):
            rows.append((name, live, "-", "error", "", "", agent["error"][0]))
            continue
        # Tool servers are actors too (tools.<name>); an n8n tool has none to show.
        servers = {
            f"tools.{n}": t for n, t in agent.get("tools", {}).items() if t.get("kind") != "n8n"
        }
        for plugin, p in {**agent.get("plugins", {}), **servers}.items():
            state = p.get("state", "")
            error = p.get("last_error") or ""
            swap = p.get("swap")
            if p.get("kept_previous_version") and swap:
                state += " (kept previous version)"
                error = swap.get("error") or ""
            elif swap:
                state += f" (new version {swap.get('state')})"
            rows.append(
                (
                    name,
                    live,
                    plugin,
                    state,
                    str(p.get("restarts", "")),
                    _ago(p.get("since")),
                    error[:80],
                )
            )
        if not agent.get("plugins") and not servers:
            rows.append((name, live, "-", "no plugins", "", "", ""))
        rejected = (version or {}).get("rejected")
        if rejected:
            what = f"{str(rejected.get('blob') or 'unreadable')[:8]} rejected"
            errors = rejected.get("errors") or [""]
            rows.append((name, what, "-", "kept previous version", "", "", errors[0][:120]))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return (
        "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:6])) + "  " + row[6]
            for row in rows
        ).rstrip()
        + "\n"
    )


def memory_text(health: dict[str, Any] | None) -> str:
    """One line on memory under the table: where it is and whether it works."""
    if health is None:
        return "memory: in the process only (--store none)\n"
    line = f"memory: {health['store']} {health['state']}"
    if health.get("state") != "ok" and health.get("detail"):
        line += f": {health['detail']}"
    if health.get("pending"):
        line += f"; {health['pending']} writes waiting"
    if health.get("lost"):
        line += f"; {health['lost']} writes lost"
    if health.get("notice"):
        line += f"\n  ⚠️ {health['notice']}"
    return line + "\n"


def _get_agents(base: str, headers: dict[str, str], **params: str) -> dict[str, Any]:
    try:
        response = httpx.get(f"{base}/api/agents", headers=headers, params=params, timeout=5)
    except httpx.HTTPError as exc:
        raise UsageError(
            f"no voxbridge status server at {base} ({type(exc).__name__}): is `voxbridge run` "
            "running, and with which --listen?"
        ) from None
    if response.status_code == 401:
        raise UsageError(f"{base} wants an API token: pass --api-token")
    if response.status_code != 200:
        raise VoxbridgeError(f"{base}/api/agents answered HTTP {response.status_code}")
    body: dict[str, Any] = response.json()
    return body


def wait_for(url: str, token: str | None, version: str, *, timeout: float) -> int:
    """Wait until the fleet runs ``version`` (a commit or a blob id); returns the exit code:
    0 once it does, 1 at once if that version was rejected, 1 with what is still waiting
    after ``timeout`` seconds.

    Raises:
        UsageError: the server cannot be reached or refuses the token.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    deadline = time.monotonic() + timeout
    while True:
        report = _get_agents(base, headers, version=version)["at_version"]
        if report["done"]:
            what = f"commit {report['commit'][:12]}" if report["commit"] else f"blob {version}"
            print(f"✓ {what} is live: {', '.join(report['agents']) or 'no agent file in it'}")
            return 0
        if report["rejected"]:
            for line in report["rejected"]:
                print(f"✗ {line}", file=sys.stderr)
            return 1
        if time.monotonic() >= deadline:
            print(f"✗ {version} is not live after {timeout:g}s:", file=sys.stderr)
            for line in report["waiting"]:
                print(f"  {line}", file=sys.stderr)
            return 1
        time.sleep(min(WAIT_POLL, max(0.0, deadline - time.monotonic())))


def show_status(url: str, token: str | None, *, json_out: bool, follow: bool) -> int:
    """Print the status (and follow it); returns the exit code.

    Raises:
        UsageError: the server cannot be reached or refuses the token.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    body = _get_agents(base, headers)
    agents = body["agents"]
    sys.stdout.write(
        json.dumps(agents, indent=2) + "\n"
        if json_out
        else table(agents) + memory_text(body.get("memory"))
    )
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
            elif kind == "memory":
                print(f"{when}  {memory_text(event).rstrip()}", flush=True)
            elif kind != "hello":
                detail = "; ".join(event.get("problems", [])) or event.get("file", "")
                print(f"{when}  {kind}  {event.get('agent', '')}  {detail}".rstrip(), flush=True)
