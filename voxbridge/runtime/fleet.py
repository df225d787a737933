"""The running fleet: the object actors' contexts call (the plugin API's ``Fleet``) and the
status server reads — the agent index, the state table, the supervisor, the services actors
provide, the shared HTTP client.

It is built and driven by :mod:`voxbridge.runtime.run`; nothing here starts tasks of its own.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import trio

from ..config.load import AgentIndex
from ..config.model import Agent, PluginConfig
from ..errors import PermanentFailure, VoxbridgeError
from ..logs import actor_logger
from ..memory import Location, MemoryService
from ..plugins.api import TOOL_ACTOR, Actor, Context, Plugin, is_tool_actor
from ..secrets.keys import Keyring, load_keyring
from .default_agent import DefaultAgent, Selections
from .monitor import Monitor
from .reconciler import Reconciler
from .shard import Shard
from .state import ActorKey, ActorState, StateTable
from .supervisor import ActorSpec, Supervisor
from .systemd import Notifier
from .version import CommitTracker, Git

__all__ = ["RunOptions", "Runtime"]

log = logging.getLogger("voxbridge.run")

T = TypeVar("T")


@dataclass(frozen=True)
class RunOptions:
    """Everything ``voxbridge run`` can be told (SPEC §5)."""

    agents_dir: Path = Path("agents.d")
    keys_dir: Path = Path("keys")
    listen: str | None = "127.0.0.1:4900"
    api_token: str | None = None
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    log_format: str = "text"
    log_level: str = "info"
    default_agent_ttl: float = 300.0
    poll: bool = False
    shard: Shard = field(default_factory=Shard)
    state_dir: Path = Path(".voxbridge")
    store: str | None = None
    """Where memory lives: None or ``sqlite`` (the state directory's memory.db), a
    ``sqlite:``/``postgresql://`` URL, or ``none`` (in the process only)."""
    discord_api_base: str | None = None
    discord_ca_file: Path | None = None
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
        self.commits = CommitTracker(Git(options.agents_dir), self.table)
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
            on_removed=self._agent_removed,
            on_version=self.commits.request,
        )
        self.ready = False
        self.stopping = False
        self.status_url: str | None = None
        self.notifier = Notifier()
        self.memory = MemoryService(
            Location.parse(options.store, options.state_dir),
            agents=lambda: self.index.by_id,
            http=self.http,
            observe=self.table.observe,
            on_health=lambda health: self.table.publish("memory", health.as_dict()),
        )
        self._actors: dict[str, Actor] = {}
        self._changes: dict[str, trio.Event] = {}
        self._services: dict[ActorKey, object] = {}
        self._lasting: dict[tuple[str, str], object] = {}
        """What agents keep across their actors' restarts (Context.lasting)."""
        self._http = http

    def _agent_changed(self, agent_id: str) -> None:
        event = self._changes.pop(agent_id, None)
        if event is not None:
            event.set()

    def _agent_removed(self, agent_id: str) -> None:
        """Drop what the agent kept across restarts; an object with a ``dropped()`` method is
        told (it may log what is lost with it)."""
        for key in [k for k in self._lasting if k[0] == agent_id]:
            dropped = getattr(self._lasting.pop(key), "dropped", None)
            if callable(dropped):
                dropped()

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

    def services_of(self, agent_id: str) -> list[object]:
        """Every service the agent's running actors provide, by plugin type."""
        return [s for (a, _), s in sorted(self._services.items()) if a == agent_id]

    def provide(self, agent_id: str, name: str, service: object | None) -> None:
        if service is None:
            self._services.pop((agent_id, name), None)
        else:
            self._services[agent_id, name] = service

    def lasting(self, agent_id: str, name: str, make: Callable[[], T]) -> T:
        key = (agent_id, name)
        if key not in self._lasting:
            self._lasting[key] = make()
        found: T = self._lasting[key]  # type: ignore[assignment]  # made by this same call
        return found

    def tool_called(self, agent_id: str, tool: str, outcome: str, seconds: float) -> None:
        self.table.count_tool(agent_id, tool, outcome)
        self.table.observe("tool", seconds)

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
        tool = agent.tools[plugin.removeprefix(TOOL_ACTOR)] if is_tool_actor(plugin) else None
        # A tool server's actor has no plugin section: its own section is what it runs.
        config = agent.plugins[plugin] if tool is None else PluginConfig(plugin, True)
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
                options={
                    "discord_api_base": self.options.discord_api_base,
                    "discord_ca_file": self.options.discord_ca_file,
                    "status_url": self.status_url,
                },
                memory=self.memory.of(agent.id),
                _agent=current,
                _note=lambda detail: self.table.note(key, detail),
                _count=lambda name, n: self.table.count(key, name, n),
                _changed=lambda: self._wait_change(agent.id),
                _observe=self.table.observe,
            )

        if tool is not None:
            from ..tools.actor import run as tool_actor  # the MCP SDK: loaded only when used

            actor: Actor = functools.partial(tool_actor, tool)
            return ActorSpec(key, actor, make_context, current, config=tool)
        return ActorSpec(key, self._actor(plugin), make_context, current, config=config)

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
                self.commits.git.refresh()
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
        with trio.move_on_after(self.options.grace):
            await self.memory.settle()

    async def summarize_start(self, began: float) -> None:
        """Log the seed's start-up summary once start-up has really ended: every actor, those
        a file change started meanwhile too, is ready or has failed once (or the summary
        timeout passed). ``began`` is when start-up began, on Trio's clock."""
        with trio.move_on_after(self.options.summary_timeout):
            await self.supervisor.wait_first_attempts()
        took = trio.current_time() - began
        keys = self.supervisor.keys()
        pending = set(self.supervisor.first_attempts_pending())
        running = [k for k in keys if (s := self.table.get(k)) and s.state == ActorState.RUNNING]
        up = set(running)
        failed = [k for k in keys if k not in pending and k not in up]
        agents = len({agent for agent, _ in running})
        log.info(
            "✅ Initialized %s across %s in %.1fs",
            _actors(running),
            _counted(agents, "agent"),
            took,
        )
        if failed:
            log.warning("⚠️ %s failed to initialize", _actors(failed))
        if pending:
            log.warning("⚠️ %s still starting after %.0fs", _actors(pending), took)


def _actors(keys: Collection[ActorKey]) -> str:
    """``keys`` in words: "3 plugins", or "3 plugins and 1 tool server" (an agent's MCP
    servers are actors too, but not plugins)."""
    tools = sum(1 for _, name in keys if is_tool_actor(name))
    plugins = len(keys) - tools
    if not tools:
        return _counted(plugins, "plugin")
    servers = _counted(tools, "tool server")
    return f"{_counted(plugins, 'plugin')} and {servers}" if plugins else servers


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
