"""Shared fixtures: real keys in tmp dirs, the real CLI as a subprocess, and the leak scan.

The leak scan runs after every test: each plaintext secret the test used — every value a Secret
was made of in this process, plus those registered with :func:`plaintext` for subprocesses —
must appear nowhere in what the test captured: log records, output written to fd 1 and 2, and
the output of every CLI run (except ``voxbridge decrypt``'s stdout, whose job it is).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, debian_bin, need, pgvector_bin, running
from voxbridge.secrets.keys import Keyring, PublicKey, generate_key_pair, load_keyring

CliRunner = Callable[..., subprocess.CompletedProcess[str]]

_secrets: set[str] = set()
_captured: list[str] = []
MIN_SECRET = 6  # shorter values ("hi", "x") would match ordinary text


def plaintext(value: str) -> str:
    """Register a plaintext secret a test hands to a subprocess; returns it."""
    _secrets.add(value)
    return value


@pytest.fixture(autouse=True)
def _no_secret_leaks(
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:
    from voxbridge.secrets.crypto import Secret

    _secrets.clear()
    _captured.clear()
    made = Secret.__init__

    def recording(self: Secret, value: str) -> None:
        made(self, value)
        _secrets.add(value)

    monkeypatch.setattr(Secret, "__init__", recording)
    yield
    out, err = capfd.readouterr()
    # caplog.text would only hold the teardown phase by now: read the test's own records.
    logged = [
        r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "")
        for when in ("setup", "call")
        for r in caplog.get_records(when)
    ]
    texts = [*logged, out, err, *_captured]
    leaks = sorted(s for s in _secrets if len(s) >= MIN_SECRET and any(s in t for t in texts))
    assert not leaks, f"plaintext secrets leaked into logs or output: {leaks}"


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    generate_key_pair(d, "test")
    return d


@pytest.fixture
def public(keys_dir: Path) -> PublicKey:
    from voxbridge.secrets.keys import current_public_key

    return current_public_key(keys_dir)


@pytest.fixture
def keyring(keys_dir: Path) -> Keyring:
    return load_keyring(keys_dir, environ={})


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXBRIDGE_")}
    env.pop("CREDENTIALS_DIRECTORY", None)
    env.update(extra)
    return env


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    """Run ``python -m voxbridge ARGS`` in tmp_path; returns the completed process."""

    def run(
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "voxbridge", *args],
            cwd=cwd or tmp_path,
            env=env or clean_env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        # decrypt's stdout is meant to show secrets; everything else is scanned.
        _captured.append(done.stderr if args[:1] == ("decrypt",) else done.stdout + done.stderr)
        return done

    return run


# --- memory stores: SQLite, and real PostgreSQL servers (tests/postgres.py) -------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL (no pgvector), one for the session; each test takes a database."""
    with running(need(debian_bin(), "PostgreSQL (Debian's postgresql package)")) as server:
        yield server


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[PostgresServer]:
    """PostgreSQL 16 with pgvector (from the pgserver wheel), one for the session."""
    with running(need(pgvector_bin(), "PostgreSQL with pgvector (the pgserver wheel)")) as server:
        yield server


STORES = ["sqlite", "postgresql", "postgresql+pgvector"]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each kind, as ``--store`` names it."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'memory.db'}"
    server = request.getfixturevalue(
        "postgres_server" if request.param == "postgresql" else "pgvector_server"
    )
    return str(server.new_database())
