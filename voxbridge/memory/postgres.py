"""Memory in PostgreSQL: one database for every replica of a sharded fleet (``--store
postgresql://…``), so an agent moved to another replica finds its conversations there.

psycopg 3's blocking API from worker threads, through psycopg_pool (it reconnects by itself
when the server comes back). Tables live in their own schema, ``voxbridge``, so a database
shared with other applications stays tidy. Full-text recall uses a generated ``tsvector``
column with a GIN index; vector recall uses pgvector where the extension is installed (the
``vector`` type, cosine distance ``<=>``), and full-text otherwise.

Forgetting deletes the rows, then VACUUMs, so the space is reused; PostgreSQL does not
overwrite freed bytes at once (``VACUUM FULL`` rewrites a table, for erasure on demand).

The SQL both databases share is in :mod:`.sql` (its ``?`` placeholders become ``%s`` here);
here is what only PostgreSQL says: the schema, ``tsvector`` search, pgvector.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from .backend import StoreFault, Vector
from .records import Fact
from .sql import Result, Run, SQLBackend

__all__ = ["PostgresBackend", "shown_url"]

T = TypeVar("T")

_SCHEMA = "voxbridge"
_LOCK = 0x766F78  # an advisory lock: replicas starting together migrate one at a time

_V1 = """
CREATE TABLE turns (
    agent TEXT NOT NULL,
    place TEXT NOT NULL,
    exchange BIGINT NOT NULL,
    part SMALLINT NOT NULL CHECK (part IN (0, 1)),
    text TEXT NOT NULL,
    person TEXT,
    name TEXT,
    cut BOOLEAN NOT NULL DEFAULT false,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (agent, place, exchange, part)
);
CREATE INDEX turns_by_person ON turns (agent, person) WHERE person IS NOT NULL;
CREATE INDEX turns_by_age ON turns (agent, at);
CREATE TABLE facts (
    id BIGSERIAL PRIMARY KEY,
    agent TEXT NOT NULL,
    person TEXT NOT NULL,
    text TEXT NOT NULL,
    norm TEXT NOT NULL,
    owner TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    words TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    UNIQUE (agent, person, norm)
);
CREATE INDEX facts_by_age ON facts (agent, at);
CREATE INDEX facts_words ON facts USING GIN (words);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta VALUES ('forget_epoch', 0);
"""

MIGRATIONS: tuple[str, ...] = (_V1,)
"""Schema versions in order; ``voxbridge.schema_version`` says how many a database has had."""

_VECTORS = """
CREATE TABLE IF NOT EXISTS fact_vectors (
    fact BIGINT PRIMARY KEY REFERENCES facts (id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    dims INTEGER NOT NULL,
    vector vector NOT NULL
)
"""


def shown_url(url: str) -> str:
    """A PostgreSQL URL as it may be shown: no password, no options (keys hide there)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:
        return "postgresql://(a URL that does not parse)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


@functools.lru_cache(maxsize=512)
def _pg(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s``."""
    return sql.replace("?", "%s")


def _vector_text(vector: Vector) -> str:
    values = np.frombuffer(vector.data, dtype="<f4")
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


class PostgresBackend(SQLBackend):
    """Memory in a PostgreSQL database (see the module's docstring)."""

    kind = "postgresql"

    def __init__(self, url: str, *, connections: int = 4, connect_timeout: float = 5.0) -> None:
        """Connect and migrate.

        Raises:
            StoreFault: the server cannot be reached (``unreachable``) or the schema not made.
        """
        import psycopg
        import psycopg_pool

        self._psycopg = psycopg
        self.where = shown_url(url)
        self._timeout = connect_timeout

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(f"SET search_path = {_SCHEMA}, public")

        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=connections,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(connect_timeout))},
            configure=configure,
            open=False,
            name="voxbridge-memory",
        )
        self._pool.open(wait=False)
        self._vectors = False
        try:
            self._connected(self._migrate, transaction=True)
        except StoreFault:
            self.close()
            raise

    # --- connections ---------------------------------------------------------------------------

    def _fault(self, exc: Exception) -> StoreFault:
        import psycopg_pool

        errors = self._psycopg.errors
        if isinstance(exc, psycopg_pool.PoolTimeout | self._psycopg.OperationalError):
            return StoreFault("unreachable", f"{self.where}: cannot reach the database")
        if isinstance(exc, errors.DiskFull):
            return StoreFault("full", f"{self.where}: the server's disk is full")
        if isinstance(exc, errors.ReadOnlySqlTransaction | errors.InsufficientPrivilege):
            return StoreFault("readonly", f"{self.where}: cannot write ({exc.sqlstate})")
        return StoreFault("other", f"{self.where}: {type(exc).__name__}: {exc}")

    def _connected(self, fn: Callable[[Any], T], *, transaction: bool) -> T:
        import psycopg_pool

        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                if not transaction:
                    return fn(conn)
                with conn.transaction():
                    return fn(conn)
        except (self._psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self._fault(exc) from None

    @staticmethod
    def _runner(conn: Any) -> Run:
        def run(sql: str, args: Sequence[Any]) -> Result:
            cursor = conn.execute(_pg(sql), args)
            rows = cursor.fetchall() if cursor.description is not None else []
            return Result(rows, max(0, cursor.rowcount))

        return run

    def _transaction(self, work: Callable[[Run], T]) -> T:
        return self._connected(lambda conn: work(self._runner(conn)), transaction=True)

    def _single(self, sql: str, args: Sequence[Any]) -> None:
        self._connected(lambda conn: conn.execute(_pg(sql), args), transaction=False)

    def _query(self, sql: str, args: Sequence[Any]) -> list[Any]:
        rows: list[Any] = self._connected(
            lambda conn: conn.execute(_pg(sql), args).fetchall(), transaction=False
        )
        return rows

    def _migrate(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_SCHEMA}")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (0)")

        def apply(number: int, script: str) -> None:
            conn.execute(script)
            conn.execute("UPDATE schema_version SET version = %s", (number,))

        self._upgrade(version, MIGRATIONS, apply)
        available = conn.execute(
            "SELECT installed_version IS NOT NULL FROM pg_available_extensions "
            "WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            return
        if not available[0]:
            try:
                with conn.transaction():  # a savepoint: a refusal must not end the migration
                    conn.execute(f"CREATE EXTENSION IF NOT EXISTS vector SCHEMA {_SCHEMA}")
            except self._psycopg.Error:
                return  # installed but not ours to enable (not a superuser): full-text
        conn.execute(_VECTORS)
        self._vectors = True

    @property
    def vectors(self) -> bool:
        return self._vectors

    # --- vectors -------------------------------------------------------------------------------

    def _add_vector(self, run: Run, fact_id: int, vector: Vector) -> None:
        if not self._vectors:
            return
        run(
            "INSERT INTO fact_vectors (fact, model, dims, vector) "
            "SELECT id, ?, ?, ?::vector FROM facts WHERE id = ? "
            "ON CONFLICT (fact) DO UPDATE SET model = excluded.model, dims = excluded.dims, "
            "vector = excluded.vector",
            (vector.model, vector.dims, _vector_text(vector), fact_id),
        )

    # --- recall --------------------------------------------------------------------------------

    def recall_text(self, agent: str, person: str, words: Sequence[str], limit: int) -> list[Fact]:
        if not words:
            return []
        return self._facts(
            "SELECT id, text, at FROM facts, websearch_to_tsquery('english', ?) AS q "
            "WHERE agent = ? AND person = ? AND words @@ q "
            "ORDER BY ts_rank(words, q) DESC, id DESC LIMIT ?",
            (" or ".join(words), agent, person, limit),
            agent,
            person,
        )

    def recall_vector(self, agent: str, person: str, vector: Vector, limit: int) -> list[Fact]:
        if not self._vectors:
            return []
        return self._facts(
            "SELECT f.id, f.text, f.at FROM fact_vectors v JOIN facts f ON f.id = v.fact "
            "WHERE f.agent = ? AND f.person = ? AND v.model = ? "
            "ORDER BY v.vector <=> ?::vector LIMIT ?",
            (agent, person, vector.model, _vector_text(vector), limit),
            agent,
            person,
        )

    # --- forgetting ----------------------------------------------------------------------------

    def _forgotten(self) -> None:
        tables = "turns, facts" + (", fact_vectors" if self._vectors else "")
        self._connected(lambda conn: conn.execute(f"VACUUM {tables}"), transaction=False)

    # --- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pool.close(timeout=1.0)

    def discard(self) -> str | None:
        return None
