"""``voxbridge memory AGENT list|export|forget|import`` as a new user runs it: the real CLI as a
subprocess, on the state directory's SQLite store and on a real PostgreSQL — and moving an
agent's memory from one to the other."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import CliRunner
from tests.postgres import PostgresServer
from voxbridge.memory.backend import AddFact, AddTurn
from voxbridge.memory.records import ANSWER, QUESTION, Fact, StoredTurn, new_exchange
from voxbridge.memory.sqlite import SQLiteBackend


def seed(db: Path) -> None:
    """Two conversations, two people, facts about one of them."""
    backend = SQLiteBackend(db)
    now = time.time()
    for place, person, name, text in (
        ("discord:100", "discord:1", "Ann", "I like tea"),
        ("discord:100", "discord:2", "Bob", "I like coffee"),
        ("discord:200", "discord:1", "Ann", "remember my birthday is in May"),
    ):
        exchange = new_exchange()
        backend.write(
            [
                AddTurn(StoredTurn("helper", place, exchange, QUESTION, text, now, person, name)),
                AddTurn(StoredTurn("helper", place, exchange, ANSWER, "noted", now)),
            ]
        )
    backend.write(
        [
            AddFact(Fact("helper", "discord:1", "Likes tea.", now)),
            AddFact(Fact("helper", "discord:1", "Was born in May.", now + 1)),
        ]
    )
    backend.close()


def test_list_export_forget_and_import(tmp_path: Path, cli: CliRunner) -> None:
    seed(tmp_path / ".voxbridge" / "memory.db")
    r = cli("memory", "helper", "list")
    assert r.returncode == 0, r.stderr
    assert "conversations of helper (2):" in r.stdout
    assert "discord:100" in r.stdout and "4 turns" in r.stdout
    assert "discord:1 (Ann)" in r.stdout and "2 facts" in r.stdout
    r = cli("memory", "helper", "list", "--person", "discord:1")
    assert r.stdout.splitlines()[0] == "2 fact(s) helper remembers about discord:1:"
    assert r.stdout.splitlines()[1].endswith("Was born in May.")

    r = cli("memory", "helper", "export", "--file", "all.jsonl")
    assert r.returncode == 0 and "exported 6 turn(s) and 2 fact(s)" in r.stderr
    records = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records].count("turn") == 6
    assert {
        "kind": "fact",
        "agent": "helper",
        "person": "discord:1",
        "text": "Likes tea.",
    }.items() <= records[6].items()
    ann = cli("memory", "helper", "export", "--person", "discord:1")
    assert len(ann.stdout.splitlines()) == 4 + 2  # her two exchanges, her two facts

    r = cli("memory", "helper", "forget", "--person", "discord:1")
    assert r.returncode == 0 and "helper forgot discord:1: 4 turn(s), 2 fact(s)" in r.stdout
    assert "discord:1 " not in cli("memory", "helper", "list").stdout
    # Imported again, twice: idempotent.
    for _ in range(2):
        r = cli("memory", "helper", "import", "--file", "all.jsonl")
        assert r.returncode == 0 and "6 turn(s) and 2 fact(s) imported" in r.stderr
    assert cli("memory", "helper", "export").stdout.splitlines() == (
        (tmp_path / "all.jsonl").read_text().splitlines()
    )
    r = cli("memory", "helper", "forget", "--all")
    assert "6 turn(s), 2 fact(s)" in r.stdout
    assert "helper remembers nothing" in cli("memory", "helper", "list").stdout


def test_mistakes_get_one_clear_line(tmp_path: Path, cli: CliRunner) -> None:
    r = cli("memory", "helper", "list")
    assert r.returncode == 0 and "nothing stored yet in sqlite:.voxbridge/memory.db" in r.stderr
    r = cli("memory", "helper", "forget")
    assert r.returncode == 2 and "forget what? --person P" in r.stderr
    r = cli("memory", "helper", "list", "--person", "Ann")
    assert r.returncode == 2 and "expected kind:id, such as discord:" in r.stderr
    (tmp_path / "bad.jsonl").write_text(
        '{"kind": "fact", "person": "discord:1", "text": "ok", "at": 1}\n\n{"kind": "turn"}\n'
    )
    r = cli("memory", "helper", "import", "--file", "bad.jsonl")
    assert r.returncode == 2
    assert r.stderr.strip().endswith(
        'bad.jsonl:3: "role" must be user or assistant (the records before it were imported)'
    )
    assert "1 facts" in cli("memory", "helper", "list").stdout
    r = cli("memory", "helper", "list", "--store", "mysql://x")
    assert r.returncode == 1 and "--store must be sqlite" in r.stderr
    assert "Traceback" not in r.stderr


def test_memory_moves_from_sqlite_to_postgresql(
    tmp_path: Path, cli: CliRunner, postgres_server: PostgresServer
) -> None:
    seed(tmp_path / ".voxbridge" / "memory.db")
    url = postgres_server.new_database()
    export = cli("memory", "helper", "export", "--file", "move.jsonl")
    assert export.returncode == 0
    r = cli("memory", "helper", "import", "--file", "move.jsonl", "--store", url)
    assert r.returncode == 0, r.stderr
    moved = cli("memory", "helper", "export", "--store", url).stdout.splitlines()
    assert moved == (tmp_path / "move.jsonl").read_text().splitlines()
    listed = cli("memory", "helper", "list", "--store", url).stdout
    assert "discord:1 (Ann)" in listed and "2 facts" in listed
