"""The thread that writes memory, for as long as the store runs.

Every turn is committed in a worker thread, so database access never blocks the Trio loop. A
turn is written per message, so the hand-over must cost next to nothing on the answer's path:
with a Trio task driving ``trio.to_thread`` per batch, its bookkeeping took ~0.2 ms of the Trio
thread in the middle of each answer (a tenth of the message budget). Here the Trio side only
puts a write into a ``queue.SimpleQueue``; this thread takes whatever has arrived (many writes
in one transaction when they come together), commits, and reports back once per batch through
the Trio token. It also opens the store, retries a failing one with backoff, moves a damaged
database aside, and runs the changes that must not interleave with writes (forget, expiry).

What crosses to the Trio side goes through :class:`Reports`, each call scheduled on the Trio
thread with ``run_sync_soon``, in order.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import outcome
import trio

from .backend import Backend, StoreFault, Write

__all__ = ["Job", "Queued", "Reports", "Writer"]

Opener = Callable[[], tuple[Backend, "str | None"]]


@dataclass(frozen=True, slots=True)
class Queued:
    """A write on its way: its sequence number, and when it was queued (perf_counter)."""

    seq: int
    write: Write
    at: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class Job:
    """A change run on the writer's connection between batches; its outcome is delivered.
    With ``damaged``: a read found that database damaged; replace it (unless it was already)."""

    fn: Callable[[Backend], Any]
    deliver: Callable[[outcome.Outcome[Any]], None]
    damaged: Backend | None = None


class Reports(Protocol):
    """What the writer tells the Trio side (each call runs on the Trio thread)."""

    def opened(self, backend: Backend, notice: str | None) -> None: ...

    def failed(self, fault: StoreFault, doing: str) -> None: ...

    def committed(self) -> None:
        """Someone waits for a write that is now committed (see :attr:`Writer.committed`)."""

    def replaced(self, aside: str) -> None: ...


_STOP = object()


class Writer:
    """The writing thread (see the module). ``submit``, ``job``, ``drop_upto`` and ``stop``
    are called from the Trio thread; ``serve`` is the thread."""

    def __init__(
        self,
        opener: Opener,
        reports: Reports,
        token: trio.lowlevel.TrioToken,
        *,
        max_batch: int,
        backoff: tuple[float, float],
    ) -> None:
        self._opener = opener
        self._reports = reports
        self._token = token
        self._max_batch = max_batch
        self._backoff = backoff
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._dropped = 0  # writes up to this one are not to be written (the queue overflowed)
        self._stopping = threading.Event()
        self.done = trio.Event()
        """Set (on the Trio side) once the thread has ended and closed the store."""
        # Commits are told without waking the Trio thread: it reads these when it looks, and
        # is woken only when it waits for a write (``wanted``). Each is written by one side and
        # read by the other: plain attribute access, ordered by the GIL.
        self.committed = 0
        """Every write up to this one is committed (written by the thread)."""
        self.latencies: collections.deque[float] = collections.deque(maxlen=10_000)
        """Seconds from queued to committed, per write (appended by the thread)."""
        self.wanted = 0
        """The Trio side waits for this write (written by the Trio thread)."""

    # --- from the Trio thread ------------------------------------------------------------------

    def submit(self, queued: Queued) -> None:
        self._inbox.put(queued)

    def job(self, job: Job) -> None:
        self._inbox.put(job)

    def drop_upto(self, seq: int) -> None:
        """Writes up to ``seq`` are given up (an int assignment: atomic between threads)."""
        self._dropped = max(self._dropped, seq)

    def stop(self) -> None:
        self._stopping.set()
        self._inbox.put(_STOP)

    # --- the thread ----------------------------------------------------------------------------

    def _tell(self, fn: Callable[..., None], *args: Any) -> None:
        self._token.run_sync_soon(fn, *args)

    def serve(self) -> None:
        backend: Backend | None = None
        batch: list[Queued] = []
        jobs: list[Job] = []
        delay = self._backoff[0]
        try:
            while not self._stopping.is_set():
                if backend is None:
                    backend = self._open(batch, jobs)
                    if backend is None:
                        continue  # stopping
                if not batch and not jobs:
                    if not self._take(batch, jobs, block=True):
                        break
                elif not jobs:  # retrying a batch: what arrived since joins it
                    self._take(batch, jobs, block=False)
                batch[:] = [q for q in batch if q.seq > self._dropped]
                if batch:
                    try:
                        backend.write([q.write for q in batch])
                    except StoreFault as fault:
                        self._tell(self._reports.failed, fault, "writing")
                        if fault.kind == "corrupt":
                            backend = self._replace(backend)
                        if not self._wait(delay, batch, jobs):
                            break
                        delay = min(delay * 2, self._backoff[1])
                        continue
                    now = time.perf_counter()
                    self.latencies.extend(now - q.at for q in batch)
                    self.committed = batch[-1].seq
                    # Told only to whoever waits (read after ``committed`` is set), or after a
                    # failure: the store is back.
                    if (self.wanted and self.wanted <= self.committed) or delay > self._backoff[0]:
                        self.wanted = 0
                        self._tell(self._reports.committed)
                    batch.clear()
                    delay = self._backoff[0]
                backend = self._run(backend, jobs)
                jobs.clear()
        finally:
            if backend is not None:
                backend.close()
            for job in jobs:
                self._tell(job.deliver, outcome.Error(StoreFault("other", "memory is stopping")))

    def _run(self, backend: Backend | None, jobs: list[Job]) -> Backend | None:
        """Run ``jobs`` in order on ``backend``; the backend to go on with (None: it was
        damaged, moved aside, and is to be reopened)."""
        for job in jobs:
            if backend is None:
                fault = StoreFault("unreachable", "the store is being reopened: try again")
                self._tell(job.deliver, outcome.Error(fault))
                continue
            if job.damaged is not None:
                if job.damaged is backend:
                    backend = self._replace(backend)
                self._tell(job.deliver, outcome.Value(None))
                continue
            result = outcome.capture(job.fn, backend)
            if isinstance(result, outcome.Error) and isinstance(result.error, StoreFault):
                self._tell(self._reports.failed, result.error, "changing")
                if result.error.kind == "corrupt":
                    backend = self._replace(backend)
            self._tell(job.deliver, result)
        return backend

    def _take(self, batch: list[Queued], jobs: list[Job], *, block: bool) -> bool:
        """Move what has arrived into ``batch`` and ``jobs`` (waiting for the first item when
        ``block``); a job ends the taking, so writes before it are committed first. False
        once told to stop."""
        while len(batch) < self._max_batch:
            try:
                item = self._inbox.get() if block and not batch else self._inbox.get_nowait()
            except queue.Empty:
                return True
            if item is _STOP:
                return False
            if isinstance(item, Job):
                jobs.append(item)
                return True
            batch.append(item)
        return True

    def _wait(self, seconds: float, batch: list[Queued], jobs: list[Job]) -> bool:
        """Back off for ``seconds``, still taking writes (and failing jobs at once: the store
        is failing); False once told to stop."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._inbox.get(timeout=left)
            except queue.Empty:
                return True
            if item is _STOP:
                return False
            if isinstance(item, Job):
                fault = StoreFault("unreachable", "the store is failing: try again later")
                self._tell(item.deliver, outcome.Error(fault))
            else:
                batch.append(item)
        return True

    def _open(self, batch: list[Queued], jobs: list[Job]) -> Backend | None:
        delay = self._backoff[0]
        for job in jobs:
            self._tell(job.deliver, outcome.Error(StoreFault("unreachable", "not open yet")))
        jobs.clear()
        while True:
            try:
                backend, notice = self._opener()
            except StoreFault as fault:
                self._tell(self._reports.failed, fault, "opening")
                if not self._wait(delay, batch, jobs):
                    return None
                delay = min(delay * 2, self._backoff[1])
                continue
            self._tell(self._reports.opened, backend, notice)
            return backend

    def _replace(self, backend: Backend) -> Backend | None:
        """A damaged database: moved aside (never deleted) and a fresh one opened; a server's
        database is not ours to replace, so it stays (and is retried)."""
        aside = backend.discard()
        if aside is None:
            return backend
        self._tell(self._reports.replaced, aside)
        return None  # reopened by the loop
