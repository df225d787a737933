"""The store as the runtime sees it: a backend reached from worker threads, writes batched.

    Store.run
    ├── open        the backend, in a thread; retried with backoff until it opens
    ├── write loop  everything queued → one transaction; retried while the store is down
    └── epoch       notices what another process forgot (voxbridge memory … forget)

Writes are queued at once and committed by one task, many in one transaction when several
arrive together (that keeps the p95 low under load); :meth:`Store.committed` waits for one.
A conversation waits for its own last write before it answers its next message — the
promise that a turn is committed before the next message of that conversation is answered.

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

import trio

from .backend import AddTurn, Backend, StoreFault, Write
from .records import StoredTurn

__all__ = ["FINE_BUCKETS", "Health", "Store"]

log = logging.getLogger("voxbridge.memory")

T = TypeVar("T")

FINE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0)
"""Seconds: a store operation takes a fraction of a millisecond when all is well."""

MAX_BATCH = 500  # writes in one transaction
MAX_QUEUE = 100_000  # writes held while the store is down; beyond, the oldest are lost
READERS = 2  # reads at once (the SQLite backend has two reader connections)
EPOCH_EVERY = 2.0  # seconds between two looks for another process's forgetting
_BACKOFF = (0.5, 30.0)  # first and longest wait between two tries of a failing store


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


@dataclass(frozen=True, slots=True)
class _Queued:
    seq: int
    write: Write
    at: float


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
    ) -> None:
        self._opener = opener
        self._shown = shown
        self._observe = observe
        self._on_forgotten = on_forgotten
        self.backend: Backend | None = None
        self._queue: collections.deque[_Queued] = collections.deque()
        self._queued = 0  # the last sequence number given out
        self._committed = 0  # every write up to this one is committed (or lost)
        self._progress = trio.Event()  # set (and replaced) at each commit or change of health
        self._wake = trio.Event()
        self._write_lock = trio.Lock()  # the backend's one writer: batches, forget, expiry
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
        detail = str(self._fault) if self._fault is not None else None
        if self._state == "starting" and detail is None:
            detail = "opening the store"
        return Health(self._shown, self._state, detail, len(self._queue), self._lost, self._notice)

    @property
    def ok(self) -> bool:
        return self._state == "ok"

    def _changed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def _failed(self, fault: StoreFault, doing: str) -> None:
        if self._fault is None or self._fault.kind != fault.kind or self._state == "ok":
            log.error("❌ memory degraded (%s): %s — agents answer on without it", doing, fault)
        self._fault, self._failing = fault, doing
        self._state = "degraded"
        self._changed()

    def _healed(self) -> None:
        if self._state != "ok":
            was = "opened" if self._state == "starting" else "back"
            if self._fault is not None:
                log.info(
                    "✅ memory is %s: %s (%d writes waiting)", was, self._shown, len(self._queue)
                )
            self._state, self._fault, self._failing = "ok", None, ""
            self._changed()

    # --- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the store, then write what is queued, until cancelled. Reports started at once:
        nothing waits for the store to open (memory is degraded until it does)."""
        task_status.started()
        try:
            await self._open()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_epoch)
                await self._write_loop()
        finally:
            backend, self.backend = self.backend, None
            if backend is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(backend.close)

    async def opened(self) -> bool:
        """Wait for the first try to open the store to end; whether the store is open."""
        await self._tried.wait()
        return self.backend is not None

    async def _open(self) -> None:
        delay = _BACKOFF[0]
        while True:
            try:
                backend, notice = await trio.to_thread.run_sync(self._opener)
            except StoreFault as fault:
                self._failed(fault, "opening")
                self._tried.set()
                await trio.sleep(delay)
                delay = min(delay * 2, _BACKOFF[1])
                continue
            self.backend = backend
            if notice:
                self._notice = notice
            self._healed()
            self._tried.set()
            return

    async def _write_loop(self) -> None:
        delay = _BACKOFF[0]
        while True:
            if not self._queue:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch = [self._queue[i] for i in range(min(MAX_BATCH, len(self._queue)))]
            try:
                async with self._write_lock:
                    await self._call(self._write_batch, [q.write for q in batch])
            except StoreFault as fault:
                self._failed(fault, "writing")
                if fault.kind == "corrupt":
                    await self._replace()
                await trio.sleep(delay)
                delay = min(delay * 2, _BACKOFF[1])
                continue
            delay = _BACKOFF[0]
            now = trio.current_time()
            for queued in batch:
                if self._queue and self._queue[0] is queued:
                    self._queue.popleft()
                latency = now - queued.at
                self.write_latencies.append(latency)
                self._observe("memory_write", latency)
            self._committed = max(self._committed, batch[-1].seq)
            self._healed()
            self._changed()

    def _write_batch(self, writes: list[Write]) -> None:
        assert self.backend is not None
        self.backend.write(writes)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self.backend is None:
            raise StoreFault("unreachable", "the store is not open yet")
        return await trio.to_thread.run_sync(fn, *args)

    async def _replace(self) -> None:
        """A damaged database: moved aside (by the backend, never deleted), a fresh one opened."""
        backend, self.backend = self.backend, None
        if backend is None:
            return
        aside = await trio.to_thread.run_sync(backend.discard)
        if aside is None:
            self.backend = backend  # a server's database: not ours to replace; retried
            return
        self._notice = (
            f"the memory database was damaged: moved aside to {aside}; a fresh one was started "
            "(what it held is in the old file)"
        )
        log.error("❌ %s", self._notice)
        await self._open()

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
        self._queued += 1
        self._queue.append(_Queued(self._queued, write, trio.current_time()))
        if len(self._queue) > MAX_QUEUE:
            lost = self._queue.popleft()
            self._committed = max(self._committed, lost.seq)
            self._lost += 1
            if self._lost == 1 or self._lost % 1000 == 0:
                log.error(
                    "❌ memory lost %d write(s): the store has been down too long (%s)",
                    self._lost,
                    self._fault,
                )
        self._wake.set()
        return self._queued

    async def committed(self, seq: int) -> bool:
        """Wait until write ``seq`` is committed; False at once while memory is degraded (no
        one waits for a store that is down), or when it becomes so."""
        while self._committed < seq:
            if self._state == "degraded":
                return False
            await self._progress.wait()
        return True

    async def flush(self) -> int:
        """Wait until everything queued so far is committed, or memory is not ok; how many
        writes are still waiting (0: all are in the store)."""
        await self.committed(self._queued)
        return len(self._queue)

    def pending(self, agent: str, place: str) -> list[StoredTurn]:
        """Turns of a conversation not committed yet (a conversation loaded while the store is
        down still shows them)."""
        return [
            q.write.turn
            for q in self._queue
            if isinstance(q.write, AddTurn)
            and q.write.turn.agent == agent
            and q.write.turn.place == place
        ]

    async def change(self, fn: Callable[[Backend], T]) -> T:
        """Run a change that is not a queued write (forget, expiry) as the backend's one writer.

        Raises:
            StoreFault: it failed (memory is then degraded).
        """
        async with self._write_lock:
            try:
                return await self._call(fn, self.backend)
            except StoreFault as fault:
                self._failed(fault, "changing")
                raise

    # --- reading -------------------------------------------------------------------------------

    async def read(self, fn: Callable[[Backend], T], *, default: T) -> T:
        """``fn(backend)`` in a worker thread; ``default`` when it fails (memory is then
        degraded), when the store is not open, or when it is unreachable (no one waits seconds
        for a server that is down: the write loop notices when it is back)."""
        if self.backend is None or (self._fault is not None and self._fault.kind == "unreachable"):
            return default
        backend = self.backend
        async with self._readers:
            started = time.perf_counter()
            try:
                result = await trio.to_thread.run_sync(fn, backend)
            except StoreFault as fault:
                self._failed(fault, "reading")
                if fault.kind == "corrupt":
                    async with self._write_lock:
                        if self.backend is backend:
                            await self._replace()
                return default
            self._observe("memory_read", time.perf_counter() - started)
            if self._failing == "reading":
                self._healed()
            return result
