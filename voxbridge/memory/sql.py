"""What both databases are told the same way: turns, facts, forgetting, listing, exporting.

:class:`SQLBackend` implements the :class:`~.backend.Backend` contract once, in SQL that SQLite
and PostgreSQL both speak (``?`` placeholders; the PostgreSQL room turns them into ``%s``), over a
small seam each room fills in: how to read, how to run a transaction, and what only it knows —
the schema, full-text and vector recall, finishing a forget.

Turns are keyed by agent, place, exchange and part. A batch of turns — most writes — is one
``INSERT`` of many rows, so the writer thread hands the database one statement and takes the GIL
back once, not once per row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .backend import AddFact, AddTurn, AddVector, StoreFault, Vector, Write
from .records import Counts, Fact, PersonSummary, PlaceSummary, StoredTurn, normalized

__all__ = ["Result", "Run", "SQLBackend", "owner_word"]

T = TypeVar("T")

PAGE = 1000  # rows per page of an export
CHUNK = 5000  # rows per transaction of an expiry
_TURN_COLUMNS = "agent, place, exchange, part, text, person, name, cut, at"
_TURN_ROW = "(" + ", ".join("?" * 9) + ")"


@dataclass(frozen=True, slots=True)
class Result:
    """What a statement gave: its rows, and how many rows it changed."""

    rows: list[Any]
    changed: int


Run = Callable[[str, Sequence[Any]], Result]
"""Runs one statement on the writer's connection, inside the transaction."""


def _turn(agent: str, row: Sequence[Any], place: str | None = None) -> StoredTurn:
    """A turn from ``exchange, part, text, person, name, cut, at`` (after ``place``, if not
    given)."""
    if place is None:
        place, row = row[0], row[1:]
    return StoredTurn(agent, place, row[0], row[1], row[2], row[6], row[3], row[4], bool(row[5]))


