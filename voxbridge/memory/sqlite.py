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

The SQL both databases share is in :mod:`.sql`; here is what only SQLite says: the schema, the
full-text index (FTS5), vectors (sqlite-vec), and how a forget empties the WAL.

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
from typing import Any, TypeVar

import apsw
import numpy as np

from .backend import StoreFault, Vector
from .records import Fact
from .sql import Result, Run, SQLBackend, owner_word

__all__ = ["SQLiteBackend", "move_aside"]

T = TypeVar("T")

_BUSY_MS = 5000

_V1 = """
CREATE TABLE turns (
    agent TEXT NOT NULL,
    place TEXT NOT NULL,
    exchange INTEGER NOT NULL,
    part INTEGER NOT NULL CHECK (part IN (0, 1)),
    text TEXT NOT NULL,
    person TEXT,
    name TEXT,
    cut INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL,
    PRIMARY KEY (agent, place, exchange, part)
) WITHOUT ROWID;
CREATE INDEX turns_by_person ON turns (agent, person) WHERE person IS NOT NULL;
CREATE INDEX turns_by_age ON turns (agent, at);
CREATE TABLE facts (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    person TEXT NOT NULL,
    text TEXT NOT NULL,
    norm TEXT NOT NULL,
    owner TEXT NOT NULL,
    at REAL NOT NULL,
    UNIQUE (agent, person, norm)
);
CREATE INDEX facts_by_age ON facts (agent, at);
CREATE VIRTUAL TABLE facts_text USING fts5 (
    text, owner, content = 'facts', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO facts_text (facts_text, rank) VALUES ('secure-delete', 1);
CREATE TRIGGER facts_text_add AFTER INSERT ON facts BEGIN
    INSERT INTO facts_text (rowid, text, owner) VALUES (new.id, new.text, new.owner);
END;
CREATE TRIGGER facts_text_gone AFTER DELETE ON facts BEGIN
    INSERT INTO facts_text (facts_text, rowid, text, owner)
        VALUES ('delete', old.id, old.text, old.owner);
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


def _partition(agent: str, person: str, model: str) -> str:
    return f"{agent}\x1f{person}\x1f{model}"


class SQLiteBackend(SQLBackend):
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
        def apply(number: int, script: str) -> None:
            self._w.execute(script)
            self._w.execute(f"PRAGMA user_version = {number}")

        def migrate(run: Run) -> None:
            (version,) = run("PRAGMA user_version", ()).rows[0]
            self._upgrade(version, MIGRATIONS, apply)

        self._transaction(migrate)

    def _run(self, sql: str, args: Sequence[Any]) -> Result:
        rows = self._w.execute(sql, args).fetchall()
        return Result(rows, self._w.changes())

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
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

    def _transaction(self, work: Callable[[Run], T]) -> T:
        try:
            with self._writing():
                return work(self._run)
        except apsw.Error as exc:
            raise _fault(exc, self.where) from None

    def _single(self, sql: str, args: Sequence[Any]) -> None:
        try:
            self._w.execute(sql, args)  # autocommit: the statement is its transaction
        except apsw.Error as exc:
            raise _fault(exc, self.where) from None

    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        conn = self._readers.get()
        try:
            rows: list[Any] = conn.execute(sql, args).fetchall()
            return rows
        except apsw.Error as exc:
            raise _fault(exc, self.where) from None
        finally:
            self._readers.put(conn)

    @property
    def vectors(self) -> bool:
        return self._vec_path is not None

    # --- vectors -------------------------------------------------------------------------------

    def _add_vector(self, run: Run, fact_id: int, vector: Vector) -> None:
        if self._vec_path is None:
            return
        owner = run("SELECT agent, person FROM facts WHERE id = ?", (fact_id,)).rows
        if not owner:
            return  # forgotten in the meantime
        width, bits = _bits(vector)
        self._index(width)
        run(f"DELETE FROM fact_index_{width} WHERE rowid = ?", (fact_id,))
        run(
            "INSERT OR REPLACE INTO fact_vectors (fact, model, dims, vector) VALUES (?, ?, ?, ?)",
            (fact_id, vector.model, vector.dims, vector.data),
        )
        run(
            f"INSERT INTO fact_index_{width} (rowid, owner, bits) VALUES (?, ?, vec_bit(?))",
            (fact_id, _partition(owner[0][0], owner[0][1], vector.model), bits),
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

    # --- recall --------------------------------------------------------------------------------

    def recall_text(self, agent: str, person: str, words: Sequence[str], limit: int) -> list[Fact]:
        if not words:
            return []
        wanted = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
        query = f'owner:"{owner_word(agent, person)}" AND text:({wanted})'
        return self._facts(
            "SELECT f.id, f.text, f.at FROM facts_text JOIN facts f ON f.id = facts_text.rowid "
            "WHERE facts_text MATCH ? AND f.agent = ? AND f.person = ? "
            "ORDER BY bm25(facts_text, 1.0, 0.0) LIMIT ?",
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
            (
                bits,
                _partition(agent, person, vector.model),
                max(100, 20 * limit),
                vector.data,
                limit,
            ),
            agent,
            person,
        )

    # --- forgetting ----------------------------------------------------------------------------

    def _forgotten(self) -> None:
        """Write the WAL into the database and empty it: deleted words must not stay in the
        ``-wal`` file's older copies of the pages."""
        try:
            self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except apsw.Error as exc:
            raise _fault(exc, self.where) from None

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
