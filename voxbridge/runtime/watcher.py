"""Turns file system events in agents.d into reconciler batches, fast and cancellable.

watchfiles reports *that* something happened to a path; what happened is decided by looking at
the disk (see the reconciler), because editors save in surprising ways: atomic renames arrive as
a temp file added and deleted plus the target added, vim's backup save as the same path added and
deleted in one batch. Editor litter never reaches the reconciler.

This drives watchfiles' documented Rust backend (``RustNotify``) directly rather than ``awatch``,
for two reasons: readiness is reported only once the OS watch exists (so a start-up scan that
follows misses nothing), and the stop event is set the moment the task is cancelled (``awatch``
would otherwise keep its thread, and us, waiting up to its 5 s timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import trio
from watchfiles._rust_notify import RustNotify

from ..config.load import agent_files, is_agent_file

__all__ = ["DEBOUNCE_MS", "STEP_MS", "watch"]

log = logging.getLogger("voxbridge.watcher")

# A short debounce: ~13 ms from save to batch (watchfiles' defaults, 1,600/50, give ~100 ms).
DEBOUNCE_MS = 50
STEP_MS = 10
_TIMEOUT_MS = 1_000  # how often a swapped symlink is noticed when nothing else happens
_POLL_MS = 100


async def watch(
    agents_dir: Path,
    apply: Callable[[Iterable[Path]], Awaitable[object]],
    *,
    poll: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``apply`` with each batch of changed agent-file paths, forever.

    ``poll`` uses stat polling for filesystems without inotify (network mounts, some containers).

    Raises:
        FileNotFoundError: ``agents_dir`` does not exist.

    Cancellation: returns within a debounce step (the watch thread is told to stop).
    """
    stop = trio.Event()  # RustNotify only calls is_set(), a plain read: safe from its thread
    first = True
    listed: set[Path] = set()
    try:
        while True:
            # The OS watches a directory, not a path: when agents.d (or a parent) is a symlink
            # swapped to a new checkout (git-sync does exactly that), follow it.
            target = await _resolve(agents_dir)
            with RustNotify([target], False, poll, _POLL_MS, False, False) as notify:
                now = set(agent_files(agents_dir))
                if first:
                    task_status.started()
                    first = False
                else:
                    log.info("🔄 %s now points at %s: re-reading every file", agents_dir, target)
                    await apply(sorted(now | listed))  # files gone from the new checkout too
                listed = now
                if poll:
                    # The poller takes its first snapshot in its own time: a change made before
                    # that would become its baseline and never be reported. Look once more.
                    await trio.sleep(2 * _POLL_MS / 1000)
                    await apply(agent_files(agents_dir))
                await _batches(agents_dir, target, notify, stop, apply)
    finally:
        stop.set()


async def _resolve(path: Path) -> str:
    return str(await trio.Path(path).resolve())


async def _batches(
    agents_dir: Path,
    target: str,
    notify: RustNotify,
    stop: trio.Event,
    apply: Callable[[Iterable[Path]], Awaitable[object]],
) -> None:
    """Hand on batches until ``agents_dir`` stops resolving to ``target``."""
    while True:
        raw = await trio.to_thread.run_sync(
            notify.watch, DEBOUNCE_MS, STEP_MS, _TIMEOUT_MS, stop, abandon_on_cancel=True
        )
        if await _resolve(agents_dir) != target:
            return
        if isinstance(raw, str):  # "timeout", or "stop" once cancelled
            continue
        # Reported paths are absolute; hand on the user's spelling (agents.d/x.yaml), which is
        # what messages show.
        paths = sorted({agents_dir / Path(p).name for _, p in raw if is_agent_file(Path(p).name)})
        if paths:
            log.debug("changed: %s", ", ".join(p.name for p in paths))
            await apply(paths)
