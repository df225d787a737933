"""Memory as the runtime provides it: the store, the conversations in use, and each agent's
facts — one :class:`MemoryService` per process, seen by an actor as its agent's
:class:`AgentMemory` (``ctx.memory``).

    MemoryService.run
    ├── store         the database: opened, written in batches (see .store)
    ├── sweep         memory.keep: old turns and facts deleted, hourly
    ├── rows          rows per kind, for the metrics, every minute
    └── learners      one per agent with facts: true (see .facts)

Conversations are loaded when first used (start-up reads none) and held while in use — by
place, so a restarted actor, a second browser tab or a new version of a bot (make-before-break)
finds the same one. A conversation loaded while the store was down is reloaded once it is back.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import trio

from ..config.model import Agent, MemoryConfig, reveal
from .backend import StoreFault
from .conversation import Conversation, Exchange
from .embeddings import EmbeddingError, embed
from .facts import Learner, Lesson, fuse, keywords
from .location import Location
from .records import Counts, Fact, PersonSummary, StoredTurn
from .store import FINE_BUCKETS, Health, Store

__all__ = ["AgentMemory", "MemoryService"]

log = logging.getLogger("voxbridge.memory")

HELD = 2000  # conversations held in the process (beyond, the least recently used are dropped)
MIN_LOAD = 20  # turns loaded at least, so a larger `history` set later rarely needs a reload
OPEN_WAIT = 5.0  # seconds a conversation waits for a store still opening, before going without
SWEEP_EVERY = 3600.0
FIRST_SWEEP = 60.0
ROWS_EVERY = 60.0

Observe = Callable[..., None]


class MemoryService:
    """The memory of every agent of this process (see the module's docstring)."""

    def __init__(
        self,
        location: Location | None,
        *,
        agents: Callable[[], Mapping[str, Agent]],
        http: Callable[[], httpx.AsyncClient],
        observe: Observe = lambda *_args, **_kw: None,
        on_health: Callable[[Health], None] = lambda _health: None,
    ) -> None:
        self.location = location
        self._agents = agents
        self._http = http
        self._observe = observe
        self.store = (
            Store(
                location.open,
                location.shown,
                observe=self._observe_fine,
                on_forgotten=self._forgotten,
                on_health=on_health,
            )
            if location is not None
            else None
        )
        self._live: collections.OrderedDict[tuple[str, str], Conversation] = (
            collections.OrderedDict()
        )
        self._loading: dict[tuple[str, str], trio.Event] = {}
        self._learners: dict[str, Learner] = {}
        self._nursery: trio.Nursery | None = None
        self.rows: dict[str, int] = {}
        """Rows per kind in the store (refreshed every minute)."""
        self.counters: collections.Counter[tuple[str, str]] = collections.Counter()
        """Per (agent, name): facts_learned, facts_dropped, facts_errors, recall_errors."""

    def _observe_fine(self, name: str, seconds: float) -> None:
        self._observe(name, seconds, buckets=FINE_BUCKETS)

    def health(self) -> Health | None:
        """How the store is doing (None: no store, memory lives in the process only)."""
        return self.store.health() if self.store is not None else None

    def of(self, agent_id: str) -> AgentMemory:
        """What an agent's actors see of memory."""
        return AgentMemory(self, agent_id)

    def agent(self, agent_id: str) -> Agent | None:
        return self._agents().get(agent_id)

    # --- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the store and memory's housekeeping until cancelled; reports started at once
        (the store opens in the background: memory is degraded until it does)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.store is not None:
                await nursery.start(self.store.run)
                nursery.start_soon(self._sweep)
                nursery.start_soon(self._count_rows)
            for learner in self._learners.values():
                nursery.start_soon(learner.run)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def ready(self) -> bool:
        """Wait until the store has opened, or failed to (memory is then degraded and the store
        is retried in the background); whether it is open. For a command that talks to one
        conversation at once (chat, talk): a runtime does not wait, it reloads what it loaded
        too early."""
        return self.store is not None and await self.store.opened()

    async def _sweep(self) -> None:
        await trio.sleep(FIRST_SWEEP)
        while True:
            await self.expire()
            for agent in list(self._agents().values()):
                if agent.memory.facts and agent.memory.embeddings is not None:
                    learner = self._learner(agent.id)
                    if learner is not None:
                        await learner.backfill()  # facts imported, or of another model
            await trio.sleep(SWEEP_EVERY)

    async def expire(self) -> Counts:
        """Delete what is older than each agent's ``memory.keep`` (an agent whose file is gone
        keeps the default); what was deleted."""
        store = self.store
        if store is None or not store.ok:
            return Counts()
        total = Counts()
        stored: list[str] = await store.read(lambda b: b.agents(), default=[])
        for agent_id in stored:
            agent = self.agent(agent_id)
            keep = (agent.memory if agent is not None else MemoryConfig()).keep
            if keep is None:
                continue
            try:
                total += await self._expire(store, agent_id, time.time() - keep)
            except StoreFault:  # the store's health says what failed; the next sweep retries
                break
        if total.turns or total.facts:
            log.info("🧹 memory.keep: %d turn(s) and %d fact(s) expired", total.turns, total.facts)
            self._forgotten()
        return total

    @staticmethod
    async def _expire(store: Store, agent_id: str, before: float) -> Counts:
        total = Counts()
        while True:  # in chunks: the writer's queue goes on between them
            removed = await store.change(lambda b: b.expire(agent_id, before))
            total += removed
            if not (removed.turns or removed.facts):
                return total

    async def _count_rows(self) -> None:
        while True:
            if self.store is not None and self.store.ok:
                self.rows = await self.store.read(lambda b: b.counts(), default=self.rows)
            await trio.sleep(ROWS_EVERY)

    async def settle(self) -> None:
        """Before the process ends: let learning finish and the queue be written (bound it
        with a cancel scope); say what could not be kept."""
        try:
            for learner in list(self._learners.values()):
                await learner.idle()
            if self.store is not None:
                await self.store.flush()
        finally:
            left = self.store.health().pending if self.store is not None else 0
            if left:
                log.error(
                    "❌ memory: %d write(s) not stored before stopping (%s)",
                    left,
                    self.store.health().detail if self.store else "the store is slow",
                )

    def _forgotten(self) -> None:
        """Something was forgotten (here or by another process): held conversations may hold
        it, so they are dropped and read again when next used."""
        self._live.clear()

    def _learner(self, agent_id: str) -> Learner | None:
        if self.store is None:
            return None
        learner = self._learners.get(agent_id)
        if learner is None:
            learner = self._learners[agent_id] = Learner(
                agent_id,
                lambda: self.agent(agent_id),
                self.store,
                self._http,
                count=lambda name, n: self.counters.update({(agent_id, name): n}),
            )
            if self._nursery is not None:
                self._nursery.start_soon(learner.run)
        return learner

    # --- conversations -------------------------------------------------------------------------

    async def conversation(self, agent_id: str, place: str) -> Conversation:
        key = (agent_id, place)
        while True:
            held = self._live.get(key)
            if held is not None and not self._outdated(held, agent_id):
                self._live.move_to_end(key)
                return held
            loading = self._loading.get(key)
            if loading is None:
                break
            await loading.wait()
        self._loading[key] = done = trio.Event()
        try:
            conversation = await self._load(agent_id, place)
        finally:
            del self._loading[key]
            done.set()
        self._live[key] = conversation
        self._trim()
        return conversation

    def _config(self, agent_id: str) -> tuple[MemoryConfig, int]:
        agent = self.agent(agent_id)
        return (agent.memory, agent.history) if agent is not None else (MemoryConfig(), 10)

    def _outdated(self, held: Conversation, agent_id: str) -> bool:
        if held.busy:
            return False  # an answer is on its way into it
        config, history = self._config(agent_id)
        durable = self.store is not None and config.conversations
        if held.durable != durable:
            return True
        return durable and (
            (held.loaded is not None and history > held.loaded)
            or (held.partial and self.store is not None and self.store.ok)
        )

    async def _load(self, agent_id: str, place: str) -> Conversation:
        config, history = self._config(agent_id)
        store = self.store if config.conversations else None
        if store is None:
            return Conversation(agent_id, place, learn=self._learn)
        limit = max(history, MIN_LOAD)
        with trio.move_on_after(OPEN_WAIT):  # just started: the store is opening
            await store.opened()
        started = time.perf_counter()
        partial = not store.ok
        stored: list[StoredTurn] = await store.read(
            lambda b: b.recent_turns(agent_id, place, limit), default=[]
        )
        self._observe_fine("memory_history_load", time.perf_counter() - started)
        return Conversation(
            agent_id,
            place,
            [*stored, *store.pending(agent_id, place)],
            journal=store,
            learn=self._learn,
            loaded=limit,
            partial=partial,
        )

    def _trim(self) -> None:
        while len(self._live) > HELD:
            for key, held in self._live.items():
                if not held.busy:
                    del self._live[key]
                    break
            else:
                return

    def _learn(self, exchange: Exchange, answer: str) -> None:
        conversation = exchange.conversation
        agent = self.agent(conversation.agent)
        if agent is None or not agent.memory.facts or not exchange.person:
            return
        learner = self._learner(conversation.agent)
        if learner is not None:
            learner.offer(
                Lesson(exchange.person, exchange.name or "the person", exchange.question, answer)
            )

    # --- facts ---------------------------------------------------------------------------------

    async def recall(self, agent_id: str, person: str, question: str) -> list[str]:
        store, agent = self.store, self.agent(agent_id)
        if store is None or agent is None or not agent.memory.facts or not person:
            return []
        config = agent.memory
        started = time.perf_counter()
        limit = config.recall
        words = keywords(question)
        by_words: list[Fact] = await store.read(
            lambda b: b.recall_text(agent_id, person, words, limit), default=[]
        )
        rankings = [by_words]
        if config.embeddings is not None and store.backend is not None and store.backend.vectors:
            try:
                (vector,) = await embed(self._http(), config.embeddings, [question])
            except EmbeddingError as exc:
                self.counters[agent_id, "recall_errors"] += 1
                log.warning("⚠️ %s: recall by meaning failed, by words only: %s", agent_id, exc)
            else:
                rankings.append(
                    await store.read(
                        lambda b: b.recall_vector(agent_id, person, vector, limit), default=[]
                    )
                )
        found = fuse(rankings, limit)
        if len(found) < limit:
            have = {f.id for f in found}
            newest: list[Fact] = await store.read(
                lambda b: b.facts(agent_id, person, limit), default=[]
            )
            found += [f for f in newest if f.id not in have][: limit - len(found)]
        self._observe_fine("memory_recall", time.perf_counter() - started)
        return [f.text for f in found]


class AgentMemory:
    """One agent's memory, as its actors reach it (``ctx.memory``)."""

    def __init__(self, service: MemoryService, agent_id: str) -> None:
        self._service = service
        self.agent_id = agent_id

    async def conversation(self, place: str) -> Conversation:
        """The conversation at ``place`` (``discord:<channel id>``, ``web:<id>``...), loaded
        from the store when first used, and shared by everyone who answers there."""
        return await self._service.conversation(self.agent_id, place)

    async def recall(self, person: str, question: str) -> list[str]:
        """What the agent remembers of ``person`` that bears on ``question`` (with
        ``memory.facts``; else nothing)."""
        return await self._service.recall(self.agent_id, person, question)

    async def facts(self, person: str) -> list[Fact]:
        """Everything the agent remembers about ``person``, newest first."""
        store = self._service.store
        if store is None:
            return []
        return await store.read(lambda b: b.facts(self.agent_id, person), default=[])

    async def about(self, person: str) -> PersonSummary | None:
        """How much the agent holds of ``person`` (facts, turns), or None: nothing."""
        store = self._service.store
        if store is None:
            return None
        found: list[PersonSummary] = await store.read(
            lambda b: b.persons(self.agent_id, person), default=[]
        )
        return found[0] if found else None

    async def forget(self, person: str) -> Counts:
        """Forget ``person``: their facts and every exchange they asked, gone from the store.

        Raises:
            StoreFault: the store could not do it now (nothing is half done).
        """
        store = self._service.store
        if store is None:
            return Counts()
        counts = await store.change(lambda b: b.forget(self.agent_id, person=person))
        self._service._forgotten()
        return counts

    def health(self) -> dict[str, Any]:
        """How this agent's memory is doing, for the status server."""
        service = self._service
        agent = service.agent(self.agent_id)
        config = agent.memory if agent is not None else MemoryConfig()
        health = service.health()
        view: dict[str, Any] = {
            "conversations": config.conversations,
            "facts": config.facts,
            "embeddings": reveal(config.embeddings.model) if config.embeddings else None,
        }
        if health is None or (not config.conversations and not config.facts):
            return view | {"state": "in process" if health is None else "off"}
        counters = service.counters
        return (
            view
            | health.as_dict()
            | {
                "learned": counters[self.agent_id, "facts_learned"],
            }
        )
