"""`voxbridge run` as a subprocess: start-up, JSON logs, signals, third-party plugins."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CliRunner, clean_env
from voxbridge import testing

ACME = """
import trio
from pathlib import Path
from voxbridge import Plugin

async def run(ctx, *, task_status):
    Path(ctx.config.settings["marker"]).write_text(f"{ctx.agent_id} {ctx.agent.name}")
    task_status.started()
    await trio.sleep_forever()

PLUGIN = Plugin("acme", "An example third-party plugin", {
    "type": "object", "additionalProperties": False,
    "properties": {"marker": {"type": "string"}}, "required": ["marker"]}, run)
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site directory holding the testing plugins and a third-party plugin, laid out as pip
    installs them (dist-info with entry points)."""
    d = tmp_path / "site"
    testing.write_entry_points(d)
    (d / "acme_voxbridge.py").write_text(ACME)
    info = d / "acme_voxbridge-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-voxbridge\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[voxbridge.plugins]\nacme = acme_voxbridge:PLUGIN\n")
    return d


def start(tmp_path: Path, site: Path, *args: str) -> subprocess.Popen[str]:
    env = clean_env(PYTHONPATH=str(site))
    return subprocess.Popen(
        [sys.executable, "-m", "voxbridge", "run", "--listen", "none", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen in:\n{''.join(lines)}")


def agents(tmp_path: Path, **files: str) -> None:
    d = tmp_path / "agents.d"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(text)


def test_third_party_plugin_is_found_and_run(tmp_path: Path, site: Path, cli: CliRunner) -> None:
    marker = tmp_path / "marker"
    agents(tmp_path, shop=f"name: Shop\nplugins:\n  acme: {{marker: '{marker}'}}\n")
    proc = start(tmp_path, site)
    try:
        lines = read_until(proc, "✅ Initialized")
        assert any("✅ shop/acme ready" in line for line in lines)
        assert marker.read_text() == "shop Shop"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    schema = json.loads(cli("schema", env=clean_env(PYTHONPATH=str(site))).stdout)
    assert "acme" in schema["properties"]["plugins"]["properties"]


def test_startup_summary_json_logs_and_sigterm(tmp_path: Path, site: Path) -> None:
    agents(
        tmp_path,
        a="plugins:\n  slow: {delay: 200ms}\n  echo: {}\n",
        b="plugins:\n  slow: {delay: 300ms}\n  broken: {reason: token rejected}\n",
        c="plugins:\n  echo: {}\n",
    )
    proc = start(tmp_path, site, "--log-format", "json")
    lines = read_until(proc, "failed to initialize")
    records = [json.loads(line) for line in lines]
    assert all({"ts", "level", "msg", "agent", "plugin"} <= r.keys() for r in records)
    messages = [r["msg"] for r in records]
    assert any(
        re.fullmatch(r"✅ Initialized 4 plugins across 3 agents in 0\.\ds", m) for m in messages
    )
    assert "⚠️ 1 plugin failed to initialize" in messages
    broken = next(r for r in records if r["plugin"] == "broken")
    assert (broken["agent"], broken["level"]) == ("b", "error")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert time.monotonic() - t0 < 5
    assert '"msg": "🛑 voxbridge stopped"' in out


def test_the_startup_summary_waits_for_what_a_change_restarted(tmp_path: Path, site: Path) -> None:
    """Issue 21.8: a file changed while the first actors were starting made the summary say
    "Initialized 0 plugins across 0 agents" and "1 plugin(s) still starting after 60s" half a
    second after start. It now comes when start-up really ends, with true counts and time."""
    agents(
        tmp_path,
        a="plugins:\n  slow: {delay: 1500ms}\n",
        b="plugins:\n  slow: {delay: 1500ms}\n  broken: {}\n",
    )
    proc = start(tmp_path, site)
    try:
        read_until(proc, "Loaded agent 'b'")
        (tmp_path / "agents.d" / "a.yaml").write_text("plugins:\n  slow: {delay: 2500ms}\n")
        lines = read_until(proc, "✅ Initialized")
        summary = lines[-1].split("INFO  ", 1)[1].strip()
        assert any("Updated agent 'a': restarting slow" in line for line in lines)
        assert any("✅ a/slow ready" in line for line in lines)  # the restarted one, before
        found = re.fullmatch(r"✅ Initialized 2 plugins across 2 agents in (\d+\.\d)s", summary)
        assert found and 2.5 <= float(found.group(1)) < 10, summary
        lines = read_until(proc, "failed to initialize")
        assert lines[-1].rstrip().endswith("⚠️ 1 plugin failed to initialize")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "still starting" not in out


def test_a_second_signal_exits_at_once(tmp_path: Path, site: Path) -> None:
    agents(tmp_path, a="plugins:\n  stubborn: {linger: 60s}\n")
    proc = start(tmp_path, site, "--grace", "60s")
    read_until(proc, "✅ Initialized")
    proc.send_signal(signal.SIGINT)
    read_until(proc, "stopping every actor")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 128 + signal.SIGINT
    assert "second signal: exiting now" in out


def test_run_refuses_what_cannot_work(tmp_path: Path, cli: CliRunner) -> None:
    r = cli("run", "--listen", "0.0.0.0:4900")
    assert r.returncode == 2
    assert "pass --api-token" in r.stderr
    r = cli("run", "--listen", "none")
    assert (r.returncode, r.stderr.strip().splitlines()[-1]) == (
        78,
        "agents.d: no such directory: run `voxbridge init` or pass --agents-dir",
    )
    agents(tmp_path)
    r = cli("run", "--state-dir", "agents.d/state")
    assert r.returncode == 2
    r = cli("run", "--shard", "3/3")
    assert r.returncode == 2
    assert "expected I/N with 0 <= I < N" in r.stderr
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "k.key"
    key.write_text("x")
    key.chmod(0o644)
    r = cli("run", "--listen", "none")
    assert r.returncode == 77
    assert "chmod 600" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_busy_port_is_one_line_naming_it_and_exit_69(tmp_path: Path, cli: CliRunner) -> None:
    """Issue 21.1: a second `voxbridge run` on a taken port printed a 60-line traceback."""
    agents(tmp_path, a="name: A\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        r = cli("run", "--listen", address)
    errors = [line for line in r.stderr.splitlines() if " INFO " not in line]
    assert r.returncode == 69
    assert errors == [
        f"voxbridge: cannot listen on {address}: the address is in use (another `voxbridge "
        "run`?): stop that, or pass --listen HOST:PORT with a free port, or --listen none to "
        "run without the status server"
    ]


def test_help_lists_every_option(cli: CliRunner) -> None:
    out = cli("run", "--help").stdout
    for option in (
        "--agents-dir",
        "--keys-dir",
        "--listen",
        "--log-format",
        "--log-level",
        "--default-agent-ttl",
        "--poll",
        "--shard",
        "--state-dir",
        "--discord-api-base",
        "--api-token",
    ):
        assert option in out


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP")
def test_sighup_rereads_keys_and_files(tmp_path: Path, site: Path, cli: CliRunner) -> None:
    # A value sealed for a key this host gets only later: SIGHUP picks the key up.
    from voxbridge.secrets.crypto import seal
    from voxbridge.secrets.keys import generate_key_pair

    later = tmp_path / "later"
    pub = generate_key_pair(later, "k")
    agents(tmp_path, a=f"system_prompt: {seal('hi', pub.key, 'system_prompt')}\n")
    proc = start(tmp_path, site)
    try:
        read_until(proc, "no private key with id")
        (tmp_path / "keys").mkdir(mode=0o700)
        os.rename(later / "k.key", tmp_path / "keys" / "k.key")
        proc.send_signal(signal.SIGHUP)
        read_until(proc, "Loaded agent 'a'")
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_a_broken_plugin_package_is_named_not_fatal(tmp_path: Path, cli: CliRunner) -> None:
    site = tmp_path / "site"
    info = site / "bad-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[voxbridge.plugins]\nbad = no_such_module:PLUGIN\n")
    agents(tmp_path, a="name: A\n")
    r = cli("check", env=clean_env(PYTHONPATH=str(site)))
    assert r.returncode == 0
    assert (
        "plugin 'bad' (no_such_module:PLUGIN) cannot be loaded, skipped: "
        "ModuleNotFoundError" in r.stderr
    )


def test_agents_lists_ids_and_splits_them_by_shard(tmp_path: Path, cli: CliRunner) -> None:
    agents(tmp_path, **{f"agent-{i:02d}": "name: x\n" for i in range(30)})
    (tmp_path / "agents.d" / "notes.txt").write_text("not an agent")
    assert cli("agents").stdout.split() == [f"agent-{i:02d}" for i in range(30)]
    shards = [set(cli("agents", "--shard", f"{i}/3").stdout.split()) for i in range(3)]
    assert set.union(*shards) == {f"agent-{i:02d}" for i in range(30)}
    assert sum(len(s) for s in shards) == 30  # each agent has exactly one owner
    assert all(s for s in shards)


def test_sighup_with_a_broken_key_keeps_running(tmp_path: Path, site: Path) -> None:
    agents(tmp_path, a="plugins:\n  echo: {}\n")
    (tmp_path / "keys").mkdir(mode=0o700)
    proc = start(tmp_path, site)
    try:
        read_until(proc, "✅ Initialized")
        bad = tmp_path / "keys" / "leaked.key"
        bad.write_text("-----BEGIN " + "PRIVATE KEY-----\n")  # (split: not a committed key)
        bad.chmod(0o644)
        proc.send_signal(signal.SIGHUP)
        lines = read_until(proc, "keys not reloaded")
        assert "chmod 600" in lines[-1]
        (tmp_path / "agents.d" / "b.yaml").write_text("name: B\n")
        read_until(proc, "Loaded agent 'b'")  # still alive, still watching
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_rendezvous_sharding_moves_about_one_in_n_plus_one() -> None:
    from voxbridge.runtime.shard import Shard

    ids = [f"agent-{i:05d}" for i in range(5000)]
    for n in (1, 2, 3, 5, 8):
        before = {a: Shard(0, n).owner(a) for a in ids}
        after = {a: Shard(0, n + 1).owner(a) for a in ids}
        moved = [a for a in ids if before[a] != after[a]]
        # Only agents won by the new replica move, and they are about 1/(N+1) of the fleet.
        assert all(after[a] == n for a in moved)
        assert abs(len(moved) / len(ids) - 1 / (n + 1)) < 0.03
        # Exactly one owner each, shares roughly even.
        counts = [sum(1 for a in ids if after[a] == r) for r in range(n + 1)]
        assert sum(counts) == len(ids)
        assert max(counts) - min(counts) < 0.1 * len(ids)
