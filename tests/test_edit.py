"""`voxbridge edit` driven by a scripted $EDITOR: the real CLI, the real files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CliRunner, clean_env, plaintext

TOKEN = re.compile(r"ENC\[hpke1,[0-9a-f]{8},[A-Za-z0-9_-]+\]")

# The editor: each run applies the next action listed in ACTIONS (one per line) to the file it
# is given, and records the file's path and mode, so the test can check the copy is private and
# is gone afterwards.
EDITOR = """\
import os, sys, pathlib, signal, time
signal.signal(signal.SIGINT, signal.SIG_DFL)  # die on Ctrl-C like a plain program
path = pathlib.Path(sys.argv[1])
state = pathlib.Path(os.environ["ED_STATE"])
log = pathlib.Path(os.environ["ED_LOG"])
actions = state.read_text().splitlines()
action, rest = actions[0], actions[1:]
state.write_text("\\n".join(rest))
with log.open("a") as fh:
    fh.write(f"{path} {oct(path.stat().st_mode & 0o777)} {oct(path.parent.stat().st_mode & 0o777)}\\n")
text = path.read_text()
if action == "prompt":
    path.write_text(text.replace("You are helpful.", "You are very helpful."))
elif action == "token":
    path.write_text(text.replace("old-token", "new-token"))
elif action == "break":
    path.write_text(text + "system_promt: typo\\n")
elif action == "fix":
    path.write_text(text.replace("system_promt: typo\\n", "description: fixed\\n"))
elif action == "kill":
    path.write_text(text.replace("old-token", "leaked"))
    os.kill(os.getpid(), signal.SIGKILL)
elif action == "sleep":
    path.write_text(text.replace("old-token", "leaked"))
    time.sleep(30)
"""

AGENT = """\
# kept comment
name: Support
system_prompt: "You are helpful."
plugins:
  discord:
    bot_token: old-token   # the token
  n8n:
    webhook_url: https://n8n.invalid/hook
