"""Real PostgreSQL servers for tests, started from the machine's binaries in a temporary
directory, on a free port of 127.0.0.1, as an unprivileged user when the tests run as root
(PostgreSQL refuses root).

Two kinds: Debian's ``postgresql`` package (the one `.ci/run` installs; no pgvector), and the
PostgreSQL 16 with pgvector that the ``pgserver`` wheel carries (a test dependency), so both of
the store's recall paths run against a real server. In CI (``CI=true``) a missing server fails
the tests that need it instead of skipping them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

IN_CI = os.environ.get("CI") == "true"


def debian_bin() -> Path | None:
    """The newest PostgreSQL binaries of Debian's packages (or any initdb on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def pgvector_bin() -> Path | None:
    """The PostgreSQL (with pgvector) inside the pgserver wheel (found, not imported: its
    import warns about XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    site = Path(spec.origin).parent.parent
    install = site / "pgserver" / "pginstall"
    if not (install / "bin" / "initdb").exists():
        return None
    if os.getuid() == 0:
        # Run as nobody, who cannot enter root's home (where pip put the wheel): a copy, made
        # once, with the same layout (the binaries find their libraries by relative paths).
        copy = Path(tempfile.gettempdir()) / f"vb-pgserver-{install.stat().st_mtime_ns}"
        if not (copy / "pgserver" / "pginstall" / "bin" / "initdb").exists():
            staging = Path(tempfile.mkdtemp(prefix="vb-pgserver-"))
            for part in ("bin", "lib", "share"):
                shutil.copytree(install / part, staging / "pgserver" / "pginstall" / part)
            shutil.copytree(site / "pgserver.libs", staging / "pgserver.libs")
            os.chmod(staging, 0o755)
            with contextlib.suppress(OSError):
                staging.rename(copy)
        site = copy
    return site / "pgserver" / "pginstall" / "bin"


def need(bin_dir: Path | None, what: str) -> Path:
    """``bin_dir``, or skip — or, in CI (CI=true), fail: there the server must be there."""
    if bin_dir is None:
        message = f"{what} is not installed (.ci/run installs it)"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return bin_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """One server: ``start()``, ``stop()``, ``start()`` again (same data), ``url(db)``."""

    bin_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vb-pg-")))
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    _databases: int = 0
    _log: IO[bytes] | None = None

    def __post_init__(self) -> None:
        self._user = None
        if os.getuid() == 0:
            self._user = "nobody"
            os.chmod(self.root, 0o755)
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.data = self.root / "data"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin_dir / tool), *args],
            check=True,
            capture_output=True,
            user=self._user,
            cwd=self.root,
        )

    def start(self) -> None:
        self._log = open(self.root / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.root),
                "-c",
                "fsync=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            user=self._user,
            cwd=self.root,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start:\n{log}") from None
                time.sleep(0.05)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: smart shutdown would wait for clients
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running(bin_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()
