"""The embedded store: one SQLite database, ``memory.db`` in the state directory.

Why APSW rather than the standard ``sqlite3``: it brings its own recent SQLite (FTS5 with
``secure-delete``, row values, ``RETURNING``), the same on every machine, and it can load
extensions — the Python on these machines builds ``sqlite3`` without ``enable_load_extension``,
so sqlite-vec (vector recall) could not be loaded through it.

The settings, and why:

- ``journal_mode=WAL``: readers (a conversation loading) never wait for the writer.
- ``synchronous=NORMAL``: in WAL mode a commit is in the WAL file when COMMIT returns, so it
  survives the process being killed (SIGKILL); only an OS crash or a power cut can lose the
  last transactions. FULL would fsync every turn: milliseconds each, for a risk the process
  does not run.
- ``secure_delete=ON`` and FTS5's ``secure-delete``: forgotten words are overwritten, not just
  unlinked; forgetting ends with a WAL checkpoint, so no copy stays in the ``-wal`` file.
- ``busy_timeout``: ``voxbridge memory`` and ``voxbridge chat`` may write the file while a
  running instance does.

Vectors: each embedding is kept whole (float32) beside its fact, and its signs — one bit a
dimension — in a sqlite-vec ``vec0`` table per width, partitioned by agent, person and model.
Recall finds candidates by Hamming distance over the bits (~0.4 ms for 10,000 vectors of 768
dimensions, where the float scan takes ~10 ms) and orders them by the exact cosine distance.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apsw
import numpy as np

from .backend import AddFact, AddTurn, AddVector, StoreFault, Vector, Write
from .records import Counts, Fact, PersonSummary, PlaceSummary, StoredTurn, normalized

__all__ = ["SQLiteBackend", "move_aside"]

_BUSY_MS = 5000
_PAGE = 1000  # rows per page of an export
_CHUNK = 5000  # rows per transaction of an expiry

_V1 = """
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    place TEXT NOT NULL,
    UNIQUE (agent, place)
);
CREATE TABLE turns (
    conversation INTEGER NOT NULL REFERENCES conversations (id),
    exchange INTEGER NOT NULL,
    part INTEGER NOT NULL CHECK (part IN (0, 1)),
    text TEXT NOT NULL,
    person TEXT,
    name TEXT,
    cut INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL,
    PRIMARY KEY (conversation, exchange, part)
) WITHOUT ROWID;
CREATE INDEX turns_by_person ON turns (person) WHERE person IS NOT NULL;
CREATE INDEX turns_by_age ON turns (at);
CREATE TABLE facts (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    person TEXT NOT NULL,
    text TEXT NOT NULL,
    norm TEXT NOT NULL,
    at REAL NOT NULL,
    UNIQUE (agent, person, norm)
);
CREATE INDEX facts_by_age ON facts (at);
CREATE VIRTUAL TABLE facts_text USING fts5 (
    text, content = 'facts', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO facts_text (facts_text, rank) VALUES ('secure-delete', 1);
CREATE TRIGGER facts_text_add AFTER INSERT ON facts BEGIN
    INSERT INTO facts_text (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER facts_text_gone AFTER DELETE ON facts BEGIN
    INSERT INTO facts_text (facts_text, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TABLE fact_vectors (
    fact INTEGER PRIMARY KEY REFERENCES facts (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    dims INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('forget_epoch', 0);
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
"""Schema versions in order; ``PRAGMA user_version`` says how many a file has had."""


def _fault(exc: apsw.Error, where: str) -> StoreFault:
    if isinstance(exc, apsw.FullError):
        return StoreFault("full", f"{where}: the disk is full ({exc})")
    if isinstance(exc, apsw.ReadOnlyError | apsw.CantOpenError | apsw.PermissionsError):
        return StoreFault("readonly", f"{where}: cannot write ({exc})")
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return StoreFault("corrupt", f"{where}: the database is damaged ({exc})")
    return StoreFault("other", f"{where}: {type(exc).__name__}: {exc}")


def _bits(vector: Vector) -> tuple[int, bytes]:
    """The width of the bit index for ``vector``, and its signs packed one bit a dimension."""
    values = np.frombuffer(vector.data, dtype="<f4")
    return -(-vector.dims // 8) * 8, np.packbits(values > 0).tobytes()


def _owner(agent: str, person: str, model: str) -> str:
    return f"{agent}\x1f{person}\x1f{model}"


class SQLiteBackend:
    """Memory in one SQLite file (see the module's docstring for the settings)."""

    kind = "sqlite"

    def __init__(self, path: Path, *, readers: int = 2) -> None:
        """Open (creating, readable by its owner only) and migrate the database at ``path``.

        Raises:
            StoreFault: it cannot be opened or written (``corrupt``: it is not a database, or
                a damaged one).
        """
        self.path = path
        self.where = str(path)
        self._vec_path: str | None = None
        try:
            import sqlite_vec

            self._vec_path = sqlite_vec.loadable_path()
        except ImportError:  # pragma: no cover - a dependency; recall falls back to full-text
            self._vec_path = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                # Personal data: the owner's alone. SQLite gives -wal and -shm the same mode.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreFault("readonly", f"{path}: {exc.strerror or exc}") from None
        self._conns: list[apsw.Connection] = []
        try:
            self._w = self._connect()
            self._migrate()
            self._readers: queue.SimpleQueue[apsw.Connection] = queue.SimpleQueue()
            for _ in range(readers):
                self._readers.put(self._connect())
        except apsw.Error as exc:
            self.close()
            raise _fault(exc, self.where) from None
        self._widths: set[int] = {
            int(name.removeprefix("fact_index_"))
            for (name,) in self._w.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB "
                "'fact_index_[0-9]*' AND name NOT GLOB 'fact_index_*_*'"
            )
        }

    # --- connections ---------------------------------------------------------------------------

    def _connect(self) -> apsw.Connection:
        conn = apsw.Connection(str(self.path))
        self._conns.append(conn)
        conn.set_busy_timeout(_BUSY_MS)
        if self._vec_path is not None:
            try:
                conn.enable_load_extension(True)
                conn.load_extension(self._vec_path)
                conn.enable_load_extension(False)
            except apsw.Error:  # pragma: no cover - a platform without the extension
                self._vec_path = None
        conn.execute("PRAGMA user_version").fetchall()  # a file that is not a database fails here
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _migrate(self) -> None:
        with self._transaction():
            (version,) = self._w.execute("PRAGMA user_version").fetchone() or (0,)
            if version > len(MIGRATIONS):
                raise StoreFault(
                    "other",
                    f"{self.where} was written by a newer voxbridge (schema {version}; this one "
                    f"knows {len(MIGRATIONS)}): upgrade voxbridge",
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self._w.execute(script)
                self._w.execute(f"PRAGMA user_version = {number}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE: take the write lock first, so two writing processes wait in line (the busy
        # timeout) instead of failing when a reader turns writer.
        self._w.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if not self._w.getautocommit():
                self._w.execute("ROLLBACK")
            raise
        self._w.execute("COMMIT")

    @contextlib.contextmanager
    def _reader(self) -> Iterator[apsw.Connection]:
        conn = self._readers.get()
        try:
            yield conn
        finally:
            self._readers.put(conn)

    def _read(self, fn: Callable[[apsw.Connection], Any]) -> Any:
        try:
            with self._reader() as conn:
                return fn(conn)
        except apsw.Error as exc:
            raise _fault(exc, self.where) from None

    def _change(self, fn: Callable[[], Any]) -> Any:
        try:
            with self._transaction():
                return fn()
        except apsw.Error as exc:
            raise _fault(exc, self.where) from None

    @property
    def vectors(self) -> bool:
        return self._vec_path is not None

    # --- writing -------------------------------------------------------------------------------

    def write(self, batch: Sequence[Write]) -> None:
        def apply() -> None:
            ids: dict[tuple[str, str], int] = {}
            for op in batch:
                if isinstance(op, AddTurn):
                    self._add_turn(op.turn, ids)
                elif isinstance(op, AddFact):
                    self._add_fact(op.fact, op.vector)
                elif isinstance(op, AddVector):
                    self._add_vector(op.fact_id, op.vector)

        self._change(apply)

    def _conversation(self, agent: str, place: str, ids: dict[tuple[str, str], int]) -> int:
        found = ids.get((agent, place))
        if found is None:
            # Looked up in the transaction, never cached across: another process may have
            # forgotten the conversation (and its row) since the last batch.
            key = (agent, place)
            row = (
                self._w.execute(
                    "SELECT id FROM conversations WHERE agent = ? AND place = ?", key
                ).fetchone()
                or self._w.execute(
                    "INSERT INTO conversations (agent, place) VALUES (?, ?) RETURNING id", key
                ).fetchone()
            )
            assert row is not None
            found = ids[agent, place] = int(row[0])
        return found

    def _add_turn(self, turn: StoredTurn, ids: dict[tuple[str, str], int]) -> None:
        self._w.execute(
            "INSERT INTO turns (conversation, exchange, part, text, person, name, cut, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                self._conversation(turn.agent, turn.place, ids),
                turn.exchange,
                turn.part,
                turn.text,
                turn.person,
                turn.name,
                int(turn.cut),
                turn.at,
            ),
        )

    def _add_fact(self, fact: Fact, vector: Vector | None) -> None:
        row = self._w.execute(
            "INSERT INTO facts (agent, person, text, norm, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING id",
            (fact.agent, fact.person, fact.text, normalized(fact.text), fact.at),
        ).fetchone()
        if row is not None and vector is not None:
            self._add_vector(int(row[0]), vector)

    def _add_vector(self, fact_id: int, vector: Vector) -> None:
        if self._vec_path is None:
            return
        owner = self._w.execute(
            "SELECT agent, person FROM facts WHERE id = ?", (fact_id,)
        ).fetchone()
        if owner is None:
            return  # forgotten in the meantime
        width, bits = _bits(vector)
        self._index(width)
        self._w.execute(f"DELETE FROM fact_index_{width} WHERE rowid = ?", (fact_id,))
        self._w.execute(
            "INSERT OR REPLACE INTO fact_vectors (fact, model, dims, vector) VALUES (?, ?, ?, ?)",
            (fact_id, vector.model, vector.dims, vector.data),
        )
        self._w.execute(
            f"INSERT INTO fact_index_{width} (rowid, owner, bits) VALUES (?, ?, vec_bit(?))",
            (fact_id, _owner(owner[0], owner[1], vector.model), bits),
        )

    def _index(self, width: int) -> None:
        """The bit index for vectors of ``width`` bits, made on first use (models differ)."""
        if width in self._widths:
            return
        self._w.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS fact_index_{width} USING vec0 ("
            f"owner TEXT PARTITION KEY, bits bit[{width}])"
        )
        # sqlite-vec zeroes a deleted vector's bits in its chunk: nothing of it stays.
        self._w.execute(
            f"CREATE TRIGGER IF NOT EXISTS fact_index_{width}_gone AFTER DELETE ON fact_vectors "
            f"WHEN (old.dims + 7) / 8 * 8 = {width} BEGIN "
            f"DELETE FROM fact_index_{width} WHERE rowid = old.fact; END"
        )
        self._widths.add(width)

    # --- reading -------------------------------------------------------------------------------

    def recent_turns(self, agent: str, place: str, limit: int) -> list[StoredTurn]:
        def read(conn: apsw.Connection) -> list[StoredTurn]:
            rows = conn.execute(
                "SELECT exchange, part, text, person, name, cut, at FROM turns "
                "WHERE conversation = (SELECT id FROM conversations WHERE agent = ? AND place = ?)"
                " ORDER BY exchange DESC, part DESC LIMIT ?",
                (agent, place, limit),
            ).fetchall()
            return [
                StoredTurn(agent, place, r[0], r[1], r[2], r[6], r[3], r[4], bool(r[5]))
                for r in reversed(rows)
            ]

        result: list[StoredTurn] = self._read(read)
        return result

    def facts(self, agent: str, person: str, limit: int | None = None) -> list[Fact]:
        return self._facts(
            "SELECT id, text, at FROM facts WHERE agent = ? AND person = ? "
            "ORDER BY at DESC, id DESC LIMIT ?",
            (agent, person, -1 if limit is None else limit),
            agent,
            person,
        )

    def _facts(self, sql: str, args: tuple[Any, ...], agent: str, person: str) -> list[Fact]:
        rows = self._read(lambda conn: conn.execute(sql, args).fetchall())
        return [Fact(agent, person, r[1], r[2], r[0]) for r in rows]

    def recall_text(self, agent: str, person: str, words: Sequence[str], limit: int) -> list[Fact]:
        if not words:
            return []
        query = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
        return self._facts(
            "SELECT f.id, f.text, f.at FROM facts_text JOIN facts f ON f.id = facts_text.rowid "
            "WHERE facts_text MATCH ? AND f.agent = ? AND f.person = ? "
            "ORDER BY facts_text.rank LIMIT ?",
            (query, agent, person, limit),
            agent,
            person,
        )

    def recall_vector(self, agent: str, person: str, vector: Vector, limit: int) -> list[Fact]:
        width, bits = _bits(vector)
        if self._vec_path is None or width not in self._widths:
            return []
        return self._facts(
            f"WITH near AS (SELECT rowid FROM fact_index_{width} "
            "WHERE bits MATCH vec_bit(?) AND owner = ? AND k = ?) "
            "SELECT f.id, f.text, f.at FROM near JOIN fact_vectors v ON v.fact = near.rowid "
            "JOIN facts f ON f.id = v.fact "
            "ORDER BY vec_distance_cosine(v.vector, ?) LIMIT ?",
            # Candidates by the bits, then the exact distance: enough that the nearest by
            # cosine are among them (quantization reorders neighbours, not strangers).
            (bits, _owner(agent, person, vector.model), max(100, 20 * limit), vector.data, limit),
            agent,
            person,
        )

    def unembedded(self, agent: str, model: str, limit: int) -> list[Fact]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT f.id, f.person, f.text, f.at FROM facts f "
                "LEFT JOIN fact_vectors v ON v.fact = f.id AND v.model = ? "
                "WHERE f.agent = ? AND v.fact IS NULL ORDER BY f.id LIMIT ?",
                (model, agent, limit),
            ).fetchall()
        )
        return [Fact(agent, r[1], r[2], r[3], r[0]) for r in rows]

    def places(self, agent: str) -> list[PlaceSummary]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT c.place, COUNT(*), MAX(t.at) FROM conversations c "
                "JOIN turns t ON t.conversation = c.id WHERE c.agent = ? "
                "GROUP BY c.id ORDER BY MAX(t.at) DESC",
                (agent,),
            ).fetchall()
        )
        return [PlaceSummary(r[0], r[1], r[2]) for r in rows]

    def persons(self, agent: str, person: str | None = None) -> list[PersonSummary]:
        only = " AND t.person = ?" if person else ""
        only_facts = " AND person = ?" if person else ""
        args = (agent, person, agent, person) if person else (agent, agent)
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT person, MAX(name), SUM(facts), SUM(turns), MAX(last) FROM ("
                " SELECT t.person, t.name, 0 AS facts, COUNT(*) AS turns, MAX(t.at) AS last"
                " FROM turns t JOIN conversations c ON c.id = t.conversation"
                f" WHERE c.agent = ? AND t.person IS NOT NULL{only} GROUP BY t.person"
                " UNION ALL"
                f" SELECT person, NULL, COUNT(*), 0, MAX(at) FROM facts WHERE agent = ?{only_facts}"
                " GROUP BY person"
                ") GROUP BY person ORDER BY MAX(last) DESC",
                args,
            ).fetchall()
        )
        return [PersonSummary(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def agents(self) -> list[str]:
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT agent FROM conversations UNION SELECT agent FROM facts ORDER BY 1"
            ).fetchall()
        )
        return [r[0] for r in rows]

    def export_turns(
        self, agent: str, *, person: str | None = None, place: str | None = None
    ) -> Iterator[StoredTurn]:
        where, args = ["c.agent = ?"], [agent]
        if place is not None:
            where.append("c.place = ?")
            args.append(place)
        if person is not None:
            where.append(
                "(t.conversation, t.exchange) IN "
                "(SELECT conversation, exchange FROM turns WHERE person = ?)"
            )
            args.append(person)
        sql = (
            "SELECT c.place, t.exchange, t.part, t.text, t.person, t.name, t.cut, t.at "
            "FROM turns t JOIN conversations c ON c.id = t.conversation "
            f"WHERE {' AND '.join(where)} AND (c.place, t.exchange, t.part) > (?, ?, ?) "
            "ORDER BY c.place, t.exchange, t.part LIMIT ?"
        )
        after: tuple[str, int, int] = ("", -1, -1)
        while True:
            page = (*args, *after, _PAGE)
            rows: list[Any] = self._read(lambda conn: conn.execute(sql, page).fetchall())  # noqa: B023
            for r in rows:
                yield StoredTurn(agent, r[0], r[1], r[2], r[3], r[7], r[4], r[5], bool(r[6]))
            if len(rows) < _PAGE:
                return
            after = (rows[-1][0], rows[-1][1], rows[-1][2])

    def counts(self) -> dict[str, int]:
        def read(conn: apsw.Connection) -> dict[str, Any]:
            return {
                kind: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchall()[0][0]
                for kind, table in (
                    ("turns", "turns"),
                    ("facts", "facts"),
                    ("conversations", "conversations"),
                    ("vectors", "fact_vectors"),
                )
            }

        result: dict[str, int] = self._read(read)
        return result

    def forget_epoch(self) -> int:
        row = self._read(
            lambda conn: conn.execute(
                "SELECT value FROM meta WHERE key = 'forget_epoch'"
            ).fetchone()
        )
        return int(row[0]) if row else 0

    # --- deleting ------------------------------------------------------------------------------

    def forget(self, agent: str, *, person: str | None = None, place: str | None = None) -> Counts:
        def delete() -> Counts:
            scope = "conversation IN (SELECT id FROM conversations WHERE agent = ?)"
            args: list[Any] = [agent]
            if place is not None:
                scope = (
                    "conversation IN (SELECT id FROM conversations WHERE agent = ? AND place = ?)"
                )
                args.append(place)
            if person is not None:
                scope = (
                    f"(conversation, exchange) IN (SELECT conversation, exchange FROM turns "
                    f"WHERE person = ? AND {scope})"
                )
                args.insert(0, person)
            self._w.execute(f"DELETE FROM turns WHERE {scope}", args)
            turns = self._w.changes()
            facts = 0
            if place is None:
                if person is None:
                    self._w.execute("DELETE FROM facts WHERE agent = ?", (agent,))
                else:
                    self._w.execute(
                        "DELETE FROM facts WHERE agent = ? AND person = ?", (agent, person)
                    )
                facts = self._w.changes()
            self._w.execute(
                "DELETE FROM conversations WHERE agent = ? AND NOT EXISTS "
                "(SELECT 1 FROM turns WHERE conversation = conversations.id)",
                (agent,),
            )
            self._w.execute("UPDATE meta SET value = value + 1 WHERE key = 'forget_epoch'")
            return Counts(turns, facts)

        counts: Counts = self._change(delete)
        self._checkpoint()
        return counts

    def _checkpoint(self) -> None:
        """Write the WAL into the database and empty it: deleted words must not stay in the
        ``-wal`` file's older copies of the pages."""
        try:
            self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except apsw.Error as exc:
            raise _fault(exc, self.where) from None

    def expire(self, agent: str, before: float) -> Counts:
        def delete() -> Counts:
            self._w.execute(
                "DELETE FROM turns WHERE (conversation, exchange, part) IN ("
                " SELECT conversation, exchange, part FROM turns WHERE at < ? AND conversation"
                " IN (SELECT id FROM conversations WHERE agent = ?) LIMIT ?)",
                (before, agent, _CHUNK),
            )
            turns = self._w.changes()
            self._w.execute(
                "DELETE FROM facts WHERE id IN "
                "(SELECT id FROM facts WHERE agent = ? AND at < ? LIMIT ?)",
                (agent, before, _CHUNK),
            )
            return Counts(turns, self._w.changes())

        counts: Counts = self._change(delete)
        if counts.turns or counts.facts:
            self._checkpoint()
        return counts

    # --- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(apsw.Error):
                conn.close()
        self._conns.clear()

    def discard(self) -> str | None:
        self.close()
        return str(move_aside(self.path))


def move_aside(path: Path) -> Path:
    """Rename a damaged database (with its ``-wal`` and ``-shm``) to ``<name>.corrupt-<time>``
    beside it — never deleting it: what it held may still be read out of it. Its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(f"{aside}{suffix}")
    return aside
