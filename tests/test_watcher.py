"""The real watcher on real files (real clock): how editors save, bursts, cancellation."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import trio

from tests.runtime_helpers import options, wait_until, write
from voxbridge import testing
from voxbridge.config.model import reveal
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve


def prompt(rt: Runtime, agent_id: str) -> str | None:
    agent = rt.index.get(agent_id)
    return None if agent is None else reveal(agent.system_prompt)


async def start(nursery: trio.Nursery, tmp_path: Path) -> Runtime:
    rt: Runtime = await nursery.start(
        lambda task_status: serve(
            options(tmp_path), plugins=testing.plugins(), task_status=task_status
        )
    )
    return rt


async def test_how_editors_save(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "system_prompt: v1\nplugins:\n  echo: {}\n")
    before = testing.attempts[("a", "echo")]  # a process-wide count: other tests use "a" too
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        assert prompt(rt, "a") == "v1"

        # In place.
        path.write_text("system_prompt: v2\nplugins:\n  echo: {}\n")
        await wait_until(rt, lambda: prompt(rt, "a") == "v2")

        # Atomic save: a temp file written, then renamed over the target.
        tmp = tmp_path / "agents.d" / ".a.yaml.tmp123"
        tmp.write_text("system_prompt: v3\nplugins:\n  echo: {}\n")
        tmp.rename(path)
        await wait_until(rt, lambda: prompt(rt, "a") == "v3")

        # A new file, then one removed.
        b = write(tmp_path, "b.yaml", "system_prompt: hello\n")
        await wait_until(rt, lambda: prompt(rt, "b") == "hello")
        b.unlink()
        await wait_until(rt, lambda: rt.index.get("b") is None)

        # Editor litter never reaches the loader.
        for name in ("a.yaml.swp", ".a.yaml.swx", "a.yaml~", "4913", "#a.yaml#", "x.tmp"):
            write(tmp_path, name, "name: [broken")
        path.write_text("system_prompt: v4\nplugins:\n  echo: {}\n")
        await wait_until(rt, lambda: prompt(rt, "a") == "v4")
        assert rt.table.problems() == {}
        # Prompts were hot-swapped, never restarted.
        assert testing.attempts[("a", "echo")] == before + 1
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed")
async def test_real_vim_saves(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "system_prompt: first\n")
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        # backupcopy=no: vim renames the original to a backup and writes a new file (4913 probe,
        # swap file and all); then the default save.
        for args, new in ((["-c", "set writebackup backupcopy=no"], "second"), ([], "third")):
            await trio.to_thread.run_sync(
                lambda a=args, n=new: subprocess.run(
                    [
                        "vim",
                        "-u",
                        "NONE",
                        "-N",
                        "-n",
                        "-es",
                        *a,
                        "-c",
                        f"%s/system_prompt: .*/system_prompt: {n}/",
                        "-c",
                        "wq",
                        str(path),
                    ],
                    check=True,
                    timeout=20,
                )
            )
            await wait_until(rt, lambda n=new: prompt(rt, "a") == n)
        assert rt.table.problems() == {}
        nursery.cancel_scope.cancel()


async def test_a_burst_of_edits_ends_in_the_last_state(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"agent-{i}.yaml", "system_prompt: start\n") for i in range(10)]
    async with trio.open_nursery() as nursery:
        rt = await start(nursery, tmp_path)
        for n in range(100):  # 100 edits as fast as the disk takes them, over 10 files
            paths[n % 10].write_text(f"system_prompt: edit {n}\n")
        # ...and one file deleted and re-created within the burst.
        paths[0].unlink()
        paths[0].write_text("system_prompt: reborn\n")
        await wait_until(
            rt,
            lambda: all(
                prompt(rt, f"agent-{i}") == (f"edit {90 + i}" if i else "reborn") for i in range(10)
            ),
        )
        assert rt.table.problems() == {}
        nursery.cancel_scope.cancel()


async def test_cancelling_the_watcher_is_prompt(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "system_prompt: x\n")
    async with trio.open_nursery() as nursery:
        await start(nursery, tmp_path)
        t0 = time.monotonic()
        nursery.cancel_scope.cancel()
    assert time.monotonic() - t0 < 0.5  # not watchfiles' 5 s rust_timeout


async def test_polling_mode(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "system_prompt: x\n")
    async with trio.open_nursery() as nursery:
        rt: Runtime = await nursery.start(
            lambda task_status: serve(
                options(tmp_path, poll=True), plugins=testing.plugins(), task_status=task_status
            )
        )
        write(tmp_path, "a.yaml", "system_prompt: polled\n")
        await wait_until(rt, lambda: prompt(rt, "a") == "polled")
        nursery.cancel_scope.cancel()


def test_no_agents_dir_is_a_config_error(tmp_path: Path) -> None:
    from voxbridge import ConfigError
    from voxbridge.runtime.run import RunOptions, run

    with pytest.raises(ConfigError, match="no such directory"):
        run(RunOptions(agents_dir=tmp_path / "missing", keys_dir=tmp_path, listen=None))
    assert not os.path.exists(tmp_path / "missing")


async def test_a_symlink_swapped_to_a_new_checkout_like_git_sync(tmp_path: Path) -> None:
    # /git/rev-1/agents.d, /git/fleet -> rev-1; then rev-2 appears and the link is swapped.
    git = tmp_path / "git"
    (git / "rev-1" / "agents.d").mkdir(parents=True)
    (git / "rev-1" / "agents.d" / "a.yaml").write_text("system_prompt: one\n")
    (git / "rev-1" / "agents.d" / "gone.yaml").write_text("system_prompt: bye\n")
    (git / "fleet").symlink_to("rev-1")
    opts = options(tmp_path, agents_dir=git / "fleet" / "agents.d")
    async with trio.open_nursery() as nursery:
        rt: Runtime = await nursery.start(
            lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
        )
        assert prompt(rt, "a") == "one"
        (git / "rev-2" / "agents.d").mkdir(parents=True)
        (git / "rev-2" / "agents.d" / "a.yaml").write_text("system_prompt: two\n")
        (git / "rev-2" / "agents.d" / "new.yaml").write_text("system_prompt: hello\n")
        (git / "tmp-link").symlink_to("rev-2")
        (git / "tmp-link").replace(git / "fleet")  # atomic, as git-sync does
        shutil.rmtree(git / "rev-1")
        await wait_until(
            rt,
            lambda: (
                prompt(rt, "a") == "two"
                and prompt(rt, "new") == "hello"
                and rt.index.get("gone") is None
            ),
        )
        # ...and it keeps watching the new checkout.
        (git / "rev-2" / "agents.d" / "a.yaml").write_text("system_prompt: three\n")
        await wait_until(rt, lambda: prompt(rt, "a") == "three")
        assert rt.table.problems() == {}
        nursery.cancel_scope.cancel()
