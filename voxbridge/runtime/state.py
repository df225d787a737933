"""The one place that knows how every actor is doing, and the stream of what changed.

The supervisor and the reconciler write here; the status server, the logs and the monitor read.
Each actor's status is a frozen snapshot replaced on every change, so readers never see half an
update. Subscribers get every change as an :class:`Event` through a bounded buffer: a slow
reader loses the oldest events (and is told how many), never slows the runtime down.
"""

from __future__ import annotations

import collections
import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Any

import trio

from ..errors import Problem
from .version import FileVersion, Rejected

__all__ = [
    "ActorKey",
    "ActorState",
    "ActorStatus",
    "Event",
    "Histogram",
    "StateTable",
    "Subscription",
    "Swap",
]

# Seconds: from a fast reload (ms) to a slow LLM answer (a minute).
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Histogram:
    """Cumulative-bucket counts of observed durations (the Prometheus histogram shape)."""

    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                self.counts[i] += 1
        self.counts[-1] += 1  # +Inf
        self.total += seconds
        self.n += 1


ActorKey = tuple[str, str]  # (agent id, plugin type)


class ActorState(enum.StrEnum):
    """Where an actor is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"  # crashed; next try at ``next_retry``
    FAILED = "failed"  # a permanent failure: parked until its file changes
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Swap:
    """A newer version of an actor starting beside the running one (make-before-break): it
    takes over once ready; while it is ``starting`` or in ``backoff`` the old one serves, and
    if it ``failed`` for good the old one keeps serving ("kept previous version")."""

    version: str | None  # the blob id of the file version it runs
    state: ActorState
    error: str | None = None
    next_retry: float | None = None


@dataclass(frozen=True, slots=True)
class ActorStatus:
    """A snapshot of one actor. Times are wall-clock seconds since the epoch."""

    agent: str
    plugin: str
    state: ActorState
    since: float
    restarts: int = 0
    last_error: str | None = None
    next_retry: float | None = None
    detail: str | None = None  # the plugin's own health note ("webhook answering in 80 ms")
    swap: Swap | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Event:
    """One change, as the event stream carries it: ``type`` is ``actor``, ``agent.loaded``,
    ``agent.error`` or ``agent.removed``."""

    type: str
    ts: float
    data: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "ts": self.ts, **self.data}


class Subscription:
    """A bounded feed of events for one reader; the oldest are dropped when it falls behind."""

    def __init__(self, table: StateTable, maxlen: int) -> None:
        self._table = table
        self._queue: collections.deque[Event] = collections.deque(maxlen=maxlen)
        self._wake = trio.Event()
        self.dropped = 0

    def _push(self, event: Event) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
            self._table.dropped_events += 1
        self._queue.append(event)
        self._wake.set()

    async def receive(self) -> Event:
        """The next event, waiting for one if need be."""
        while not self._queue:
            self._wake = trio.Event()
            await self._wake.wait()
        return self._queue.popleft()

    def close(self) -> None:
        self._table._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(eq=False)
class StateTable:
    """Actor statuses, per-actor counters and agent load problems, by key."""

    clock: Callable[[], float] = time.time
    _actors: dict[ActorKey, ActorStatus] = field(default_factory=dict)
    _counters: dict[ActorKey, collections.Counter[str]] = field(default_factory=dict)
    _problems: dict[str, tuple[Problem, ...]] = field(default_factory=dict)
    _versions: dict[str, FileVersion] = field(default_factory=dict)
    _subscribers: set[Subscription] = field(default_factory=set)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    dropped_events: int = 0
    tool_calls: collections.Counter[tuple[str, str, str]] = field(
        default_factory=collections.Counter
    )
    """Tool calls by (agent, tool, outcome)."""

    # --- actors ------------------------------------------------------------------------------

    def get(self, key: ActorKey) -> ActorStatus | None:
        return self._actors.get(key)

    def actors(self) -> Mapping[ActorKey, ActorStatus]:
        """A read-only view of every actor's status."""
        return MappingProxyType(self._actors)

    def set_state(self, key: ActorKey, state: ActorState, **changes: Any) -> ActorStatus:
        """Move an actor to ``state`` (recording since when) and publish the change."""
        now = self.clock()
        old = self._actors.get(key)
        if old is None:
            new = ActorStatus(key[0], key[1], state, now, **changes)
        else:
            new = replace(
                old, state=state, since=now if state != old.state else old.since, **changes
            )
        self._actors[key] = new
        self.publish("actor", new.as_dict())
        if old is not None and old.swap is not None and new.swap is None:
            self._settle_version(key[0])
        return new

    def note(self, key: ActorKey, detail: str | None) -> None:
        """Set an actor's health note without changing its state."""
        old = self._actors.get(key)
        if old is not None and old.detail != detail:
            self._actors[key] = replace(old, detail=detail)
            self.publish("actor", self._actors[key].as_dict())

    def set_swap(self, key: ActorKey, swap: Swap | None) -> None:
        """Record how a newer version of a running actor is doing (None: no swap under way)."""
        old = self._actors.get(key)
        if old is not None and old.swap != swap:
            self._actors[key] = replace(old, swap=swap)
            self.publish("actor", self._actors[key].as_dict())
            self._settle_version(key[0])

    def forget(self, key: ActorKey) -> None:
        """Drop a stopped actor that no longer exists in any file."""
        self._actors.pop(key, None)
        self._counters.pop(key, None)

    def count(self, key: ActorKey, name: str, n: int = 1) -> None:
        """Add to one of an actor's counters (messages handled, brain errors...)."""
        self._counters.setdefault(key, collections.Counter())[name] += n

    def counters(self, key: ActorKey) -> Mapping[str, int]:
        return MappingProxyType(self._counters.get(key, collections.Counter()))

    def count_tool(self, agent: str, tool: str, outcome: str) -> None:
        """Count one call of ``tool`` (``server.tool``) by ``agent``."""
        self.tool_calls[agent, tool, outcome] += 1

    def observe(self, name: str, seconds: float, buckets: tuple[float, ...] = BUCKETS) -> None:
        """Record a duration (``reload``, ``brain``) for the metrics; ``buckets``: its
        histogram's bounds, when the first duration of that name comes."""
        self.histograms.setdefault(name, Histogram(buckets)).observe(seconds)

    def by_state(self) -> collections.Counter[ActorState]:
        return collections.Counter(s.state for s in self._actors.values())

    # --- agent files -------------------------------------------------------------------------

    def set_problems(self, file: str, problems: tuple[Problem, ...]) -> None:
        """Record why ``file`` does not load (empty: it loads again)."""
        if problems:
            self._problems[file] = problems
        else:
            self._problems.pop(file, None)

    def problems(self) -> Mapping[str, tuple[Problem, ...]]:
        return MappingProxyType(self._problems)

    def set_version(self, agent_id: str, version: FileVersion | None) -> None:
        """Record the live version of an agent's file (None: the agent is gone). Silent: the
        change it goes with (``agent.loaded``, ``agent.error``) is the event."""
        if version is None:
            self._versions.pop(agent_id, None)
        else:
            self._versions[agent_id] = version

    def _settle_version(self, agent_id: str) -> None:
        """Once the swaps to the live version are over: taken over (it is live for good), or
        failed for good (the previous version is what runs: it is live again, the new one
        beside it as rejected, with the error)."""
        live = self._versions.get(agent_id)
        if live is None or live.previous is None:
            return
        swaps = {
            plugin: s.swap
            for (agent, plugin), s in self._actors.items()
            if agent == agent_id and s.swap is not None and s.swap.version == live.blob
        }
        failed = [
            f"plugins.{plugin}: {swap.error}"
            for plugin, swap in swaps.items()
            if swap.state == ActorState.FAILED
        ]
        if failed:
            rejected = Rejected(live.blob, tuple(failed), self.clock())
            self._versions[agent_id] = replace(live.previous, rejected=rejected)
            self.publish(
                "agent.error",
                {"agent": agent_id, "file": live.file, "blob": live.blob, "problems": failed},
            )
        elif not swaps:
            self._versions[agent_id] = replace(live, previous=None)

    def version(self, agent_id: str) -> FileVersion | None:
        return self._versions.get(agent_id)

    def versions(self) -> Mapping[str, FileVersion]:
        return MappingProxyType(self._versions)

    # --- events ------------------------------------------------------------------------------

    def publish(self, type_: str, data: Mapping[str, Any]) -> None:
        event = Event(type_, self.clock(), data)
        for sub in self._subscribers:
            sub._push(event)

    def subscribe(self, maxlen: int = 1000) -> Subscription:
        """A new feed of every event from now on; close it when done."""
        sub = Subscription(self, maxlen)
        self._subscribers.add(sub)
        return sub
