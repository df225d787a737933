"""The one-file build: scripts/build-onefile makes dist/voxbridge, which runs on its own."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import clean_env

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_the_one_file_build_runs_check(tmp_path: Path) -> None:
    # Build from a copy so the working tree's dist/ is left alone.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", "dist", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    r = subprocess.run(
        [str(src / "scripts" / "build-onefile")],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "needs CPython 3." in r.stdout
    exe = src / "dist" / "voxbridge"
    assert os.access(exe, os.X_OK)
    project = tmp_path / "project"
    project.mkdir()
    env = clean_env(PYTHONPATH="")  # nothing but the file and the interpreter
    env.pop("PYTHONPATH")
    for args in (["--version"], ["init", "."], ["check"], ["agents"]):
        r = subprocess.run(
            [str(exe), *args], cwd=project, capture_output=True, text=True, timeout=120, env=env
        )
        assert r.returncode == 0, (args, r.stderr)
    assert r.stdout.split() == ["example"]
