"""The complete example in docs/plugins.md, installed as a package and run for real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.conftest import clean_env

DOC = Path(__file__).parent.parent / "docs" / "plugins.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def beats() -> Iterator[tuple[str, list[dict[str, str]], threading.Event]]:
    got: list[dict[str, str]] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            arrived.set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/beat", got, arrived
    server.shutdown()
    server.server_close()


def test_the_documented_plugin_package_runs(
    tmp_path: Path, beats: tuple[str, list[dict[str, str]], threading.Event]
) -> None:
    url, got, arrived = beats
    (code,) = [b for b in blocks("python") if "PLUGIN = Plugin(" in b]
    (entry,) = [b for b in blocks("toml") if "voxbridge.plugins" in b]
    site = tmp_path / "site"
    info = site / "voxbridge_heartbeat-0.1.0.dist-info"
    info.mkdir(parents=True)
    (site / "voxbridge_heartbeat.py").write_text(code)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voxbridge-heartbeat\nVersion: 0.1.0\n"
    )
    # What pip writes for the documented pyproject.toml.
    eps = tomllib.loads(entry)["project"]["entry-points"]["voxbridge.plugins"]
    (info / "entry_points.txt").write_text(
        "[voxbridge.plugins]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
    )
    env = clean_env(PYTHONPATH=str(site))

    def vb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "voxbridge", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert vb("init", ".").returncode == 0
    (tmp_path / "agents.d" / "support.yaml").write_text(
        f"name: Support\nplugins:\n  heartbeat:\n    url: {url}\n    interval: 1m\n"
    )
    assert vb("check").returncode == 78  # the URL is a secret: plaintext is refused
    assert vb("encrypt", "agents.d/support.yaml").returncode == 0
    assert vb("check").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxbridge", "run", "--listen", "none"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        assert arrived.wait(30)
        # The actor reports ready just after its first beat is answered: wait for the line
        # rather than race it with the SIGTERM.
        while "support/heartbeat ready" not in "".join(lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    out = "".join(lines) + rest
    assert {"agent": "Support", "state": "up"} in got
    assert url not in out  # the secret URL never reaches the log
