"""``voxbridge run``: the nursery tree that holds everything, and its signals.

    run (signals: INT/TERM stop, HUP rescans)
    └── serve                     holds the state directory (one voxbridge each)
        ├── memory                the store (batched writes, expiry), learners (facts)
        ├── monitor               process CPU/RSS, scheduling lag
        ├── commits               the git commit of each live file version
        ├── watcher               agents.d → reconciler batches
        ├── start-up summary      once every actor is ready or failed its first attempt
        └── actors                one supervised task per enabled plugin of every agent

Data flows one way: files → loader → reconciler → supervisor → actors; readers (logs, the status
server) look at the state table.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Iterator, Mapping

import httpx
import trio

from ..errors import ConfigError, Problem, VoxbridgeError
from ..plugins.api import Plugin, installed_plugins
from ..server.app import serve_status
from .fleet import RunOptions, Runtime
from .lock import hold_state_dir
from .watcher import watch

__all__ = ["RunOptions", "run", "serve"]

log = logging.getLogger("voxbridge.run")


async def serve(
    options: RunOptions,
    *,
    plugins: Mapping[str, Plugin] | None = None,
    task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the fleet in ``options.agents_dir`` until cancelled.

    Reports the :class:`Runtime` through ``task_status`` once the first load is applied (every
    actor has been started, not necessarily become ready).

    Raises:
        ConfigError: the agents directory does not exist.
        KeyPermissionError: a private key is readable by others.
        StateDirBusy: another voxbridge runs on the same state directory.
        StoreError: ``--store`` names no store voxbridge knows.
    """
    began = trio.current_time()
    plugins = installed_plugins() if plugins is None else plugins
    if not options.agents_dir.is_dir():
        raise ConfigError(
            [
                Problem(
                    str(options.agents_dir),
                    0,
                    0,
                    "",
                    "no such directory: run `voxbridge init` or pass --agents-dir",
                )
            ]
        )
    log.info(
        "🚀 Starting voxbridge on %s/ (plugin types: %s)", options.agents_dir, ", ".join(plugins)
    )
    # One pooled client for the LLM calls of every agent, closed when serve() ends.
    with hold_state_dir(options.state_dir):
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as http,
            trio.open_nursery() as nursery,
        ):
            runtime = Runtime(options, nursery, plugins, http=http)
            await _start(runtime, nursery, options, began, task_status)


async def _start(
    runtime: Runtime,
    nursery: trio.Nursery,
    options: RunOptions,
    began: float,
    task_status: trio.TaskStatus[Runtime],
) -> None:
    if runtime.memory.store is not None:
        log.info("🧠 Memory in %s", runtime.memory.store.health().store)
    await nursery.start(runtime.memory.run)
    nursery.start_soon(runtime.monitor.run)
    nursery.start_soon(runtime.commits.run)
    if options.listen is not None:
        runtime.status_url = await nursery.start(serve_status, runtime, options.listen)
    await nursery.start(
        functools.partial(watch, poll=options.poll), options.agents_dir, runtime.apply
    )
    log.info("🔌 Loading agents and starting their plugins...")
    await runtime.reconciler.rescan()
    runtime.ready = True
    runtime.notifier.ready(runtime.summary())
    nursery.start_soon(runtime.notifier.watchdog)
    nursery.start_soon(runtime.summarize_start, began)
    task_status.started(runtime)


async def _main(options: RunOptions, plugins: Mapping[str, Plugin] | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            runtime: Runtime = await nursery.start(
                lambda task_status: serve(options, plugins=plugins, task_status=task_status)
            )
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("🔄 SIGHUP: re-reading keys and every agent file")
                    nursery.start_soon(lambda: runtime.rescan(reload_keys=True))
                    continue
                if runtime.stopping:
                    log.warning("🛑 second signal: exiting now")
                    os._exit(128 + signum)
                log.info(
                    "🛑 %s: stopping every actor (grace %.0fs)...",
                    signal.Signals(signum).name,
                    options.grace,
                )

                async def stop() -> None:
                    await runtime.shutdown()
                    log.info("🛑 voxbridge stopped")
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop)


def run(options: RunOptions, *, plugins: Mapping[str, Plugin] | None = None) -> int:
    """Run in the foreground until SIGINT/SIGTERM; returns the exit code (0 after a clean stop).

    Raises:
        ConfigError, KeyPermissionError: before anything starts.
    """
    try:
        trio.run(_main, options, plugins)
    except BaseExceptionGroup as group:
        # Start-up errors surface from inside the nursery tree, wrapped; unwrap ours.
        leaves = list(_leaves(group))
        if leaves and all(isinstance(e, VoxbridgeError) for e in leaves):
            raise leaves[0] from None
        raise
    return 0


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
