"""What is live (SPEC 13): each agent's file version as its git blob id, the commit it belongs to
in a git work tree, a rejected version beside the live one, and `voxbridge status --wait-for`.
Real git, real files, the real status server and CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from tests.conftest import clean_env
from tests.runtime_helpers import wait_until, write
from tests.test_status_server import recording, start
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.state import StateTable
from voxbridge.runtime.version import CommitTracker, FileVersion, Git, blob_id


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(GIT_CONFIG_NOSYSTEM="1"),
    )
    return done.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def test_the_blob_id_is_gits_own(tmp_path: Path) -> None:
    for data in (b"", b"name: A\n", "name: Ünïcode\n".encode(), b"\xef\xbb\xbfname: bom\n"):
        (tmp_path / "f").write_bytes(data)
        assert blob_id(data) == git(tmp_path, "hash-object", "f")


async def status(rt: Runtime, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "voxbridge", "status", "--url", str(rt.status_url), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=clean_env(),
    )


async def test_live_versions_commits_rejections_and_wait_for(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    a = write(tmp_path, "a.yaml", "name: A\nplugins:\n  echo: {}\n")
    write(tmp_path, "b.yaml", "name: B\n")
    first = commit_all(tmp_path, "two agents")
    a.write_text("name: A\nsystem_prompt: second\nplugins:\n  echo: {}\n")
    second = commit_all(tmp_path, "a's prompt")  # b.yaml is unchanged in it
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        await wait_until(rt, lambda: all(v.commit for v in rt.table.versions().values()))
        async with recording(rt.status_url) as http:
            agents = {x["id"]: x for x in (await http.get("/api/agents")).json()["agents"]}
            blob_a = git(tmp_path, "ls-files", "-s", "agents.d/a.yaml").split()[1]
            live = agents["a"]["version"]
            assert (live["blob"], live["commit"], live["rejected"]) == (blob_a, second, None)
            assert agents["b"]["version"]["commit"] == first  # the commit that last changed it
            assert live["applied_at"] > 0
            metrics = (await http.get("/metrics")).text
            assert (
                f'voxbridge_agent_version_info{{agent="a",blob="{blob_a}",commit="{second}"}} 1.0'
                in metrics
            )

            # Every agent runs `second` (b's file is the same there as in `first`).
            done = await status(rt, "--wait-for", second[:10])
            assert done.returncode == 0, done.stderr
            assert f"✓ commit {second[:12]} is live: a, b" in done.stdout.decode()
            # `first` had another a.yaml: not live, and said so on timeout.
            late = await status(rt, "--wait-for", first, "--timeout", "0.5s")
            assert late.returncode == 1
            assert f"a: runs {blob_a[:12]}; {first[:12]} has " in late.stderr.decode()

            # An uncommitted edit: a new blob, no commit.
            a.write_text("name: A\nsystem_prompt: third\nplugins:\n  echo: {}\n")
            await rt.reconciler.apply_paths([a])
            live = (await http.get("/api/agents/a")).json()["version"]
            assert (live["blob"], live["commit"]) == (blob_id(a.read_bytes()), None)
            good = live["blob"]
            assert (await status(rt, "--wait-for", good[:8])).returncode == 0

            # A broken version: rejected beside the live one, which runs on.
            a.write_text("name: A\nhistory: ten\nplugins:\n  echo: {}\n")
            bad = blob_id(a.read_bytes())
            await rt.reconciler.apply_paths([a])
            live = (await http.get("/api/agents/a")).json()["version"]
            assert live["blob"] == good
            assert live["rejected"]["blob"] == bad
            assert "history: expected an integer" in live["rejected"]["errors"][0]
            metrics = (await http.get("/metrics")).text
            assert f'voxbridge_agent_rejected_version_info{{agent="a",blob="{bad}"}} 1.0' in metrics
            table = (await status(rt)).stdout.decode()
            assert f"{bad[:8]} rejected" in table and "kept previous version" in table
            # Waiting for it fails at once, with the reason.
            refused = await status(rt, "--wait-for", bad, "--timeout", "60s")
            assert refused.returncode == 1
            assert f"a: version {bad[:12]} was rejected: " in refused.stderr.decode()
            assert "history: expected an integer" in refused.stderr.decode()
        nursery.cancel_scope.cancel()


async def test_without_git_the_blob_id_alone(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: A\n")
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        async with recording(rt.status_url) as http:
            live = (await http.get("/api/agents/a")).json()["version"]
        assert live["blob"] == blob_id(b"name: A\n")
        assert live["commit"] is None
        nursery.cancel_scope.cancel()


async def test_committing_an_unchanged_file_shows_its_commit(tmp_path: Path) -> None:
    # No file event comes with a commit: the tracker sees HEAD move and asks again.
    git(tmp_path, "init", "-q")
    path = tmp_path / "a.yaml"
    path.write_text("name: A\n")
    table = StateTable()
    tracker = CommitTracker(Git(tmp_path), table, head_poll=0.05)
    table.set_version("a", FileVersion(str(path), blob_id(path.read_bytes()), 0.0))
    async with trio.open_nursery() as nursery:
        with table.subscribe() as events, trio.fail_after(20):
            nursery.start_soon(tracker.run)
            commit = await trio.to_thread.run_sync(commit_all, tmp_path, "a")
            event = await events.receive()
        assert event.type == "agent.version"
        assert (event.data["agent"], event.data["commit"]) == ("a", commit)
        assert table.version("a") == FileVersion(str(path), blob_id(b"name: A\n"), 0.0, commit)
        nursery.cancel_scope.cancel()
