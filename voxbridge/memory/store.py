"""The store as the runtime sees it: writes handed to a thread of their own, reads in worker
threads, and how memory is doing.

    Store.run
    ├── writer thread   opens the store, commits what is queued in batches, retries a failing
    │                   store, moves a damaged database aside, runs forget and expiry (.writer)
    └── epoch           notices what another process forgot (voxbridge memory … forget)

Writes are queued at once and committed in the background, many in one transaction when they
arrive together; :meth:`Store.committed` waits for one. A conversation waits for its own last
write before it answers its next message — the promise that a turn is committed before the next
message of that conversation is answered.

When the store fails (a full disk, a server down, a damaged file) memory is *degraded*: writes
stay queued and are retried with backoff, reads answer with nothing, nobody waits for a commit,
and agents go on answering with what they hold. When it works again the queue is written
("caught up"); what overflowed the queue meanwhile is counted as lost. A damaged SQLite file is
moved aside and a fresh one started, loudly.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import outcome
import trio

from .backend import AddTurn, Backend, StoreFault, Write
from .records import StoredTurn
from .writer import Job, Queued, Writer

__all__ = ["FINE_BUCKETS", "Health", "Store"]

log = logging.getLogger("voxbridge.memory")

T = TypeVar("T")

FINE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0)
"""Seconds: a store operation takes a fraction of a millisecond when all is well."""

MAX_BATCH = 500  # writes in one transaction
MAX_QUEUE = 100_000  # writes held while the store is down; beyond, the oldest are lost
READERS = 2  # reads at once (the SQLite backend has two reader connections)
EPOCH_EVERY = 2.0  # seconds between two looks for another process's forgetting
BACKOFF = (0.5, 30.0)  # first and longest wait between two tries of a failing store
STOP_WAIT = 10.0  # seconds the writer gets to finish (a commit, a connection attempt) at exit


@dataclass(frozen=True, slots=True)
class Health:
    """How memory is doing, for the status server and the metrics."""

    store: str
    """``sqlite:<path>`` or ``postgresql://user@host/db`` (never a password)."""
    state: str
    """``starting`` (not open yet), ``ok``, ``degraded`` (failing: see ``detail``)."""
    detail: str | None
    pending: int
    """Writes waiting to be committed."""
    lost: int
    """Writes dropped because the store was down too long."""
    notice: str | None
    """Something an operator must know although all is well again (a damaged file moved
    aside)."""

    @property
    def degraded(self) -> bool:
        return self.state != "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "state": self.state,
            "detail": self.detail,
            "pending": self.pending,
            "lost": self.lost,
            "notice": self.notice,
        }


Opener = Callable[[], tuple[Backend, str | None]]
"""Opens the backend (blocking); returns it and a notice (a damaged file moved aside)."""