class SQLBackend(ABC):
    """The shared part of both rooms (see the module)."""

    kind: str
    where: str

    # --- the seam ------------------------------------------------------------------------------

    @abstractmethod
    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """Rows of a read (any reader connection)."""

    @abstractmethod
    def _transaction(self, work: Callable[[Run], T]) -> T:
        """Run ``work`` in one transaction on the writer's connection."""

    @abstractmethod
    def _single(self, sql: str, args: Sequence[Any]) -> None:
        """Run one statement on the writer's connection as a transaction of its own."""

    @abstractmethod
    def _add_vector(self, run: Run, fact_id: int, vector: Vector) -> None:
        """Store a fact's embedding (nothing where vectors are not supported)."""

    @abstractmethod
    def _forgotten(self) -> None:
        """After deleting: make the deleted words leave the database's files."""

    def _upgrade(
        self, version: int, migrations: Sequence[str], apply: Callable[[int, str], None]
    ) -> None:
        """Apply the ``migrations`` a database at ``version`` has not had (``apply(number,
        script)``, in the caller's transaction).

        Raises:
            StoreFault: the database is newer than this voxbridge.
        """
        if version > len(migrations):
            raise StoreFault(
                "other",
                f"{self.where} was written by a newer voxbridge (schema {version}; this one "
                f"knows {len(migrations)}): upgrade voxbridge",
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            apply(number, script)

    def _scope(
        self, agent: str, person: str | None, place: str | None
    ) -> tuple[list[str], list[Any]]:
        """The conditions (and their values) that pick an agent's turns: of a conversation, of
        the exchanges a person asked, or all."""
        where, args = ["agent = ?"], [agent]
        if place is not None:
            where.append("place = ?")
            args.append(place)
        if person is not None:
            where.append(
                "(place, exchange) IN "
                "(SELECT place, exchange FROM turns WHERE agent = ? AND person = ?)"
            )
            args += (agent, person)
        return where, args

    # --- writing -------------------------------------------------------------------------------

    def write(self, batch: Sequence[Write]) -> None:
        turns = [op.turn for op in batch if isinstance(op, AddTurn)]
        if len(turns) == len(batch):  # the usual batch: one statement, its own transaction
            if turns:
                self._single(*self._insert_turns(turns))
            return

        def apply(run: Run) -> None:
            if turns:
                run(*self._insert_turns(turns))
            for op in batch:
                if isinstance(op, AddFact):
                    self._add_fact(run, op.fact, op.vector)
                elif isinstance(op, AddVector):
                    self._add_vector(run, op.fact_id, op.vector)

        self._transaction(apply)

    @staticmethod
    def _insert_turns(turns: Sequence[StoredTurn]) -> tuple[str, list[Any]]:
        sql = (
            f"INSERT INTO turns ({_TURN_COLUMNS}) VALUES "
            + ", ".join([_TURN_ROW] * len(turns))
            + " ON CONFLICT DO NOTHING"
        )
        args: list[Any] = []
        for t in turns:
            args += (t.agent, t.place, t.exchange, t.part, t.text, t.person, t.name, t.cut, t.at)
        return sql, args

    def _add_fact(self, run: Run, fact: Fact, vector: Vector | None) -> None:
        found = run(
            "INSERT INTO facts (agent, person, text, norm, owner, at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING id",
            (
                fact.agent,
                fact.person,
                fact.text,
                normalized(fact.text),
                owner_word(fact.agent, fact.person),
                fact.at,
            ),
        ).rows
        if found and vector is not None:
            self._add_vector(run, int(found[0][0]), vector)

    # --- reading -------------------------------------------------------------------------------

    def recent_turns(self, agent: str, place: str, limit: int) -> list[StoredTurn]:
        rows = self._query(
            "SELECT exchange, part, text, person, name, cut, at FROM turns "
            "WHERE agent = ? AND place = ? ORDER BY exchange DESC, part DESC LIMIT ?",
            (agent, place, limit),
        )
        return [_turn(agent, r, place) for r in reversed(rows)]

    def _facts(self, sql: str, args: Sequence[Any], agent: str, person: str) -> list[Fact]:
        """Facts of a person from rows of ``id, text, at``."""
        return [Fact(agent, person, r[1], r[2], r[0]) for r in self._query(sql, args)]

    def facts(self, agent: str, person: str, limit: int | None = None) -> list[Fact]:
        sql = (
            "SELECT id, text, at FROM facts WHERE agent = ? AND person = ? "
            "ORDER BY at DESC, id DESC"
        )
        if limit is None:
            return self._facts(sql, (agent, person), agent, person)
        return self._facts(sql + " LIMIT ?", (agent, person, limit), agent, person)

    def unembedded(self, agent: str, model: str, limit: int) -> list[Fact]:
        if not self.vectors:
            return []
        rows = self._query(
            "SELECT f.id, f.person, f.text, f.at FROM facts f "
            "LEFT JOIN fact_vectors v ON v.fact = f.id AND v.model = ? "
            "WHERE f.agent = ? AND v.fact IS NULL ORDER BY f.id LIMIT ?",
            (model, agent, limit),
        )
        return [Fact(agent, r[1], r[2], r[3], r[0]) for r in rows]

    def places(self, agent: str) -> list[PlaceSummary]:
        rows = self._query(
            "SELECT place, COUNT(*), MAX(at) FROM turns WHERE agent = ? "
            "GROUP BY place ORDER BY MAX(at) DESC",
            (agent,),
        )
        return [PlaceSummary(r[0], int(r[1]), r[2]) for r in rows]

    def persons(self, agent: str, person: str | None = None) -> list[PersonSummary]:
        only = " AND person = ?" if person else ""
        args = (agent, person, agent, person) if person else (agent, agent)
        rows = self._query(
            "SELECT person, MAX(name), SUM(facts), SUM(turns), MAX(last) FROM ("
            " SELECT person, name, 0 AS facts, COUNT(*) AS turns, MAX(at) AS last FROM turns"
            f" WHERE agent = ? AND person IS NOT NULL{only} GROUP BY person, name"
            " UNION ALL"
            f" SELECT person, NULL, COUNT(*), 0, MAX(at) FROM facts WHERE agent = ?{only}"
            " GROUP BY person"
            ") AS each GROUP BY person ORDER BY MAX(last) DESC",
            args,
        )
        return [PersonSummary(r[0], r[1], int(r[2]), int(r[3]), r[4]) for r in rows]

    def agents(self) -> list[str]:
        rows = self._query(
            "SELECT DISTINCT agent FROM turns UNION SELECT DISTINCT agent FROM facts ORDER BY 1",
            (),
        )
        return [r[0] for r in rows]

    def export_turns(
        self, agent: str, *, person: str | None = None, place: str | None = None
    ) -> Iterator[StoredTurn]:
        where, args = self._scope(agent, person, place)
        sql = (
            "SELECT place, exchange, part, text, person, name, cut, at FROM turns "
            f"WHERE {' AND '.join(where)} AND (place, exchange, part) > (?, ?, ?) "
            "ORDER BY place, exchange, part LIMIT ?"
        )
        after: tuple[str, int, int] = ("", -1, -1)
        while True:
            rows = self._query(sql, (*args, *after, PAGE))
            yield from (_turn(agent, r) for r in rows)
            if len(rows) < PAGE:
                return
            after = (rows[-1][0], rows[-1][1], rows[-1][2])

    def counts(self) -> dict[str, int]:
        tables = [("turns", "turns"), ("facts", "facts"), ("vectors", "fact_vectors")]
        if not self.vectors:
            tables.pop()
        sql = " UNION ALL ".join(
            f"SELECT '{kind}', COUNT(*) FROM {table}" for kind, table in tables
        )
        counts = {"vectors": 0} | {kind: int(n) for kind, n in self._query(sql, ())}
        counts["conversations"] = int(
            self._query("SELECT COUNT(*) FROM (SELECT DISTINCT agent, place FROM turns) AS c", ())[
                0
            ][0]
        )
        return counts

    def forget_epoch(self) -> int:
        rows = self._query("SELECT value FROM meta WHERE key = 'forget_epoch'", ())
        return int(rows[0][0]) if rows else 0

    @property
    @abstractmethod
    def vectors(self) -> bool: ...

    # --- deleting ------------------------------------------------------------------------------

    def forget(self, agent: str, *, person: str | None = None, place: str | None = None) -> Counts:
        def delete(run: Run) -> Counts:
            where, args = self._scope(agent, person, place)
            turns = run(f"DELETE FROM turns WHERE {' AND '.join(where)}", args).changed
            facts = 0
            if place is None:
                if person is None:
                    facts = run("DELETE FROM facts WHERE agent = ?", (agent,)).changed
                else:
                    facts = run(
                        "DELETE FROM facts WHERE agent = ? AND person = ?", (agent, person)
                    ).changed
            run("UPDATE meta SET value = value + 1 WHERE key = 'forget_epoch'", ())
            return Counts(turns, facts)

        counts = self._transaction(delete)
        self._forgotten()
        return counts

    def expire(self, agent: str, before: float) -> Counts:
        def delete(run: Run) -> Counts:
            turns = run(
                "DELETE FROM turns WHERE (agent, place, exchange, part) IN ("
                " SELECT agent, place, exchange, part FROM turns"
                " WHERE agent = ? AND at < ? LIMIT ?)",
                (agent, before, CHUNK),
            ).changed
            facts = run(
                "DELETE FROM facts WHERE id IN "
                "(SELECT id FROM facts WHERE agent = ? AND at < ? LIMIT ?)",
                (agent, before, CHUNK),
            ).changed
            return Counts(turns, facts)

        counts = self._transaction(delete)
        if counts.turns or counts.facts:
            self._forgotten()
        return counts


def owner_word(agent: str, person: str) -> str:
    """One word of letters and digits naming an agent's person: full-text search looks within
    their facts only (its cost is theirs, not the whole store's)."""
    import hashlib

    digest = hashlib.blake2b(f"{agent}\x1f{person}".encode(), digest_size=10).hexdigest()
    return f"o{digest}"
