"""Shared fixtures: real keys in tmp dirs and the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from voxbridge.secrets.keys import Keyring, PublicKey, generate_key_pair, load_keyring

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


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
        return subprocess.run(
            [sys.executable, "-m", "voxbridge", *args],
            cwd=cwd or tmp_path,
            env=env or clean_env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