class Store:
    """Memory's database, for Trio code (see the module's docstring)."""

    def __init__(
        self,
        opener: Opener,
        shown: str,
        *,
        observe: Callable[[str, float], None] = lambda _name, _s: None,
        on_forgotten: Callable[[], None] = lambda: None,
        on_health: Callable[[Health], None] = lambda _health: None,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self._opener = opener
        self._shown = shown
        self._observe = observe
        self._on_forgotten = on_forgotten
        self._on_health = on_health
        self._max_queue = max_queue
        self.backend: Backend | None = None
        """The open backend, for reads (the writer thread owns its writing connection)."""
        self._writer: Writer | None = None
        self._waiting: collections.deque[Queued] = collections.deque()  # queued, not committed
        self._queued = 0  # the last sequence number given out
        self._committed = 0  # every write up to this one is committed (or lost)
        self._progress = trio.Event()  # set (and replaced) at each commit or change of health
        self._readers = trio.CapacityLimiter(READERS)
        self._state = "starting"
        self._fault: StoreFault | None = None
        self._failing = ""  # what failed: opening, writing, reading, changing
        self._notice: str | None = None
        self._lost = 0
        self._epoch: int | None = None
        self._tried = trio.Event()  # set once the first try to open has ended, either way
        self.write_latencies: collections.deque[float] = collections.deque(maxlen=10_000)
        """Seconds from queued to committed, for the most recent writes (benchmarks)."""

    # --- health --------------------------------------------------------------------------------

    def health(self) -> Health:
        self._sync()
        detail = str(self._fault) if self._fault is not None else None
        if self._state == "starting" and detail is None:
            detail = "opening the store"
        return Health(
            self._shown, self._state, detail, len(self._waiting), self._lost, self._notice
        )

    @property
    def ok(self) -> bool:
        return self._state == "ok"

    def _changed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _on_failed(self, fault: StoreFault, doing: str) -> None:
        """(From the writer, or a read.) An operation failed: memory is degraded."""
        if doing == "opening":
            self._tried.set()
        told = (
            self._state == "degraded" and self._fault is not None and self._fault.kind == fault.kind
        )
        if not told:
            log.error("❌ memory degraded (%s): %s — agents answer on without it", doing, fault)
        self._fault, self._failing = fault, doing
        self._state = "degraded"
        self._changed()
        if not told:
            self._on_health(self.health())

    def _healed(self) -> None:
        if self._state != "ok":
            failed = self._fault is not None  # not just opened: back after a failure
            if failed:
                log.info(
                    "✅ memory is back: %s (%d writes waiting)", self._shown, len(self._waiting)
                )
            self._state, self._fault, self._failing = "ok", None, ""
            self._changed()
            if failed:
                self._on_health(self.health())

    def _on_opened(self, backend: Backend, notice: str | None) -> None:
        """(From the writer.) The store is open."""
        self.backend = backend
        if notice:
            self._notice = notice
        self._healed()
        self._tried.set()

    def _on_committed(self) -> None:
        """(From the writer.) A write someone waits for is committed."""
        self._sync()
        self._changed()

    def _sync(self) -> None:
        """Catch up with the writer: what it committed, how long each write took."""
        writer = self._writer
        if writer is None:
            return
        last = writer.committed
        if last > self._committed:
            while self._waiting and self._waiting[0].seq <= last:
                self._waiting.popleft()
            self._committed = last
            if self._failing in ("writing", "opening"):
                self._healed()
        while writer.latencies:
            latency = writer.latencies.popleft()
            self.write_latencies.append(latency)
            self._observe("memory_write", latency)

    def _on_replaced(self, aside: str) -> None:
        """(From the writer.) A damaged database was moved aside; a fresh one is opening."""
        self.backend = None
        self._notice = (
            f"the memory database was damaged: moved aside to {aside}; a fresh one was started "
            "(what it held is in the old file)"
        )
        log.error("❌ %s", self._notice)
        self._on_health(self.health())

    # --- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the writer thread (it opens the store) and watch for forgetting, until
        cancelled. Reports started at once: nothing waits for the store to open (memory is
        degraded until it does). On the way out, what is queued is committed if the store
        lets it within a bound."""
        token = trio.lowlevel.current_trio_token()
        writer = Writer(self._opener, _Reports(self), token, max_batch=MAX_BATCH, backoff=BACKOFF)
        for queued in self._waiting:  # queued before the store ran
            writer.submit(queued)

        def ended(_result: outcome.Outcome[None]) -> None:
            token.run_sync_soon(writer.done.set)

        trio.lowlevel.start_thread_soon(writer.serve, ended, name="voxbridge-memory-writer")
        self._writer = writer
        task_status.started()
        try:
            await self._watch_epoch()
        finally:
            self.backend = None
            writer.stop()
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_WAIT):
                await writer.done.wait()
            self._sync()
            self._writer = None

    async def opened(self) -> bool:
        """Wait for the first try to open the store to end; whether the store is open (False
        at once when the store is not running: nothing is opening it)."""
        if self._writer is not None:
            await self._tried.wait()
        return self.backend is not None

    async def _watch_epoch(self) -> None:
        while True:
            await trio.sleep(EPOCH_EVERY)
            if self.backend is None or not self.ok:
                continue
            epoch = await self.read(lambda b: b.forget_epoch(), default=None)
            if epoch is not None and epoch != self._epoch:
                if self._epoch is not None:
                    self._on_forgotten()
                self._epoch = epoch

    # --- writing -------------------------------------------------------------------------------

    def put(self, write: Write) -> int:
        """Queue ``write``; its sequence number (for :meth:`committed`). Never blocks."""
        self._sync()
        self._queued += 1
        queued = Queued(self._queued, write)
        self._waiting.append(queued)
        if self._writer is not None:
            self._writer.submit(queued)
        if len(self._waiting) > self._max_queue:
            lost = self._waiting.popleft()
            self._committed = max(self._committed, lost.seq)
            if self._writer is not None:
                self._writer.drop_upto(lost.seq)
            self._lost += 1
            if self._lost == 1 or self._lost % 1000 == 0:
                log.error(
                    "❌ memory lost %d write(s): more than %d were waiting for the store (%s)",
                    self._lost,
                    self._max_queue,
                    self._fault or "it is not keeping up",
                )
        return self._queued

    async def committed(self, seq: int) -> bool:
        """Wait until write ``seq`` is committed; False at once while memory is degraded (no
        one waits for a store that is down) or the store is not running, or when it becomes
        so."""
        while True:
            self._sync()
            if self._committed >= seq:
                return True
            if self._state == "degraded" or self._writer is None:
                return False
            writer = self._writer
            if writer is not None:
                writer.wanted = seq  # then look again: the writer may have just committed it
                if writer.committed >= seq:
                    continue
            await self._progress.wait()

    async def healthy(self) -> None:
        """Wait until the store works (again)."""
        while self._state != "ok":
            await self._progress.wait()

    async def flush(self) -> int:
        """Wait until everything queued so far is committed, or memory is degraded; how many
        writes are still waiting (0: all are in the store)."""
        await self.committed(self._queued)
        return len(self._waiting)

    def pending(self, agent: str, place: str) -> list[StoredTurn]:
        """Turns of a conversation not committed yet (a conversation loaded while the store is
        down still shows them)."""
        self._sync()
        return [
            q.write.turn
            for q in self._waiting
            if isinstance(q.write, AddTurn)
            and q.write.turn.agent == agent
            and q.write.turn.place == place
        ]

    async def _job(self, job: Callable[[Callable[[outcome.Outcome[Any]], None]], Job]) -> Any:
        writer = self._writer
        if writer is None:
            raise StoreFault("unreachable", "the store is not running")
        done = trio.Event()
        box: list[outcome.Outcome[Any]] = []

        def deliver(result: outcome.Outcome[Any]) -> None:
            box.append(result)
            done.set()

        writer.job(job(deliver))
        with trio.CancelScope(shield=True):  # a change runs to its end once it has started
            await done.wait()
        await trio.lowlevel.checkpoint_if_cancelled()
        return box[0].unwrap()

    async def change(self, fn: Callable[[Backend], T]) -> T:
        """Run a change that is not a queued write (forget, expiry) on the writer's connection,
        after the writes queued before it.

        Raises:
            StoreFault: it failed, or the store is not open (memory is then degraded).
        """
        result: T = await self._job(lambda deliver: Job(fn, deliver))
        return result

    # --- reading -------------------------------------------------------------------------------

    async def read(self, fn: Callable[[Backend], T], *, default: T) -> T:
        """``fn(backend)`` in a worker thread; ``default`` when it fails (memory is then
        degraded), when the store is not open, or when it is unreachable (no one waits seconds
        for a server that is down: the writer notices when it is back)."""
        backend = self.backend
        if backend is None or (self._fault is not None and self._fault.kind == "unreachable"):
            return default
        async with self._readers:
            started = time.perf_counter()
            try:
                result = await trio.to_thread.run_sync(fn, backend)
            except StoreFault as fault:
                self._on_failed(fault, "reading")
                if fault.kind == "corrupt":
                    await self._job(lambda deliver: Job(lambda _b: None, deliver, damaged=backend))
                return default
            self._observe("memory_read", time.perf_counter() - started)
            if self._failing == "reading":
                self._healed()
            return result


class _Reports:
    """The writer's reports, delivered to the store (on the Trio thread)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def opened(self, backend: Backend, notice: str | None) -> None:
        self._store._on_opened(backend, notice)

    def failed(self, fault: StoreFault, doing: str) -> None:
        self._store._on_failed(fault, doing)

    def committed(self) -> None:
        self._store._on_committed()

    def replaced(self, aside: str) -> None:
        self._store._on_replaced(aside)
