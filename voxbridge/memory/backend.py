"""The seam between memory and a database: what a backend does, in plain blocking calls.

Two rooms implement it — :mod:`.sqlite` (embedded, the default) and :mod:`.postgres` (one
database for a sharded fleet) — and nothing else in voxbridge writes SQL. The runtime calls a
backend from worker threads (:mod:`.store`); the ``voxbridge memory`` command calls it directly.

A backend translates its driver's errors into :class:`StoreFault`, whose ``kind`` says what the
runtime can do about it: wait for space (``full``), for a server (``unreachable``), for a
permission (``readonly``), or move a damaged file aside (``corrupt``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from .records import Counts, Fact, PersonSummary, PlaceSummary, StoredTurn

__all__ = [
    "AddFact",
    "AddTurn",
    "AddVector",
    "Backend",
    "FaultKind",
    "StoreFault",
    "Vector",
    "Write",
]

FaultKind = Literal["full", "readonly", "corrupt", "unreachable", "other"]


class StoreFault(Exception):
    """A backend operation failed; ``kind`` says why, the message says it for people (a URL
    in it never carries a password)."""

    def __init__(self, kind: FaultKind, message: str) -> None:
        super().__init__(message)
        self.kind: FaultKind = kind


@dataclass(frozen=True, slots=True)
class Vector:
    """An embedding: ``dims`` float32 values, little-endian, as ``data``; ``model`` made it
    (vectors of different models are never compared)."""

    model: str
    dims: int
    data: bytes


@dataclass(frozen=True, slots=True)
class AddTurn:
    """Store a turn (again: a turn already stored is left as it is)."""

    turn: StoredTurn


@dataclass(frozen=True, slots=True)
class AddFact:
    """Store a fact, unless the person has one that reads the same; with its embedding."""

    fact: Fact
    vector: Vector | None = None


@dataclass(frozen=True, slots=True)
class AddVector:
    """Store the embedding of a fact stored before (facts learned before embeddings were set
    up, or imported, are embedded later)."""

    fact_id: int
    vector: Vector


Write = AddTurn | AddFact | AddVector


class Backend(Protocol):
    """A database that holds the memory of agents. Every method may raise
    :class:`StoreFault`; none is safe to call from two threads at once except where said."""

    kind: str
    """``sqlite`` or ``postgresql``."""
    where: str
    """Where the data lives, for people: a path, or a URL without its password."""

    @property
    def vectors(self) -> bool:
        """Whether :meth:`recall_vector` works here (sqlite-vec, pgvector)."""
        ...

    def write(self, batch: Sequence[Write]) -> None:
        """Apply ``batch`` in one transaction: all of it, or (raising) none of it."""
        ...

    def recent_turns(self, agent: str, place: str, limit: int) -> list[StoredTurn]:
        """The last ``limit`` turns of a conversation, oldest first."""
        ...

    def facts(self, agent: str, person: str, limit: int | None = None) -> list[Fact]:
        """A person's facts, newest first."""
        ...

    def recall_text(self, agent: str, person: str, words: Sequence[str], limit: int) -> list[Fact]:
        """A person's facts that match any of ``words`` (full-text, ranked), best first."""
        ...

    def recall_vector(self, agent: str, person: str, vector: Vector, limit: int) -> list[Fact]:
        """A person's facts nearest to ``vector`` (same model), nearest first."""
        ...

    def unembedded(self, agent: str, model: str, limit: int) -> list[Fact]:
        """Facts of an agent with no embedding by ``model`` yet."""
        ...

    def forget(self, agent: str, *, person: str | None = None, place: str | None = None) -> Counts:
        """Delete what an agent holds — of a person (their facts, and every exchange they
        asked, with its answer), of a conversation, or (neither given) all of it — so that
        the words are gone from the database's files, not just unlinked."""
        ...

    def expire(self, agent: str, before: float) -> Counts:
        """Delete an agent's turns and facts older than ``before`` (Unix time)."""
        ...

    def places(self, agent: str) -> list[PlaceSummary]:
        """An agent's stored conversations, most recent first."""
        ...

    def persons(self, agent: str, person: str | None = None) -> list[PersonSummary]:
        """The people an agent holds turns or facts of (or just ``person``), most recent
        first."""
        ...

    def agents(self) -> list[str]:
        """Every agent with anything stored."""
        ...

    def export_turns(
        self, agent: str, *, person: str | None = None, place: str | None = None
    ) -> Iterator[StoredTurn]:
        """Every turn of an agent (of a person's exchanges, or of one conversation), in
        conversation and exchange order, read in pages."""
        ...

    def counts(self) -> dict[str, int]:
        """Rows per kind: ``turns``, ``facts``, ``conversations``, ``vectors``."""
        ...

    def forget_epoch(self) -> int:
        """A number that grows whenever anything is forgotten, by any process: a running
        instance drops what it holds in memory when it changes."""
        ...

    def discard(self) -> str | None:
        """Close, and move a damaged database aside (never deleting it) so that a fresh one
        can be opened in its place; where it went, or None where that cannot be done (a
        server's database is the server's business)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
