"""The store's contract, one suite run against every backend: SQLite, PostgreSQL (Debian's,
full-text recall) and PostgreSQL with pgvector — real databases, started by tests/postgres.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from voxbridge.memory.backend import AddFact, AddTurn, AddVector, Backend, StoreFault, Vector
from voxbridge.memory.location import Location
from voxbridge.memory.records import ANSWER, QUESTION, Counts, Fact, StoredTurn, new_exchange


@pytest.fixture
def backend(store_url: str, tmp_path: Path) -> Iterator[Backend]:
    location = Location.parse(store_url, tmp_path)
    assert location is not None
    opened, notice = location.open()
    assert notice is None
    try:
        yield opened
    finally:
        opened.close()


NOW = time.time()


def question(place: str, text: str, person: str, exchange: int | None = None) -> StoredTurn:
    return StoredTurn("a", place, exchange or new_exchange(), QUESTION, text, NOW, person, "Ann")


def answer(of: StoredTurn, text: str, *, cut: bool = False) -> StoredTurn:
    return StoredTurn(of.agent, of.place, of.exchange, ANSWER, text, NOW, cut=cut)


def exchange(backend: Backend, place: str, person: str, q: str, a: str) -> None:
    asked = question(place, q, person)
    backend.write([AddTurn(asked), AddTurn(answer(asked, a))])


def vector(seed: int, dims: int = 64, model: str = "m") -> Vector:
    values = np.random.default_rng(seed).standard_normal(dims).astype("<f4")
    return Vector(model, dims, values.tobytes())


def texts(facts: list[Fact]) -> list[str]:
    return [f.text for f in facts]


def test_turns_come_back_in_exchange_order_whatever_order_they_were_written(
    backend: Backend,
) -> None:
    first = question("web:x", "what is 2+2?", "web:x")
    second = question("web:x", "and 3+3?", "web:x")
    # The second question's answer is stored before the first's (two answered at once).
    backend.write([AddTurn(first), AddTurn(second), AddTurn(answer(second, "6"))])
    backend.write([AddTurn(answer(first, "4", cut=True))])
    turns = backend.recent_turns("a", "web:x", 10)
    assert [(t.role, t.text, t.cut) for t in turns] == [
        ("user", "what is 2+2?", False),
        ("assistant", "4", True),
        ("user", "and 3+3?", False),
        ("assistant", "6", False),
    ]
    assert turns[0].person == "web:x" and turns[0].name == "Ann"
    assert [t.text for t in backend.recent_turns("a", "web:x", 3)] == ["4", "and 3+3?", "6"]
    # Writing a turn again (a retried batch, an import) changes nothing.
    backend.write([AddTurn(first), AddTurn(answer(second, "6"))])
    assert len(backend.recent_turns("a", "web:x", 10)) == 4
    # Other agents and places are apart.
    assert backend.recent_turns("b", "web:x", 10) == []
    assert backend.recent_turns("a", "web:y", 10) == []


def test_facts_are_stored_once_and_recalled_by_their_words(backend: Backend) -> None:
    backend.write(
        [
            AddFact(Fact("a", "discord:1", "Prefers metric units.", NOW)),
            AddFact(Fact("a", "discord:1", "prefers  METRIC units", NOW + 1)),  # the same fact
            AddFact(Fact("a", "discord:1", "Has a dog called Rex.", NOW + 2)),
            AddFact(Fact("a", "discord:1", "Works night shifts at a bakery.", NOW + 3)),
            AddFact(Fact("a", "discord:2", "Also prefers metric units.", NOW)),
            AddFact(Fact("b", "discord:1", "Prefers imperial units.", NOW)),
        ]
    )
    assert texts(backend.facts("a", "discord:1")) == [
        "Works night shifts at a bakery.",
        "Has a dog called Rex.",
        "Prefers metric units.",
    ]
    assert texts(backend.facts("a", "discord:1", 1)) == ["Works night shifts at a bakery."]
    # Stemmed: "unit" finds "units"; only this agent's facts about this person.
    assert texts(backend.recall_text("a", "discord:1", ["unit", "length"], 5)) == [
        "Prefers metric units."
    ]
    assert texts(backend.recall_text("a", "discord:1", ["dog"], 5)) == ["Has a dog called Rex."]
    assert backend.recall_text("a", "discord:1", ["zebra"], 5) == []
    assert backend.recall_text("a", "discord:1", [], 5) == []


def test_vectors_recall_the_nearest_facts_of_the_same_model(backend: Backend) -> None:
    facts = [Fact("a", "web:x", f"fact {i}", NOW + i) for i in range(30)]
    backend.write([AddFact(f, vector(i)) for i, f in enumerate(facts[:20])])
    backend.write([AddFact(f) for f in facts[20:]])
    if not backend.vectors:  # a server without pgvector: facts stored, recall is by words
        assert len(backend.facts("a", "web:x")) == 30
        assert backend.recall_vector("a", "web:x", vector(7), 3) == []
        assert backend.unembedded("a", "m", 100) == []
        return
    assert texts(backend.recall_vector("a", "web:x", vector(7), 3))[0] == "fact 7"
    assert backend.recall_vector("a", "web:x", vector(7, model="other"), 3) == []
    assert backend.recall_vector("a", "web:y", vector(7), 3) == []
    missing = backend.unembedded("a", "m", 100)
    assert texts(missing) == [f"fact {i}" for i in range(20, 30)]
    backend.write([AddVector(f.id, vector(100 + i)) for i, f in enumerate(missing)])
    assert backend.unembedded("a", "m", 100) == []
    assert texts(backend.recall_vector("a", "web:x", vector(105), 1)) == ["fact 25"]
    assert backend.counts()["vectors"] == 30


def test_forgetting_a_person_takes_their_exchanges_and_facts_and_nothing_else(
    backend: Backend,
) -> None:
    exchange(backend, "discord:100", "discord:1", "I am Ann", "Hi Ann")
    exchange(backend, "discord:100", "discord:2", "I am Bob", "Hi Bob")
    exchange(backend, "discord:200", "discord:1", "secret plan", "noted")
    backend.write(
        [
            AddFact(Fact("a", "discord:1", "Is called Ann.", NOW), vector(1)),
            AddFact(Fact("a", "discord:2", "Is called Bob.", NOW), vector(2)),
        ]
    )
    epoch = backend.forget_epoch()
    assert backend.forget("a", person="discord:1") == Counts(turns=4, facts=1)
    assert backend.forget_epoch() > epoch
    assert [t.text for t in backend.recent_turns("a", "discord:100", 10)] == ["I am Bob", "Hi Bob"]
    assert backend.recent_turns("a", "discord:200", 10) == []
    assert texts(backend.facts("a", "discord:2")) == ["Is called Bob."]
    assert backend.facts("a", "discord:1") == []
    assert backend.recall_text("a", "discord:1", ["ann"], 5) == []
    assert [p.place for p in backend.places("a")] == ["discord:100"]
    counts = backend.counts()
    assert counts["turns"] == 2 and counts["facts"] == 1 and counts["conversations"] == 1
    if backend.vectors:
        assert counts["vectors"] == 1
    # A conversation, then everything.
    assert backend.forget("a", place="discord:100") == Counts(turns=2, facts=0)
    exchange(backend, "web:z", "web:z", "hello", "hi")
    assert backend.forget("a") == Counts(turns=2, facts=1)
    assert backend.agents() == []


def test_expiry_deletes_only_what_is_older(backend: Backend) -> None:
    old = StoredTurn("a", "web:x", new_exchange(), QUESTION, "old", NOW - 100, "web:x")
    new = StoredTurn("a", "web:x", new_exchange(), QUESTION, "new", NOW, "web:x")
    other = StoredTurn("b", "web:x", new_exchange(), QUESTION, "b's old", NOW - 100, "web:x")
    backend.write(
        [
            AddTurn(old),
            AddTurn(new),
            AddTurn(other),
            AddFact(Fact("a", "web:x", "An old fact.", NOW - 100)),
            AddFact(Fact("a", "web:x", "A new fact.", NOW)),
        ]
    )
    assert backend.expire("a", NOW - 50) == Counts(turns=1, facts=1)
    assert backend.expire("a", NOW - 50) == Counts()
    assert [t.text for t in backend.recent_turns("a", "web:x", 10)] == ["new"]
    assert texts(backend.facts("a", "web:x")) == ["A new fact."]
    assert [t.text for t in backend.recent_turns("b", "web:x", 10)] == ["b's old"]


def test_export_reads_every_turn_in_pages_and_filters(backend: Backend) -> None:
    for i in range(1200):  # more than a page
        exchange(backend, f"discord:{i % 3}", f"discord:{10 + i % 2}", f"q{i}", f"a{i}")
    every = list(backend.export_turns("a"))
    assert len(every) == 2400
    keys = [(t.place, t.exchange, t.part) for t in every]
    assert keys == sorted(keys)
    assert len(list(backend.export_turns("a", place="discord:1"))) == 800
    ann = list(backend.export_turns("a", person="discord:10"))
    assert len(ann) == 1200 and {t.text[1:] for t in ann} == {str(i) for i in range(0, 1200, 2)}
    people = {p.person: (p.name, p.turns) for p in backend.persons("a")}
    assert people == {"discord:10": ("Ann", 600), "discord:11": ("Ann", 600)}
    assert {p.place: p.turns for p in backend.places("a")} == {
        "discord:0": 800,
        "discord:1": 800,
        "discord:2": 800,
    }


def test_a_reopened_store_has_everything_and_a_newer_schema_is_refused(
    store_url: str, tmp_path: Path
) -> None:
    location = Location.parse(store_url, tmp_path)
    assert location is not None
    first, _ = location.open()
    exchange(first, "web:x", "web:x", "remember me", "I will")
    first.close()
    again, _ = location.open()
    assert [t.text for t in again.recent_turns("a", "web:x", 5)] == ["remember me", "I will"]
    _pretend_newer(again, store_url)
    again.close()
    with pytest.raises(StoreFault, match="newer voxbridge"):
        location.open()


def _pretend_newer(backend: Backend, store_url: str) -> None:
    if store_url.startswith("sqlite"):
        import apsw

        conn = apsw.Connection(store_url.removeprefix("sqlite://"))
        conn.execute("PRAGMA user_version = 99")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as conn:
            conn.execute("UPDATE voxbridge.schema_version SET version = 99")
