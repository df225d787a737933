"""What a plugin type is, and how installed ones are found.

A plugin type is a :class:`Plugin` object published under the ``voxbridge.plugins`` entry-point
group, so any installed package can add one::

    [project.entry-points."voxbridge.plugins"]
    slack = "voxbridge_slack:PLUGIN"

Its ``schema`` is the JSON Schema of its section in an agent file (``plugins.<name>``); voxbridge
adds the ``enabled`` switch. A property marked ``"x-secret": true`` is a secret: it must hold an
``ENC[...]`` value, and once decrypted it is a :class:`voxbridge.Secret`.

Its ``actor`` is ``async def run(ctx, *, task_status)``: one runs per agent that enables the
plugin. It calls ``task_status.started()`` once it is really serving, then never returns. It
raises :class:`~voxbridge.errors.PermanentFailure` for what retrying cannot fix and anything else
for what it can; the supervisor restarts it with backoff. See docs/plugins.md.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import httpx
import trio

from ..brain import Answer, Message, N8nClient, Ready, Turn, think
from ..config.model import Agent, PluginConfig
from ..memory import AgentMemory
from ..tools.toolbox import AgentToolbox

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

__all__ = [
    "ENTRY_POINT_GROUP",
    "TOOL_ACTOR",
    "Actor",
    "Context",
    "Fleet",
    "Plugin",
    "WebEndpoints",
    "installed_plugins",
    "is_tool_actor",
]

T = TypeVar("T")
TOOL_ACTOR = "tools."
"""An agent's MCP servers run as actors named ``tools.<server>`` beside its plugins' (plugin
types have no dot, so the names never meet)."""


def is_tool_actor(name: str) -> bool:
    """Whether the actor ``name`` is a tool server's (``tools.<server>``)."""
    return name.startswith(TOOL_ACTOR)


class Fleet(Protocol):
    """What an actor may ask of the runtime about the whole fleet."""

    @property
    def stopping(self) -> bool:
        """Whether the process is shutting down (an actor stopping now has no next one)."""
        ...

    def agents(self) -> Mapping[str, Agent]:
        """Every loaded agent by id (read-only)."""
        ...

    def agent_named(self, name: str) -> Agent | None:
        """The agent called ``name``, ignoring case (names are unique that way)."""
        ...

    def default_agent_id(self) -> str | None:
        """The default agent (cached with a TTL)."""
        ...

    def active_agent_id(self, guild_id: int) -> str | None:
        """The agent that answers ambient messages in a guild: its selection, else the default."""
        ...

    def selected_agent_id(self, guild_id: int) -> str | None:
        """The guild's ``/agent select`` choice, if it made one."""
        ...

    def select(self, guild_id: int, agent_id: str) -> None:
        """Make ``agent_id`` the guild's active agent (persisted across restarts)."""
        ...

    def http(self) -> httpx.AsyncClient:
        """The runtime's pooled HTTP client (for calls that need no client of their own)."""
        ...

    def service(self, agent_id: str, name: str) -> object | None:
        """What the actor ``(agent_id, name)`` provides while it runs (see Context.provide)."""
        ...

    def provide(self, agent_id: str, name: str, service: object | None) -> None:
        """Publish (or, with None, withdraw) a running actor's service."""
        ...

    def lasting(self, agent_id: str, name: str, make: Callable[[], T]) -> T:
        """The agent's object ``name``, made by ``make()`` on first use and kept by the runtime
        across restarts of the agent's actors (see Context.lasting)."""

    def tool_called(self, agent_id: str, tool: str, outcome: str, seconds: float) -> None:
        """Count one tool call (``outcome``: ``ok``, ``error``, ``timeout``) for the metrics."""
        ...


@runtime_checkable
class WebEndpoints(Protocol):
    """A service an actor may provide (``ctx.provide``) to be reached through the status
    server, which finds it through the runtime (it never imports plugins): a page at
    ``GET /<name>/<agent-id>`` (``chat``) and WebSockets at ``/api/agents/<agent-id>/<name>``.

    The server has checked the Host, the Origin and the API token before it calls these.
    """

    def page(self, name: str) -> str | None:
        """The HTML of page ``name``, or None if this service has no such page."""
        ...

    async def socket(self, name: str, websocket: WebSocket) -> bool:
        """Serve the socket ``name`` until it closes (accepting it is the service's job);
        False, without touching it, if this service has no such socket."""
        ...


