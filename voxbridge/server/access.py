"""Who may talk to the status server: an ASGI layer in front of every route.

Safe on loopback too, since a browser on the same machine visits hostile pages (SPEC §8):

* **Host** must be the listen address, ``localhost`` (or a ``*.localhost`` name), ``127.0.0.1``,
  ``[::1]`` or an allow-listed name — a page that rebinds its own name to 127.0.0.1 (DNS
  rebinding) is refused.
* **Origin**, when a browser sends one, must be the server's own (or allow-listed) for every
  WebSocket handshake and every state-changing request (cross-site request forgery and
  WebSocket hijacking).
* **The API token**, when set: ``Authorization: Bearer <token>`` for scripts; a browser opens a
  page once as ``/?token=<token>`` and trades it for an HttpOnly, SameSite=Strict cookie holding
  a value derived from the token (never the token), then is redirected to the URL without it.
  ``/healthz`` and ``/readyz`` stay open for probes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["Access", "Guard"]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not a bind
COOKIE_DAYS = 30

Scope = dict[str, Any]


def _split_host(value: str) -> str:
    """The host part of a ``Host`` header (``[::1]:4900`` → ``::1``), lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True)
class Access:
    """The rules: the listen address, the token, and what else is allowed."""

    listen: str
    token: str | None = None
    allow_hosts: frozenset[str] = frozenset()
    allow_origins: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        listen: str,
        token: str | None,
        hosts: Iterable[str] = (),
        origins: Iterable[str] = (),
    ) -> Access:
        return cls(
            listen,
            token,
            frozenset(h.lower() for h in hosts),
            frozenset(o.rstrip("/").lower() for o in origins),
        )

    @property
    def listen_host(self) -> str:
        return _split_host(self.listen)

    @property
    def cookie_name(self) -> str:
        # Cookies ignore ports: one instance per port must not overwrite another's.
        port = self.listen.rsplit(":", 1)[-1]
        return f"voxbridge_auth_{port}" if port.isdigit() else "voxbridge_auth"

    def cookie_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"voxbridge status cookie", hashlib.sha256).hexdigest()

    def host_allowed(self, header: str) -> bool:
        host = _split_host(header)
        if host in _LOCAL_NAMES or host.endswith(".localhost") or host in self.allow_hosts:
            return True
        if host == self.listen_host:
            return True
        # Listening on every address: any name may reach it; the token (required off loopback)
        # guards it, unless names were listed.
        if self.listen_host in _WILDCARD and not self.allow_hosts:
            return True
        try:
            return ipaddress.ip_address(host).is_loopback and self.listen_host in _LOCAL_NAMES
        except ValueError:
            return False

    def origin_allowed(self, origin: str, host: str, scheme: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.allow_origins:
            return True
        parts = urlsplit(origin)
        web = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        return parts.scheme == web and parts.netloc == host.strip().lower()

    def authorized(self, headers: dict[str, str]) -> bool:
        if self.token is None:
            return True
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(
            auth.removeprefix("Bearer ").strip().encode(), self.token.encode()
        ):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no credential
            return False
        morsel = cookie.get(self.cookie_name)
        return morsel is not None and hmac.compare_digest(
            morsel.value.encode(), self.cookie_value().encode()
        )


def _is_page(path: str) -> bool:
    return path == "/" or path.startswith("/chat/")


class Guard:
    """The ASGI app ``app`` behind :class:`Access`'s rules."""

    def __init__(self, app: Any, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        path = scope["path"]
        if not self.access.host_allowed(host):
            await _refuse(
                scope,
                receive,
                send,
                403,
                f"this server does not answer to the name {_split_host(host)!r} (DNS "
                "rebinding protection): use its address, or pass --allow-host NAME",
            )
            return
        origin = headers.get("origin")
        unsafe = scope["type"] == "websocket" or scope["method"] not in _SAFE_METHODS
        scheme = scope.get("scheme", "http")
        if unsafe and origin is not None and not self.access.origin_allowed(origin, host, scheme):
            await _refuse(
                scope,
                receive,
                send,
                403,
                f"cross-origin request from {origin} refused: pass --allow-origin ORIGIN "
                "to allow it",
            )
            return
        if path in OPEN_PATHS or self.access.authorized(headers):
            await self.app(scope, receive, send)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        given = query.get("token")
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and _is_page(path)
            and given is not None
            and self.access.token is not None
            and hmac.compare_digest(given.encode(), self.access.token.encode())
        ):
            await self._exchange(scope, send, query)
            return
        await _refuse(
            scope,
            receive,
            send,
            401,
            "unauthorized: send Authorization: Bearer <api token>, or open a page once as "
            "/?token=<api token> in the browser",
        )

    async def _exchange(self, scope: Scope, send: Any, query: dict[str, str]) -> None:
        """The token from a page URL becomes a cookie; the browser is sent on without it."""
        del query["token"]
        location = scope["path"] + (f"?{urlencode(query)}" if query else "")
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = (
            f"{self.access.cookie_name}={self.access.cookie_value()}; Path=/; HttpOnly; "
            f"SameSite=Strict; Max-Age={COOKIE_DAYS * 86400}{secure}"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"set-cookie", cookie.encode()),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _refuse(scope: Scope, receive: Any, send: Any, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        # Before accepting, a close turns the handshake down (the client sees HTTP 403).
        await receive()
        await send({"type": "websocket.close", "code": 4000 + status, "reason": message[:120]})
        return
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
