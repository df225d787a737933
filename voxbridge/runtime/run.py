"""``voxbridge run``: the nursery tree that holds everything, and its signals.

    run (signals: INT/TERM stop, HUP rescans)
    └── serve
        ├── monitor               process CPU/RSS, scheduling lag
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
import random
import signal
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from ..config.load import AgentIndex
from ..config.model import Agent
from ..errors import ConfigError, PermanentFailure, Problem, VoxbridgeError
from ..logs import actor_logger
from ..plugins.api import Actor, Context, Plugin, installed_plugins
from ..secrets.keys import Keyring, load_keyring
from .default_agent import DefaultAgent, Selections
from .monitor import Monitor
from .reconciler import Reconciler
from .shard import Shard
from .state import ActorKey, ActorState, StateTable
from .supervisor import ActorSpec, Supervisor
from .systemd import Notifier
from .watcher import watch

__all__ = ["RunOptions", "Runtime", "run", "serve"]

log = logging.getLogger("voxbridge.run")


@dataclass(frozen=True)
class RunOptions:
    """Everything ``voxbridge run`` can be told (SPEC §5)."""

    agents_dir: Path = Path("agents.d")
    keys_dir: Path = Path("keys")
    listen: str | None = "127.0.0.1:4900"
    api_token: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    default_agent_ttl: float = 300.0
    poll: bool = False
    shard: Shard = field(default_factory=Shard)
    state_dir: Path = Path(".voxbridge")
    discord_api_base: str | None = None
    grace: float = 5.0
    summary_timeout: float = 60.0


def _unimportable(plugin: str, error: str) -> Actor:
    async def actor(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
        raise PermanentFailure(f"the {plugin} plugin cannot be loaded: {error}")

    return actor


class Runtime:
    """The running fleet: what plugins' contexts call (the :class:`~voxbridge.plugins.api.Fleet`
    protocol) and what the status server reads."""

    def __init__(
        self,
        options: RunOptions,
        nursery: trio.Nursery,
        plugins: Mapping[str, Plugin],
        *,
        rng: random.Random | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.options = options
        self.plugins = plugins
        self.table = StateTable()
        self.index = AgentIndex()
        self.default_agent = DefaultAgent(self.index, ttl=options.default_agent_ttl)
        self.selections = Selections(options.state_dir / "selections.json")
        self.supervisor = Supervisor(nursery, self.table, grace=options.grace, rng=rng)
        self.monitor = Monitor()
        self.keyring: Keyring = load_keyring(options.keys_dir)
        self._keys_stamp = self._stamp()
        self.reconciler = Reconciler(
            options.agents_dir,
            self.current_keyring,
            self.index,
            self.supervisor,
            self.table,
            self.default_agent,
            self.spec_for,
            owns=options.shard.owns,
            plugins=plugins,
            on_change=self._agent_changed,
        )
        self.ready = False
        self.stopping = False
        self.status_url: str | None = None
        self.notifier = Notifier()
        self._actors: dict[str, Actor] = {}
        self._changes: dict[str, trio.Event] = {}
        self._services: dict[ActorKey, object] = {}
        self._http = http

    def _agent_changed(self, agent_id: str) -> None:
        event = self._changes.pop(agent_id, None)
        if event is not None:
            event.set()

    async def _wait_change(self, agent_id: str) -> None:
        await self._changes.setdefault(agent_id, trio.Event()).wait()

    # --- Fleet ---------------------------------------------------------------------------------

    def agents(self) -> Mapping[str, Agent]:
        return self.index.by_id

    def agent_named(self, name: str) -> Agent | None:
        return self.index.by_name(name)

    def default_agent_id(self) -> str | None:
        return self.default_agent.get()

    def active_agent_id(self, guild_id: int) -> str | None:
        chosen = self.selections.get(guild_id)
        if chosen is not None:
            agent = self.index.get(chosen)
            if agent is not None and "discord" in agent.enabled_plugins:
                return chosen
        return self.default_agent.get()

    def selected_agent_id(self, guild_id: int) -> str | None:
        return self.selections.get(guild_id)

    def select(self, guild_id: int, agent_id: str) -> None:
        self.selections.select(guild_id, agent_id)

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("this Runtime was made without an HTTP client (serve() gives one)")
        return self._http

    def service(self, agent_id: str, name: str) -> object | None:
        return self._services.get((agent_id, name))

    def provide(self, agent_id: str, name: str, service: object | None) -> None:
        if service is None:
            self._services.pop((agent_id, name), None)
        else:
            self._services[agent_id, name] = service

    # --- actors --------------------------------------------------------------------------------

    def _actor(self, plugin: str) -> Actor:
        if plugin not in self._actors:
            try:
                actor = self.plugins[plugin].load_actor()
            except Exception as exc:  # a broken plugin package must not stop the others
                actor = _unimportable(plugin, f"{type(exc).__name__}: {exc}")
            self._actors[plugin] = actor or _unimportable(plugin, "it has no actor")
        return self._actors[plugin]

    def spec_for(self, agent: Agent, plugin: str) -> ActorSpec:
        """How to run ``plugin`` for ``agent``: the context reads the agent live."""
        key: ActorKey = (agent.id, plugin)
        config = agent.plugins[plugin]
        last = [agent]

        def current() -> Agent:
            found = self.index.get(agent.id)
            if found is not None:
                last[0] = found
            return last[0]

        def make_context() -> Context:
            return Context(
                agent_id=agent.id,
                plugin=plugin,
                config=config,
                log=actor_logger(agent.id, plugin),
                fleet=self,
                state_dir=self.options.state_dir,
                grace=self.options.grace,
                options={"discord_api_base": self.options.discord_api_base},
                _agent=current,
                _note=lambda detail: self.table.note(key, detail),
                _count=lambda name, n: self.table.count(key, name, n),
                _changed=lambda: self._wait_change(agent.id),
                _observe=self.table.observe,
            )

        return ActorSpec(key, self._actor(plugin), make_context, current)

    def _stamp(self) -> int:
        try:
            return self.options.keys_dir.stat().st_mtime_ns
        except OSError:
            return 0

    def current_keyring(self) -> Keyring:
        """The private keys, re-read when keys/ changed (a rotation adds a .key while running:
        the files re-encrypted for it must not wait for a SIGHUP)."""
        stamp = self._stamp()
        if stamp != self._keys_stamp:
            self._keys_stamp = stamp
            self._reload_keys()
        return self.keyring

    def _reload_keys(self) -> None:
        try:
            self.keyring = load_keyring(self.options.keys_dir)
        except VoxbridgeError as exc:
            log.error("❌ keys not reloaded, the ones already loaded stay in use: %s", exc)

    async def rescan(self, *, reload_keys: bool = False) -> None:
        """Apply every file again (SIGHUP): keys are re-read, unchanged content re-decrypted.

        Keys that no longer load (a key made world-readable, a corrupt file) are reported and
        the keys already held stay in use: a running fleet never dies of a SIGHUP.
        """
        self.notifier.reloading()
        try:
            if reload_keys:
                self._reload_keys()
            await self.reconciler.rescan(force=reload_keys)
        finally:
            self.notifier.ready(self.summary())

    def summary(self) -> str:
        """One line for systemd's STATUS=: agents, actors by state, files with errors."""
        states = self.table.by_state()
        by_state = ", ".join(f"{n} {s.value}" for s, n in sorted(states.items()) if n)
        broken = len(self.table.problems())
        return f"{len(self.index.by_id)} agents; actors: {by_state or 'none'}" + (
            f"; {broken} file(s) with errors" if broken else ""
        )

    async def apply(self, paths: Iterable[Path]) -> None:
        """A watcher batch, told to systemd as a reload."""
        self.notifier.reloading()
        try:
            await self.reconciler.apply_paths(paths)
        finally:
            self.notifier.ready(self.summary())

    async def shutdown(self) -> None:
        """Stop every actor within the grace period (they stop at once, in parallel)."""
        self.notifier.stopping()
        self.stopping = True
        self.reconciler.close()
        await self.supervisor.stop_many(self.supervisor.keys())

    async def summarize_start(self, keys: list[ActorKey]) -> None:
        """Log the seed's start-up summary once every actor is ready or has failed once."""
        with trio.move_on_after(self.options.summary_timeout):
            await self.supervisor.wait_first_attempts(keys)
        states = [self.table.get(k) for k in keys]
        running = [s for s in states if s is not None and s.state == ActorState.RUNNING]
        failed = [
            s
            for s in states
            if s is not None and s.state in (ActorState.BACKOFF, ActorState.FAILED)
        ]
        waiting = len(keys) - len(running) - len(failed)
        agents = len({s.agent for s in running})
        log.info("✅ Initialized %d plugins across %d agents", len(running), agents)
        if failed:
            log.warning(
                "⚠️ %d plugin%s failed to initialize", len(failed), "" if len(failed) == 1 else "s"
            )
        if waiting:
            log.warning(
                "⚠️ %d plugin(s) still starting after %.0fs", waiting, self.options.summary_timeout
            )


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
    """
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
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as http,
        trio.open_nursery() as nursery,
    ):
        runtime = Runtime(options, nursery, plugins, http=http)
        nursery.start_soon(runtime.monitor.run)
        if options.listen is not None:
            from ..server.app import serve_status  # only runs that serve need starlette

            runtime.status_url = await nursery.start(serve_status, runtime, options.listen)
        await nursery.start(
            functools.partial(watch, poll=options.poll), options.agents_dir, runtime.apply
        )
        log.info("🔌 Loading agents and starting their plugins...")
        await runtime.reconciler.rescan()
        keys = runtime.supervisor.keys()
        runtime.ready = True
        runtime.notifier.ready(runtime.summary())
        nursery.start_soon(runtime.notifier.watchdog)
        nursery.start_soon(runtime.summarize_start, keys)
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
