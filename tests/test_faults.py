"""Faults while running: a key rotated underfoot, the gateway dropping, SIGTERM mid-reload, a
full disk while editing."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from tests.conftest import clean_env, plaintext
from tests.fake_brains import Plan
from tests.runtime_helpers import options, wait_state, write
from tests.test_discord_plugin import ANN, Rig, ready
from tests.test_run_cli import agents, read_until, start
from voxbridge import testing
from voxbridge.config.model import reveal
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair


async def test_a_key_rotated_while_running(tmp_path: Path) -> None:
    public = generate_key_pair(tmp_path / "keys", "vb-20260101-000000")
    prompt = seal("the secret persona", public.key, "system_prompt")
    path = write(tmp_path, "a.yaml", f"system_prompt: {prompt}\nplugins:\n  echo: {{}}\n")
    async with trio.open_nursery() as nursery:
        rt: Runtime = await nursery.start(
            lambda task_status: serve(
                options(tmp_path), plugins=testing.plugins(), task_status=task_status
            )
        )
        await wait_state(rt, ("a", "echo"), ActorState.RUNNING)
        before = path.read_text()
        r = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "voxbridge",
                    "keys",
                    "rotate",
                    "--name",
                    "vb-20270101-000000",
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                env=clean_env(),
            )
        )
        assert r.returncode == 0, r.stderr
        assert path.read_text() != before  # re-encrypted for the new key...
        # ...and the running instance follows without a SIGHUP: it sees keys/ change. (The
        # value is the same, so nothing is published: poll the reconciler.)
        with trio.fail_after(10):
            while not rt.reconciler.is_current(path):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert rt.table.problems() == {}
        agent = rt.index.get("a")
        assert agent is not None
        assert reveal(agent.system_prompt) == "the secret persona"
        assert testing.attempts[("a", "echo")] == 1  # a prompt change: hot-swapped, no restart
        nursery.cancel_scope.cancel()


async def test_the_gateway_drops_and_the_bot_resumes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    bot = rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.llm.plan = Plan([{"reply": "still here"}])
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a")
        rt = await rig.start(nursery)
        await ready(rig, "a")
        rig.discord.disconnect("tok-a", code=4000)
        await rig.discord.wait_until(
            lambda: bot.resumes == 1 and rig.discord.connected(bot), limit_s=15
        )
        await rig.discord.send_message(
            "tok-a", content="you there?", author_id=ANN, author_name="ann"
        )
        reply = await rig.discord.wait_for(
            lambda r: r.method == "POST" and r.path.endswith("/messages")
        )
        channel = int(reply.path.split("/")[2])
        await rig.discord.wait_until(lambda: rig.discord.shown(channel, bot) == "still here")
        status = rt.table.get(("a", "discord"))
        assert status is not None
        assert (status.state, status.restarts, bot.identifies) == (ActorState.RUNNING, 0, 1)
        nursery.cancel_scope.cancel()


def test_sigterm_in_the_middle_of_a_reload(tmp_path: Path) -> None:
    site = tmp_path / "site"
    testing.write_entry_points(site)
    agents(tmp_path, a="plugins:\n  stubborn: {linger: 2s}\n", b="plugins:\n  echo: {}\n")
    proc = start(tmp_path, site)
    read_until(proc, "✅ Initialized")
    # The edit restarts `stubborn`, whose clean-up takes 2 s: stop it while that is under way.
    (tmp_path / "agents.d" / "a.yaml").write_text("plugins:\n  stubborn: {linger: 3s}\n")
    read_until(proc, "a/stubborn")  # (its stop has begun)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert time.monotonic() - t0 < 8  # the grace period (5 s) bounds it
    assert "🛑 voxbridge stopped" in out
    assert "Traceback" not in out


def _soft_limit() -> None:
    # A "disk" that fills at 1 KiB for voxbridge; the editor lifts its own soft limit.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))


EDITOR = """\
import resource, sys, pathlib
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
p = pathlib.Path(sys.argv[1])
p.write_text(p.read_text() + "description: '" + "x" * 4000 + "'\\n")
"""


def test_a_full_disk_while_edit_writes_back(tmp_path: Path) -> None:
    plaintext("token-kept-safe")
    subprocess.run(
        [sys.executable, "-m", "voxbridge", "init", "."],
        cwd=tmp_path,
        capture_output=True,
        check=True,
        env=clean_env(),
    )
    path = tmp_path / "agents.d" / "a.yaml"
    path.write_text("plugins:\n  discord: {enabled: false, bot_token: token-kept-safe}\n")
    subprocess.run(
        [sys.executable, "-m", "voxbridge", "encrypt", "agents.d/a.yaml"],
        cwd=tmp_path,
        capture_output=True,
        check=True,
        env=clean_env(),
    )
    original = path.read_text()
    (tmp_path / "editor.py").write_text(EDITOR)
    r = subprocess.run(
        [sys.executable, "-m", "voxbridge", "edit", "agents.d/a.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        preexec_fn=_soft_limit,
        env=clean_env(EDITOR=f"{sys.executable} {tmp_path / 'editor.py'}"),
    )
    assert r.returncode == 1
    assert "cannot write (File too large); the file is unchanged" in r.stderr
    assert "token-kept-safe" not in r.stderr
    assert path.read_text() == original
    assert sorted(p.name for p in path.parent.iterdir()) == [
        ".schema.json",
        "a.yaml",
        "example.yaml",
    ]
