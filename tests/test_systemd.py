"""sd_notify against a real datagram socket: READY, RELOADING, STATUS, WATCHDOG, STOPPING."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import clean_env
from voxbridge import testing
from voxbridge.runtime.systemd import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(15)
    yield sock
    sock.close()


def next_with(sock: socket.socket, key: str) -> str:
    """The next datagram holding ``key`` (watchdog pings in between are skipped)."""
    while True:
        message = sock.recv(4096).decode()
        if key in message.splitlines() or any(
            line.startswith(key) for line in message.splitlines()
        ):
            return message


def test_the_lifecycle_as_systemd_sees_it(tmp_path: Path, notify_socket: socket.socket) -> None:
    site = tmp_path / "site"
    testing.write_entry_points(site)
    (tmp_path / "agents.d").mkdir()
    (tmp_path / "agents.d" / "a.yaml").write_text("plugins:\n  echo: {}\n  broken: {}\n")
    env = clean_env(
        PYTHONPATH=str(site), NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="400000"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxbridge", "run", "--listen", "none"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = next_with(notify_socket, "READY=1")
        assert "STATUS=1 agents; actors: " in ready
        assert next_with(notify_socket, "WATCHDOG=1") == "WATCHDOG=1"
        (tmp_path / "agents.d" / "b.yaml").write_text("name: B\n")
        reloading = next_with(notify_socket, "RELOADING=1")
        assert "MONOTONIC_USEC=" in reloading
        assert "STATUS=2 agents" in next_with(notify_socket, "READY=1")
        proc.send_signal(signal.SIGTERM)
        assert next_with(notify_socket, "STOPPING=1").startswith("STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("ignored")  # no socket: no error


def test_abstract_sockets_and_the_watchdog_pid(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0voxbridge-test-notify")
        sock.settimeout(5)
        notifier = Notifier(
            environ={
                "NOTIFY_SOCKET": "@voxbridge-test-notify",
                "WATCHDOG_USEC": "1000000",
                "WATCHDOG_PID": "1",
            }
        )
        assert notifier.watchdog_interval is None  # the watchdog is another process's
        notifier.ready("up")
        assert sock.recv(100) == b"READY=1\nSTATUS=up"
