"""The embedded store's own promises: forgotten words leave the files, a damaged file is moved
aside (never deleted) for a fresh one, and the file is its owner's alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from voxbridge.memory.backend import AddFact, AddTurn
from voxbridge.memory.location import Location
from voxbridge.memory.records import ANSWER, QUESTION, Fact, StoredTurn, new_exchange
from voxbridge.memory.sqlite import SQLiteBackend

MARK = "qxzvkplm"  # a word that appears nowhere else, stemmed or not


def _files(directory: Path) -> dict[str, int]:
    """How often the mark appears in each file of the directory."""
    return {p.name: p.read_bytes().count(MARK.encode()) for p in directory.iterdir()}


def _talk(backend: SQLiteBackend, person: str, text: str, n: int) -> None:
    for i in range(n):
        exchange = new_exchange()
        backend.write(
            [
                AddTurn(
                    StoredTurn(
                        "a",
                        f"web:{person}",
                        exchange,
                        QUESTION,
                        f"{text} {i}",
                        time.time(),
                        f"web:{person}",
                    )
                ),
                AddTurn(StoredTurn("a", f"web:{person}", exchange, ANSWER, "ok", time.time())),
            ]
        )


def test_forgotten_words_are_gone_from_the_database_files(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "memory.db")
    _talk(backend, "bob", "other talk " * 20, 100)
    _talk(backend, "ann", f"my secret word is {MARK}", 3)
    backend.write([AddFact(Fact("a", "web:ann", f"Has the secret word {MARK}.", time.time()))])
    _talk(backend, "bob", "more talk " * 20, 100)
    assert sum(_files(tmp_path).values()) > 0
    backend.forget("a", person="web:ann")
    # Not just unlinked: overwritten (secure_delete, FTS5 secure-delete), and the WAL's older
    # copies of the pages are gone too (checkpointed and truncated).
    assert _files(tmp_path) == dict.fromkeys(_files(tmp_path), 0)
    assert len(backend.recent_turns("a", "web:bob", 1000)) == 400
    backend.close()


def test_a_damaged_database_is_moved_aside_and_a_fresh_one_started(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    db.write_bytes(b"this is not a database " * 100)
    location = Location.parse(None, tmp_path)
    assert location is not None
    backend, notice = location.open()
    assert notice is not None and "moved aside" in notice
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("memory.db.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert str(aside[0]) in notice
    _talk(backend, "ann", "hello", 1)
    assert len(backend.recent_turns("a", "web:ann", 10)) == 2
    backend.close()


def test_the_database_is_its_owners_alone(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "state" / "memory.db")
    _talk(backend, "ann", "hello", 1)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "state").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    backend.close()
    assert os.access(tmp_path / "state" / "memory.db", os.R_OK)
