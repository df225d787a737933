"""`voxbridge guard`, the pre-commit hook, in a real git repository with a real hook."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import CliRunner, clean_env, plaintext

ROOT = Path(__file__).parent.parent


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env=clean_env(),
    )


def test_guard_refuses_plaintext_secrets_and_private_keys(tmp_path: Path, cli: CliRunner) -> None:
    token = plaintext("plain-bot-token-in-git")
    assert cli("init", ".").returncode == 0
    agent = tmp_path / "agents.d" / "a.yaml"
    agent.write_text(f"name: A\nplugins:\n  discord:\n    bot_token: {token}\n")
    (key,) = (tmp_path / "keys").glob("*.key")
    r = cli("guard", "agents.d/a.yaml", str(key.relative_to(tmp_path)), "agents.d/example.yaml")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == (
        "agents.d/a.yaml:4:16: plugins.discord.bot_token: plaintext secret: run "
        "`voxbridge encrypt agents.d/a.yaml` before committing"
    )
    assert lines[1].startswith(f"{key.relative_to(tmp_path)}:1:1: a private key: never commit it")
    assert lines[-1] == "✗ 2 thing(s) that must not be committed"
    assert cli("encrypt", "agents.d/a.yaml").returncode == 0
    assert cli("guard", "agents.d/a.yaml", "keys/.gitignore").returncode == 0


def test_the_hook_stops_a_commit(tmp_path: Path, cli: CliRunner) -> None:
    token = plaintext("another-plain-token")
    assert cli("init", ".").returncode == 0
    git(tmp_path, "init", "-q")
    # The hook pre-commit would install, written by hand: run the entry on the staged files.
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    script = tmp_path / ".git" / "hooks" / "pre-commit"
    script.write_text(
        "#!/bin/sh\n"
        "files=$(git diff --cached --name-only --diff-filter=ACM | "
        f"grep -E '{hook['files']}')\n"
        f'[ -z "$files" ] || exec {sys.executable} -m voxbridge guard $files\n'
    )
    script.chmod(0o755)
    (tmp_path / "agents.d" / "b.yaml").write_text(f"plugins:\n  n8n:\n    webhook_url: {token}\n")
    git(tmp_path, "add", "-A", "-f")  # -f: even the .key that .gitignore would have kept out
    r = git(tmp_path, "commit", "-q", "-m", "oops")
    assert r.returncode != 0
    assert "plugins.n8n.webhook_url: plaintext secret" in r.stderr
    assert "a private key: never commit it" in r.stderr
    assert git(tmp_path, "log").returncode != 0  # nothing was committed


def test_the_systemd_unit_says_what_matters() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy" / "systemd" / "voxbridge.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert set(service["RestartPreventExitStatus"].split()) == {"77", "78"}
    assert service["LoadCredential"].startswith("voxbridge.key:")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"


def test_the_reference_is_generated_and_current() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-reference"), "--check"],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert r.returncode == 0, r.stderr
    text = (ROOT / "docs" / "reference.md").read_text()
    assert "| `plugins.discord.bot_token` | string 🔒 |" in text
    assert "### `voxbridge run`" in text
    assert "--discord-api-base" in text