"""


@pytest.fixture
def setup(cli: CliRunner, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    for value in ("old-token", "new-token", "https://n8n.invalid/hook"):
        plaintext(value)
    assert cli("init", ".").returncode == 0
    agent = tmp_path / "agents.d" / "support.yaml"
    agent.write_text(AGENT)
    assert cli("encrypt", "agents.d/support.yaml").returncode == 0
    (tmp_path / "editor.py").write_text(EDITOR)
    env = clean_env(
        EDITOR=f"{sys.executable} {tmp_path / 'editor.py'}",
        ED_STATE=str(tmp_path / "state"),
        ED_LOG=str(tmp_path / "log"),
    )
    env.pop("VISUAL", None)
    return agent, env


def actions(tmp_path: Path, *names: str) -> None:
    (tmp_path / "state").write_text("\n".join(names))


def copies(tmp_path: Path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "log").read_text().splitlines()]


def assert_copy_gone(tmp_path: Path) -> None:
    for path, file_mode, dir_mode in copies(tmp_path):
        assert (file_mode, dir_mode) == ("0o600", "0o700")
        assert not Path(path).exists() and not Path(path).parent.exists()


def _editing(tmp_path: Path, env: dict[str, str], *, output: bool) -> subprocess.Popen[str]:
    """``voxbridge edit`` in its own session (as from a terminal), once its editor is open;
    ``output``: its stdout and stderr are kept (else dropped: nobody reads a killed one's)."""
    out = subprocess.PIPE if output else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxbridge", "edit", "agents.d/support.yaml"],
        cwd=tmp_path,
        env=env,
        stdout=out,
        stderr=out,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not (tmp_path / "log").exists() or not (tmp_path / "log").read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    return proc


def test_valid_edit_keeps_unchanged_ciphertexts(
    setup: tuple[Path, dict[str, str]], cli: CliRunner, tmp_path: Path
) -> None:
    agent, env = setup
    before = agent.read_text()
    actions(tmp_path, "prompt")
    r = cli("edit", "agents.d/support.yaml", env=env)
    assert r.returncode == 0, r.stderr
    assert "saved (0 value(s) encrypted afresh)" in r.stderr
    after = agent.read_text()
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert diff == [('system_prompt: "You are helpful."', 'system_prompt: "You are very helpful."')]
    assert_copy_gone(tmp_path)


def test_changed_secret_is_sealed_afresh(
    setup: tuple[Path, dict[str, str]], cli: CliRunner, tmp_path: Path
) -> None:
    agent, env = setup
    before = agent.read_text()
    actions(tmp_path, "token")
    r = cli("edit", "agents.d/support.yaml", env=env)
    assert r.returncode == 0 and "(1 value(s) encrypted afresh)" in r.stderr
    after = agent.read_text()
    assert "new-token" not in after
    changed = [b for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0].startswith("    bot_token: ENC[")
    assert changed[0].endswith("   # the token")
    assert "bot_token: new-token" in cli("decrypt", "agents.d/support.yaml").stdout


def test_no_change_writes_nothing(
    setup: tuple[Path, dict[str, str]], cli: CliRunner, tmp_path: Path
) -> None:
    agent, env = setup
    before = agent.stat().st_mtime_ns, agent.read_text()
    actions(tmp_path, "none")
    r = cli("edit", "agents.d/support.yaml", env=env)
    assert r.returncode == 0 and r.stderr.endswith("no changes\n")
    assert (agent.stat().st_mtime_ns, agent.read_text()) == before


def test_invalid_then_fixed(
    setup: tuple[Path, dict[str, str]], cli: CliRunner, tmp_path: Path
) -> None:
    agent, env = setup
    actions(tmp_path, "break", "fix")
    r = cli("edit", "agents.d/support.yaml", env=env, input="e\n")
    assert r.returncode == 0, r.stderr
    assert "agents.d/support.yaml:9:1: system_promt: unknown key 'system_promt'" in r.stderr
    assert "not saved. Edit again (e) or discard (d)?" in r.stdout
    assert agent.read_text().endswith("description: fixed\n")
    assert len(copies(tmp_path)) == 2
    assert_copy_gone(tmp_path)


def test_invalid_then_discarded_is_never_written(
    setup: tuple[Path, dict[str, str]], cli: CliRunner, tmp_path: Path
) -> None:
    agent, env = setup
    before = agent.read_text()
    for answer in ("d\n", ""):  # an explicit discard, and no terminal to ask (EOF)
        actions(tmp_path, "break")
        r = cli("edit", "agents.d/support.yaml", env=env, input=answer)
        assert r.returncode == 78
        assert r.stderr.endswith("agents.d/support.yaml unchanged\n")
        assert agent.read_text() == before
    assert_copy_gone(tmp_path)


def test_editor_killed(setup: tuple[Path, dict[str, str]], cli: CliRunner, tmp_path: Path) -> None:
    agent, env = setup
    before = agent.read_text()
    actions(tmp_path, "kill")
    r = cli("edit", "agents.d/support.yaml", env=env)
    assert r.returncode == 1
    assert (
        r.stderr == "voxbridge: the editor was killed by signal 9; agents.d/support.yaml "
        "unchanged\n"
    )
    assert agent.read_text() == before
    assert_copy_gone(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_edit_removes_the_copy(
    setup: tuple[Path, dict[str, str]], tmp_path: Path, sig: signal.Signals
) -> None:
    agent, env = setup
    before = agent.read_text()
    actions(tmp_path, "sleep")
    proc = _editing(tmp_path, env, output=True)
    # Ctrl-C reaches the whole foreground process group, editor included; SIGTERM only us.
    os.killpg(proc.pid, sig) if sig == signal.SIGINT else proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode in (1, 130)
    assert "nothing written" in err or "unchanged" in err
    assert "Traceback" not in err
    assert agent.read_text() == before
    assert_copy_gone(tmp_path)


def test_edit_missing_file(cli: CliRunner) -> None:
    r = cli("edit", "nope.yaml")
    assert (r.returncode, r.stderr) == (2, "voxbridge: nope.yaml: no such file\n")


@pytest.mark.parametrize("next_command", ["check", "edit"])
def test_a_copy_left_by_a_killed_edit_is_removed_by_the_next_run(
    setup: tuple[Path, dict[str, str]], cli: CliRunner, tmp_path: Path, next_command: str
) -> None:
    # SIGKILL gives `edit` no chance to clean up: the decrypted copy stays in RAM...
    agent, env = setup
    env["XDG_RUNTIME_DIR"] = str(ram := tmp_path / "run")
    ram.mkdir(mode=0o700)
    actions(tmp_path, "sleep", "prompt")
    proc = _editing(tmp_path, env, output=False)
    os.killpg(proc.pid, signal.SIGKILL)  # voxbridge and its editor
    proc.wait(timeout=20)
    [[copy, _, _]] = copies(tmp_path)
    assert "leaked" in Path(copy).read_text()
    # ... next to an edit still in progress (this test's own process: alive), which stays.
    alive = ram / f"voxbridge-edit-{os.getpid()}-inprogress"
    alive.mkdir(mode=0o700)

    # ...until the next edit or check finds it, removes it and says so.
    args = ["check"] if next_command == "check" else ["edit", "agents.d/support.yaml"]
    r = cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    stale = Path(copy).parent
    assert f"voxbridge: removed {stale}: a decrypted copy left by a `voxbridge edit`" in r.stderr
    assert not stale.exists()
    assert alive.is_dir()
    assert agent.read_text().count("ENC[") == 2
