"""Where memory lives: ``--store`` / ``VOXBRIDGE_STORE``, or the state directory by default.

- nothing, or ``sqlite``: ``<state dir>/memory.db`` — embedded, nothing to start;
- ``sqlite:///abs/path.db`` or ``sqlite:relative/path.db``: another SQLite file;
- ``postgresql://user:password@host:5432/db`` (or ``postgres://``): a PostgreSQL database, for
  a sharded fleet whose replicas must all see every agent's memory;
- ``none``: nothing written; conversations live in the process only.

A URL's password is never shown: :attr:`Location.shown` is what logs and the status print.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from .backend import Backend, StoreFault

__all__ = ["STORE_ENV", "Location"]

STORE_ENV = "VOXBRIDGE_STORE"
FILE_NAME = "memory.db"

log = logging.getLogger("voxbridge.memory")


@dataclass(frozen=True, slots=True)
class Location:
    """A store's address: a SQLite file, or a PostgreSQL URL (kept, never shown)."""

    kind: str
    path: Path | None = None
    url: str | None = None

    @classmethod
    def parse(cls, text: str | None, state_dir: Path) -> Location | None:
        """The store ``text`` names (None or empty: the state directory's SQLite file; None
        for ``none``).

        Raises:
            StoreError: not a store voxbridge knows, with the forms it does.
        """
        text = (text or "").strip()
        if text == "none":
            return None
        if text in ("", "sqlite"):
            return cls("sqlite", path=state_dir / FILE_NAME)
        if text.startswith("sqlite:"):
            rest = text.removeprefix("sqlite:")
            rest = rest.removeprefix("//") if rest.startswith("///") else rest
            if not rest:
                raise StoreError("--store sqlite: needs a file (sqlite:///var/lib/vb/memory.db)")
            return cls("sqlite", path=Path(rest))
        if text.startswith(("postgresql://", "postgres://")):
            return cls("postgresql", url=text)
        raise StoreError(
            "--store must be sqlite (the default: memory.db in --state-dir), "
            "sqlite:///path/to/memory.db, postgresql://user:password@host:5432/db or none"
        )

    @property
    def shown(self) -> str:
        """Where it is, for people: a path, or the URL without its password."""
        if self.kind == "sqlite":
            return f"sqlite:{self.path}"
        from .postgres import shown_url

        return shown_url(self.url or "")

    def open(self) -> tuple[Backend, str | None]:
        """Open the store (blocking); a notice when a damaged SQLite file had to be moved
        aside and a fresh one started.

        Raises:
            StoreFault: it cannot be opened now (the runtime retries; commands report it).
        """
        if self.kind == "postgresql":
            from .postgres import PostgresBackend

            return PostgresBackend(self.url or ""), None
        from .sqlite import SQLiteBackend, move_aside

        assert self.path is not None
        try:
            return SQLiteBackend(self.path), None
        except StoreFault as fault:
            if fault.kind != "corrupt":
                raise
            aside = move_aside(self.path)
            notice = (
                f"the memory database {self.path} was damaged ({fault}): moved aside to "
                f"{aside}; a fresh one was started (what it held is in the old file)"
            )
            log.error("❌ %s", notice)
            return SQLiteBackend(self.path), notice
