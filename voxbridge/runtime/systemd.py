"""Telling systemd how we are: the sd_notify protocol, in a few lines, without libsystemd.

With ``Type=notify`` systemd waits for ``READY=1`` (sent once the first load is applied), shows
``STATUS=`` in ``systemctl status``, sees ``RELOADING=1``/``READY=1`` around each applied batch of
file changes and ``STOPPING=1`` on shutdown, and, when the unit sets ``WatchdogSec=``, expects
``WATCHDOG=1`` at least every ``$WATCHDOG_USEC`` (sent at half that). Outside systemd
(``$NOTIFY_SOCKET`` unset) every call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping

import trio

__all__ = ["Notifier"]


class Notifier:
    """Sends sd_notify datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@abstract``)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 1e6 if watched else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *lines: str) -> None:
        """Send ``KEY=value`` lines as one datagram; a vanished socket is ignored."""
        if not self._address:
            return
        with (
            contextlib.suppress(OSError),
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
        ):
            sock.sendto("\n".join(lines).encode(), self._address)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    async def watchdog(self) -> None:
        """Keep systemd's watchdog fed while the event loop is alive (never returns)."""
        if self.watchdog_interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval / 2)