@dataclass(frozen=True, eq=False)
class Context:
    """What an actor gets: who it is, its configuration (live), a bound logger, the fleet,
    and the agent's memory (its conversations, what it knows of people).

    ``config`` is this plugin's section as the actor was started with (a change to it restarts
    the actor). ``agent`` is read at every access, so edits to the prompt, llm or history reach a
    running actor without a restart.
    """

    agent_id: str
    plugin: str
    config: PluginConfig
    log: logging.LoggerAdapter[logging.Logger]
    fleet: Fleet
    state_dir: Path
    grace: float
    options: Mapping[str, Any]
    memory: AgentMemory
    _agent: Callable[[], Agent]
    _note: Callable[[str | None], None]
    _count: Callable[[str, int], None]
    _changed: Callable[[], Awaitable[None]]
    _observe: Callable[[str, float], None] = lambda _name, _seconds: None

    @property
    def agent(self) -> Agent:
        """The agent's current configuration."""
        return self._agent()

    async def agent_changed(self) -> Agent:
        """Wait until the agent's configuration is hot-swapped (prompt, llm, name...); return it."""
        await self._changed()
        return self._agent()

    def note(self, detail: str | None) -> None:
        """Show a health note beside the actor's state (never a secret)."""
        self._note(detail)

    def count(self, name: str, n: int = 1) -> None:
        """Add to one of this actor's counters (exported as metrics)."""
        self._count(name, n)

    def observe(self, name: str, seconds: float) -> None:
        """Record a duration in the fleet-wide histogram ``name`` (``brain``: answer time)."""
        self._observe(name, seconds)

    def lasting(self, name: str, make: Callable[[], T]) -> T:
        """State of this agent that outlives this actor: ``make()``'s result the first time,
        the same object afterwards — after a restart of the actor too (an edit of its section,
        a crash), for as long as the process runs and the agent exists (when its file is
        deleted, an object with a ``dropped()`` method is told). ``name`` is the plugin's to choose
        (``discord.limits``); what is kept must not hold the actor's resources."""
        return self.fleet.lasting(self.agent_id, name, make)

    @contextlib.contextmanager
    def provide(self, service: object) -> Iterator[None]:
        """Offer ``service`` to the agent's other actors while the block runs (the n8n actor
        offers its client to the discord actor this way)."""
        self.fleet.provide(self.agent_id, self.plugin, service)
        try:
            yield
        finally:
            self.fleet.provide(self.agent_id, self.plugin, None)

    def think(
        self, message: Message, history: Sequence[Turn], *, stored: Ready | None = None
    ) -> contextlib.AbstractAsyncContextManager[Answer]:
        """The agent's answer to ``message`` as a stream (see :func:`voxbridge.brain.think`),
        through the runtime's pooled client and the agent's n8n actor when it runs, with what
        the agent remembers of ``message.person`` (``memory.facts``). ``stored`` (an
        exchange's ``stored``) is awaited before the first words are handed out."""
        return self._think(message, history, stored)

    @contextlib.asynccontextmanager
    async def _think(
        self, message: Message, history: Sequence[Turn], stored: Ready | None
    ) -> AsyncIterator[Answer]:
        facts = await self.memory.recall(message.person, message.text)
        found = self.fleet.service(self.agent_id, "n8n")
        agent = self.agent
        async with think(
            agent,
            message,
            history,
            http=self.fleet.http(),
            n8n=found if isinstance(found, N8nClient) else None,
            logger=self.log,
            facts=facts,
            before_first=stored,
            tools=self._toolbox(agent) if agent.tools else None,
        ) as answer:
            yield answer

    def _toolbox(self, agent: Agent) -> AgentToolbox:
        """The agent's tools on offer now: its running MCP servers' and its n8n tools."""
        fleet, agent_id = self.fleet, self.agent_id
        return AgentToolbox(
            agent,
            lambda name: fleet.service(agent_id, TOOL_ACTOR + name),
            fleet.http(),
            lambda tool, outcome, seconds: fleet.tool_called(agent_id, tool, outcome, seconds),
            self.log,
        )

    def cleanup_scope(self) -> trio.CancelScope:
        """A shielded scope for clean-up after cancellation, bounded by the grace period."""
        return trio.CancelScope(deadline=trio.current_time() + self.grace, shield=True)


