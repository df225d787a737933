"""The leak scan itself can fail: a test that logs a secret is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

LEAKY = """
import logging
from voxbridge import Secret

def test_leaks():
    token = Secret("super-secret-token-value")
    logging.getLogger("voxbridge").warning("using %s", token.reveal())

def test_keeps_quiet():
    token = Secret("another-secret-value")
    logging.getLogger("voxbridge").warning("using %s", token)
"""


def test_the_scan_catches_a_leak(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    root = Path(__file__).parent.parent
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "--rootdir",
            str(tmp_path),
            "-c",
            "/dev/null",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_leaky.py"),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # The leak is reported at the leaking test's teardown; the quiet one is clean.
    assert "2 passed, 1 error" in r.stdout, r.stdout
    assert "ERROR at teardown of test_leaks" in r.stdout
    assert "plaintext secrets leaked into logs or output: ['super-secret-token-value']" in r.stdout
