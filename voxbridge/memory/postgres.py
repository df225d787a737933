"""Memory in PostgreSQL: one database for every replica of a sharded fleet (``--store
postgresql://…``), so an agent moved to another replica finds its conversations there.

psycopg 3's blocking API from worker threads, through psycopg_pool (it reconnects by itself
when the server comes back). Tables live in their own schema, ``voxbridge``, so a database
shared with other applications stays tidy. Full-text recall uses a generated ``tsvector``
column with a GIN index; vector recall uses pgvector where the extension is installed (the
``vector`` type, cosine distance ``<=>``), and full-text otherwise.

Forgetting deletes the rows, then VACUUMs, so the space is reused; PostgreSQL does not
overwrite freed bytes at once (``VACUUM FULL`` rewrites a table, for erasure on demand).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .backend import AddFact, AddTurn, AddVector, StoreFault, Vector, Write
from .records import Counts, Fact, PersonSummary, PlaceSummary, StoredTurn, normalized

__all__ = ["PostgresBackend", "shown_url"]

_SCHEMA = "voxbridge"
_LOCK = 0x766F78  # an advisory lock: replicas starting together migrate one at a time
_PAGE = 1000
_CHUNK = 5000

_V1 = """
CREATE TABLE conversations (
    id BIGSERIAL PRIMARY KEY,
    agent TEXT NOT NULL,
    place TEXT NOT NULL,
    UNIQUE (agent, place)
);
CREATE TABLE turns (
    conversation BIGINT NOT NULL REFERENCES conversations (id),
    exchange BIGINT NOT NULL,
    part SMALLINT NOT NULL CHECK (part IN (0, 1)),
    text TEXT NOT NULL,
    person TEXT,
    name TEXT,
    cut BOOLEAN NOT NULL DEFAULT false,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (conversation, exchange, part)
);
CREATE INDEX turns_by_person ON turns (person) WHERE person IS NOT NULL;
CREATE INDEX turns_by_age ON turns (at);
CREATE TABLE facts (
    id BIGSERIAL PRIMARY KEY,
    agent TEXT NOT NULL,
    person TEXT NOT NULL,
    text TEXT NOT NULL,
    norm TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    words TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    UNIQUE (agent, person, norm)
);
CREATE INDEX facts_by_age ON facts (at);
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


def _vector_text(vector: Vector) -> str:
    values = np.frombuffer(vector.data, dtype="<f4")
    return "[" + ",".join(f"{v:.7g}" for v in values) + "]"