Actor = Callable[..., Awaitable[None]]  # async def run(ctx: Context, *, task_status) -> None

ENTRY_POINT_GROUP = "voxbridge.plugins"
log = logging.getLogger("voxbridge.plugins")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


# eq=False: plugins are singletons compared by identity, which also makes them hashable.
@dataclass(frozen=True, slots=True, eq=False)
class Plugin:
    """A plugin type: its name (the key under ``plugins:``), a one-line summary, the JSON
    Schema of its section (an object schema; ``enabled`` is added by voxbridge) and its actor,
    as a function or as ``"module:function"`` imported on first use (so ``voxbridge check``
    never imports a plugin's heavy dependencies).

    ``overlap``: two of its actors may run at once while one replaces the other. When the
    section of a running actor changes, the new actor then starts beside the old one, which
    stops only once the new one is ready (make-before-break); if the new one fails for good,
    the old one keeps serving. Right for a bot whose token changed (two sessions can be
    online together), wrong for anything holding an exclusive resource (a port, a lock): the
    default is to stop the old actor first. It may also be a function of the old and the new
    section, for a plugin whose actors may overlap only for some changes (a Discord bot with a
    new token is another user; with the same token, two sessions would fight over its voice
    connection).
    """

    name: str
    summary: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    actor: Actor | str | None = None
    needs: Mapping[str, str] = field(default_factory=dict)
    """Keys of this plugin's section that need a top-level section of the agent, with why:
    ``{"voice": "voice"}`` makes ``voxbridge check`` point at ``plugins.<type>.voice`` when the
    agent has no ``voice:`` (a rule JSON Schema cannot say across sections)."""
    overlap: bool | Callable[[PluginConfig, PluginConfig], bool] = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"plugin name {self.name!r} must match {_NAME.pattern}")

    def overlaps(self, old: PluginConfig, new: PluginConfig) -> bool:
        """Whether an actor running ``old`` may stay while one with ``new`` starts."""
        return self.overlap(old, new) if callable(self.overlap) else self.overlap

    def load_actor(self) -> Actor | None:
        """The actor function, importing it if it was given by name."""
        if not isinstance(self.actor, str):
            return self.actor
        module, _, attr = self.actor.partition(":")
        fn: Actor = getattr(importlib.import_module(module), attr)
        return fn


def _own(ep: EntryPoint) -> bool:
    return ep.dist is not None and ep.dist.name == "voxbridge"


@functools.cache
def installed_plugins() -> Mapping[str, Plugin]:
    """Every plugin type installed: voxbridge's own are published through the same
    entry-point group as third-party ones (see pyproject.toml).

    Entry points that fail to import or do not yield a Plugin are skipped; a broken third-party
    package must not take the others down with it. A name voxbridge's own plugins use cannot
    be taken by another package (it is skipped, with a warning).
    """
    plugins: dict[str, Plugin] = {}
    seen: dict[str, str] = {}
    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: not _own(ep))
    for ep in found:
        if ep.name in plugins:
            if ep.value == seen[ep.name]:
                continue  # one package found twice on the path
            log.warning(
                "⚠️ plugin '%s' (%s) is skipped: another package provides '%s' already",
                ep.name,
                ep.value,
                ep.name,
            )
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin package is skipped, not fatal
            log.warning(
                "⚠️ plugin '%s' (%s) cannot be loaded, skipped: %s: %s",
                ep.name,
                ep.value,
                type(exc).__name__,
                exc,
            )
            continue
        if isinstance(obj, Plugin) and obj.name == ep.name:
            plugins[obj.name] = obj
            seen[obj.name] = ep.value
        else:
            log.warning(
                "⚠️ plugin '%s' (%s) is not a voxbridge Plugin named '%s', skipped",
                ep.name,
                ep.value,
                ep.name,
            )
    return MappingProxyType(dict(sorted(plugins.items())))
