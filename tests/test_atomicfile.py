"""Atomic writes: a failed write (disk full) leaves the original intact and no temp file."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import clean_env
from voxbridge.atomicfile import write_atomic


def test_replaces_content_and_keeps_mode(tmp_path: Path) -> None:
    p = tmp_path / "a.yaml"
    p.write_text("old\n")
    p.chmod(0o640)
    write_atomic(p, "new\n")
    assert p.read_text() == "new\n"
    assert p.stat().st_mode & 0o777 == 0o640
    assert [x.name for x in tmp_path.iterdir()] == ["a.yaml"]


def _limit_file_size() -> None:
    # The disk is "full" after 100 bytes: writes past it fail with EFBIG instead of a signal.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))


def test_encrypt_on_a_full_disk_leaves_the_file_intact(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "voxbridge", "init", "."],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    agent = tmp_path / "agents.d" / "a.yaml"
    original = "plugins:\n  discord:\n    bot_token: plaintext-token\n" + "# padding\n" * 20
    agent.write_text(original)
    r = subprocess.run(
        [sys.executable, "-m", "voxbridge", "encrypt", "agents.d/a.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=clean_env(),
        preexec_fn=_limit_file_size,
    )
    assert r.returncode == 1
    assert r.stderr == (
        "voxbridge: agents.d/a.yaml: cannot write (File too large); the file is unchanged\n"
    )
    assert "Traceback" not in r.stderr and "plaintext-token" not in r.stderr
    assert agent.read_text() == original
    assert sorted(p.name for p in agent.parent.iterdir()) == [
        ".schema.json",
        "a.yaml",
        "example.yaml",
    ]