class PostgresBackend:
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
            self._run(self._migrate)
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

    def _run(self, fn: Callable[[Any], Any], *, transaction: bool = True) -> Any:
        import psycopg_pool

        try:
            with self._pool.connection(timeout=self._timeout) as conn:
                if not transaction:
                    return fn(conn)
                with conn.transaction():
                    return fn(conn)
        except (self._psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self._fault(exc) from None

    def _migrate(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_SCHEMA}")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (0)")
        if version > len(MIGRATIONS):
            raise StoreFault(
                "other",
                f"{self.where} was written by a newer voxbridge (schema {version}; this one "
                f"knows {len(MIGRATIONS)}): upgrade voxbridge",
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(script)
            conn.execute("UPDATE schema_version SET version = %s", (number,))
        available = conn.execute(
            "SELECT installed_version IS NOT NULL, true FROM pg_available_extensions "
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

    # --- writing -------------------------------------------------------------------------------

    def write(self, batch: Sequence[Write]) -> None:
        def apply(conn: Any) -> None:
            ids: dict[tuple[str, str], int] = {}
            for op in batch:
                if isinstance(op, AddTurn):
                    self._add_turn(conn, op.turn, ids)
                elif isinstance(op, AddFact):
                    self._add_fact(conn, op.fact, op.vector)
                elif isinstance(op, AddVector):
                    self._add_vector(conn, op.fact_id, op.vector)

        self._run(apply)

    def _conversation(
        self, conn: Any, agent: str, place: str, ids: dict[tuple[str, str], int]
    ) -> int:
        found = ids.get((agent, place))
        if found is None:
            row = (
                conn.execute(
                    "SELECT id FROM conversations WHERE agent = %s AND place = %s", (agent, place)
                ).fetchone()
                or conn.execute(
                    "INSERT INTO conversations (agent, place) VALUES (%s, %s) "
                    "ON CONFLICT (agent, place) DO UPDATE SET agent = excluded.agent RETURNING id",
                    (agent, place),
                ).fetchone()
            )
            found = ids[agent, place] = int(row[0])
        return found

    def _add_turn(self, conn: Any, turn: StoredTurn, ids: dict[tuple[str, str], int]) -> None:
        conn.execute(
            "INSERT INTO turns (conversation, exchange, part, text, person, name, cut, at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                self._conversation(conn, turn.agent, turn.place, ids),
                turn.exchange,
                turn.part,
                turn.text,
                turn.person,
                turn.name,
                turn.cut,
                turn.at,
            ),
        )

    def _add_fact(self, conn: Any, fact: Fact, vector: Vector | None) -> None:
        row = conn.execute(
            "INSERT INTO facts (agent, person, text, norm, at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING RETURNING id",
            (fact.agent, fact.person, fact.text, normalized(fact.text), fact.at),
        ).fetchone()
        if row is not None and vector is not None:
            self._add_vector(conn, int(row[0]), vector)

    def _add_vector(self, conn: Any, fact_id: int, vector: Vector) -> None:
        if not self._vectors:
            return
        conn.execute(
            "INSERT INTO fact_vectors (fact, model, dims, vector) "
            "SELECT id, %s, %s, %s::vector FROM facts WHERE id = %s "
            "ON CONFLICT (fact) DO UPDATE SET model = excluded.model, dims = excluded.dims, "
            "vector = excluded.vector",
            (vector.model, vector.dims, _vector_text(vector), fact_id),
        )

    # --- reading -------------------------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        rows: list[Any] = self._run(
            lambda conn: conn.execute(sql, args).fetchall(), transaction=False
        )
        return rows

    def recent_turns(self, agent: str, place: str, limit: int) -> list[StoredTurn]:
        rows = self._rows(
            "SELECT exchange, part, text, person, name, cut, at FROM turns WHERE conversation = "
            "(SELECT id FROM conversations WHERE agent = %s AND place = %s) "
            "ORDER BY exchange DESC, part DESC LIMIT %s",
            (agent, place, limit),
        )
        return [
            StoredTurn(agent, place, r[0], r[1], r[2], r[6], r[3], r[4], bool(r[5]))
            for r in reversed(rows)
        ]

    def _facts(self, sql: str, args: Sequence[Any], agent: str, person: str) -> list[Fact]:
        return [Fact(agent, person, r[1], r[2], r[0]) for r in self._rows(sql, args)]

    def facts(self, agent: str, person: str, limit: int | None = None) -> list[Fact]:
        return self._facts(
            "SELECT id, text, at FROM facts WHERE agent = %s AND person = %s "
            "ORDER BY at DESC, id DESC LIMIT %s",
            (agent, person, limit),
            agent,
            person,
        )

    def recall_text(self, agent: str, person: str, words: Sequence[str], limit: int) -> list[Fact]:
        if not words:
            return []
        query = " or ".join(words)
        return self._facts(
            "SELECT id, text, at FROM facts, websearch_to_tsquery('english', %s) AS q "
            "WHERE agent = %s AND person = %s AND words @@ q "
            "ORDER BY ts_rank(words, q) DESC, id DESC LIMIT %s",
            (query, agent, person, limit),
            agent,
            person,
        )

    def recall_vector(self, agent: str, person: str, vector: Vector, limit: int) -> list[Fact]:
        if not self._vectors:
            return []
        return self._facts(
            "SELECT f.id, f.text, f.at FROM fact_vectors v JOIN facts f ON f.id = v.fact "
            "WHERE f.agent = %s AND f.person = %s AND v.model = %s "
            "ORDER BY v.vector <=> %s::vector LIMIT %s",
            (agent, person, vector.model, _vector_text(vector), limit),
            agent,
            person,
        )

    def unembedded(self, agent: str, model: str, limit: int) -> list[Fact]:
        if not self._vectors:
            return []
        rows = self._rows(
            "SELECT f.id, f.person, f.text, f.at FROM facts f "
            "LEFT JOIN fact_vectors v ON v.fact = f.id AND v.model = %s "
            "WHERE f.agent = %s AND v.fact IS NULL ORDER BY f.id LIMIT %s",
            (model, agent, limit),
        )
        return [Fact(agent, r[1], r[2], r[3], r[0]) for r in rows]

    def places(self, agent: str) -> list[PlaceSummary]:
        rows = self._rows(
            "SELECT c.place, COUNT(*), MAX(t.at) FROM conversations c "
            "JOIN turns t ON t.conversation = c.id WHERE c.agent = %s "
            "GROUP BY c.id ORDER BY MAX(t.at) DESC",
            (agent,),
        )
        return [PlaceSummary(r[0], r[1], r[2]) for r in rows]

    def persons(self, agent: str, person: str | None = None) -> list[PersonSummary]:
        only = " AND t.person = %s" if person else ""
        only_facts = " AND person = %s" if person else ""
        args = (agent, person, agent, person) if person else (agent, agent)
        rows = self._rows(
            "SELECT person, MAX(name), SUM(facts), SUM(turns), MAX(last) FROM ("
            " SELECT t.person, t.name, 0 AS facts, COUNT(*) AS turns, MAX(t.at) AS last"
            " FROM turns t JOIN conversations c ON c.id = t.conversation"
            f" WHERE c.agent = %s AND t.person IS NOT NULL{only} GROUP BY t.person, t.name"
            " UNION ALL"
            f" SELECT person, NULL, COUNT(*), 0, MAX(at) FROM facts WHERE agent = %s{only_facts}"
            " GROUP BY person"
            ") AS each GROUP BY person ORDER BY MAX(last) DESC",
            args,
        )
        return [PersonSummary(r[0], r[1], int(r[2]), int(r[3]), r[4]) for r in rows]

    def agents(self) -> list[str]:
        rows = self._rows(
            "SELECT agent FROM conversations UNION SELECT agent FROM facts ORDER BY 1", ()
        )
        return [r[0] for r in rows]

    def export_turns(
        self, agent: str, *, person: str | None = None, place: str | None = None
    ) -> Iterator[StoredTurn]:
        where, args = ["c.agent = %s"], [agent]
        if place is not None:
            where.append("c.place = %s")
            args.append(place)
        if person is not None:
            where.append(
                "(t.conversation, t.exchange) IN "
                "(SELECT conversation, exchange FROM turns WHERE person = %s)"
            )
            args.append(person)
        after: tuple[str, int, int] = ("", -1, -1)
        while True:
            rows = self._rows(
                "SELECT c.place, t.exchange, t.part, t.text, t.person, t.name, t.cut, t.at "
                "FROM turns t JOIN conversations c ON c.id = t.conversation "
                f"WHERE {' AND '.join(where)} AND (c.place, t.exchange, t.part) > (%s, %s, %s) "
                "ORDER BY c.place, t.exchange, t.part LIMIT %s",
                (*args, *after, _PAGE),
            )
            for r in rows:
                yield StoredTurn(agent, r[0], r[1], r[2], r[3], r[7], r[4], r[5], bool(r[6]))
            if len(rows) < _PAGE:
                return
            after = (rows[-1][0], rows[-1][1], rows[-1][2])

    def counts(self) -> dict[str, int]:
        tables = [("turns", "turns"), ("facts", "facts"), ("conversations", "conversations")]
        if self._vectors:
            tables.append(("vectors", "fact_vectors"))
        sql = " UNION ALL ".join(f"SELECT '{k}', COUNT(*) FROM {t}" for k, t in tables)
        return {"vectors": 0} | {k: int(n) for k, n in self._rows(sql, ())}

    def forget_epoch(self) -> int:
        rows = self._rows("SELECT value FROM meta WHERE key = 'forget_epoch'", ())
        return int(rows[0][0]) if rows else 0

    # --- deleting ------------------------------------------------------------------------------

    def forget(self, agent: str, *, person: str | None = None, place: str | None = None) -> Counts:
        def delete(conn: Any) -> Counts:
            scope = "conversation IN (SELECT id FROM conversations WHERE agent = %s)"
            args: list[Any] = [agent]
            if place is not None:
                scope = (
                    "conversation IN (SELECT id FROM conversations WHERE agent = %s AND place = %s)"
                )
                args.append(place)
            if person is not None:
                scope = (
                    f"(conversation, exchange) IN (SELECT conversation, exchange FROM turns "
                    f"WHERE person = %s AND {scope})"
                )
                args.insert(0, person)
            turns = conn.execute(f"DELETE FROM turns WHERE {scope}", args).rowcount
            facts = 0
            if place is None:
                if person is None:
                    cur = conn.execute("DELETE FROM facts WHERE agent = %s", (agent,))
                else:
                    cur = conn.execute(
                        "DELETE FROM facts WHERE agent = %s AND person = %s", (agent, person)
                    )
                facts = cur.rowcount
            conn.execute(
                "DELETE FROM conversations WHERE agent = %s AND NOT EXISTS "
                "(SELECT 1 FROM turns WHERE conversation = conversations.id)",
                (agent,),
            )
            conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'forget_epoch'")
            return Counts(turns, facts)

        counts: Counts = self._run(delete)
        self._vacuum()
        return counts

    def _vacuum(self) -> None:
        tables = "turns, facts, conversations" + (", fact_vectors" if self._vectors else "")
        self._run(lambda conn: conn.execute(f"VACUUM {tables}"), transaction=False)

    def expire(self, agent: str, before: float) -> Counts:
        def delete(conn: Any) -> Counts:
            turns = conn.execute(
                "DELETE FROM turns WHERE (conversation, exchange, part) IN ("
                " SELECT conversation, exchange, part FROM turns WHERE at < %s AND conversation"
                " IN (SELECT id FROM conversations WHERE agent = %s) LIMIT %s)",
                (before, agent, _CHUNK),
            ).rowcount
            facts = conn.execute(
                "DELETE FROM facts WHERE id IN "
                "(SELECT id FROM facts WHERE agent = %s AND at < %s LIMIT %s)",
                (agent, before, _CHUNK),
            ).rowcount
            return Counts(turns, facts)

        removed: Counts = self._run(delete)
        return removed

    # --- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._pool.close(timeout=1.0)

    def discard(self) -> str | None:
        return None
