"""Benchmark: memory (issue 17) — committing turns under a message load, loading a conversation
from a large store, recalling facts.

* ``memory_append_p95_ms``: a turn queued → committed, measured inside a running voxbridge
  (``serve()``, its web chat) while ``--clients`` chat sockets keep sending messages to a
  zero-latency LLM (tests/fake_brains.py). Beside it, in the same run, each message's round
  trip (question sent → answer done) with durable conversations and with them off
  (``memory.conversations: false``).
* ``memory_history_load_p95_ms``: a conversation's last ``history`` turns read from a store of
  ``--turns`` turns (1,000,000; quick: 100,000), through the store's reader threads, cold.
* ``memory_recall_p95_ms``: a person's facts recalled by words in a store of 100,000 facts about
  1,000 people; ``memory_recall_heavy_p95_ms`` for one person who has 10,000 of them; and
  ``memory_recall_vector_p95_ms`` by an embedding among 10,000 vectors of 768 dimensions, all of
  one person (the worst case: recall is per person) — through the store's reader threads.

    python bench/memory.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import pct
from trio_websocket import open_websocket_url

from tests.fake_brains import FakeLLM, Plan, start_fake
from voxbridge import testing
from voxbridge.memory import Location
from voxbridge.memory.backend import AddFact, AddTurn, Vector
from voxbridge.memory.records import ANSWER, QUESTION, Fact, StoredTurn
from voxbridge.memory.sqlite import SQLiteBackend
from voxbridge.memory.store import Store
from voxbridge.runtime.fleet import RunOptions, Runtime
from voxbridge.runtime.run import serve

MS = 1000.0
PLACES = 10_000  # conversations the stored turns are spread over
DIMS = 768
WORDS = [
    "tea",
    "coffee",
    "metric",
    "units",
    "dog",
    "cat",
    "garden",
    "bike",
    "train",
    "london",
    "paris",
    "music",
    "piano",
    "guitar",
    "vegan",
    "spicy",
    "morning",
    "night",
    "shift",
    "nurse",
    "teacher",
    "python",
    "rust",
    "chess",
    "football",
    "rain",
    "snow",
    "mountains",
    "sea",
    "daughter",
    "son",
    "birthday",
    "may",
    "june",
    "allergic",
    "peanuts",
    "glasses",
    "tall",
]


async def _chat_load(root: Path, clients: int, seconds: float, durable: bool) -> dict[str, Any]:
    llm = FakeLLM(Plan([{"reply": "noted"}]))
    conversations = "true" if durable else "false"
    async with trio.open_nursery() as nursery:
        await start_fake(nursery, llm)
        agents = root / "agents.d"
        agents.mkdir(parents=True, exist_ok=True)
        (agents / "bench.yaml").write_text(
            f"name: Bench\nllm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
            f"memory: {{conversations: {conversations}}}\nplugins:\n  web: {{}}\n"
        )
        options = RunOptions(
            agents_dir=agents,
            keys_dir=root / "keys",
            state_dir=root / f"state-{conversations}",
            listen="127.0.0.1:0",
        )
        rt: Runtime = await nursery.start(
            lambda task_status: serve(options, plugins=testing.plugins(), task_status=task_status)
        )
        assert rt.status_url is not None
        url = rt.status_url.replace("http", "ws", 1) + "/api/agents/bench/chat"
        rounds: list[float] = []
        deadline = trio.current_time() + seconds

        async def client(n: int) -> None:
            async with open_websocket_url(url) as ws:
                await ws.send_message(json.dumps({"type": "hello", "conversation": f"c{n}"}))
                await ws.get_message()  # the history
                while trio.current_time() < deadline:
                    started = time.perf_counter()
                    await ws.send_message(json.dumps({"type": "message", "text": "hello there"}))
                    while json.loads(await ws.get_message())["type"] not in ("done", "error"):
                        pass
                    rounds.append(time.perf_counter() - started)

        async with trio.open_nursery() as clients_nursery:
            for n in range(clients):
                clients_nursery.start_soon(client, n)
        store = rt.memory.store
        latencies = list(store.write_latencies) if store is not None and durable else []
        nursery.cancel_scope.cancel()
    return {"rounds": rounds, "writes": latencies}


def bench_append(clients: int, seconds: float) -> dict[str, float]:
    """Turns committed under a chat load, and what durable conversations cost a message."""
    with tempfile.TemporaryDirectory() as tmp:
        on = trio.run(_chat_load, Path(tmp), clients, seconds, True)
        off = trio.run(_chat_load, Path(tmp), clients, seconds, False)
    writes = on["writes"]
    return {
        "memory_append_p50_ms": MS * statistics.median(writes),
        "memory_append_p95_ms": MS * pct(writes, 95),
        "memory_appends": float(len(writes)),
        "memory_chat_round_p50_ms": MS * statistics.median(on["rounds"]),
        "memory_chat_round_p95_ms": MS * pct(on["rounds"], 95),
        "memory_chat_round_off_p50_ms": MS * statistics.median(off["rounds"]),
        "memory_chat_round_off_p95_ms": MS * pct(off["rounds"], 95),
    }


def _fill_turns(db: Path, turns: int) -> None:
    backend = SQLiteBackend(db)
    rng = random.Random(7)
    batch: list[AddTurn] = []
    now = time.time()
    for n in range(turns // 2):
        place = f"discord:{n % PLACES}"
        words = " ".join(rng.choice(WORDS) for _ in range(12))
        batch.append(
            AddTurn(StoredTurn("bench", place, 1_000_000 + n, QUESTION, words, now, "discord:1"))
        )
        batch.append(AddTurn(StoredTurn("bench", place, 1_000_000 + n, ANSWER, words, now)))
        if len(batch) >= 3_000:  # 9 values a turn: SQLite takes at most 32,766 in one statement
            backend.write(batch)
            batch.clear()
    backend.write(batch)
    backend.close()


PEOPLE = 1_000  # the people the facts are about (but "discord:0", who has HEAVY of them)
HEAVY = 10_000


def _fill_facts(db: Path, facts: int, vectors: int) -> None:
    """``facts`` facts: ``HEAVY`` about discord:0, with embeddings for the first ``vectors``,
    the rest spread over ``PEOPLE`` people."""
    backend = SQLiteBackend(db)
    rng = random.Random(11)
    gen = np.random.default_rng(11)
    batch: list[AddFact] = []
    now = time.time()
    for n in range(facts):
        person = "discord:0" if n < HEAVY else f"discord:{1 + n % PEOPLE}"
        text = f"fact {n}: " + " ".join(rng.choice(WORDS) for _ in range(6))
        vector = None
        if n < vectors:
            values = gen.standard_normal(DIMS).astype("<f4")
            vector = Vector("bench-embed", DIMS, (values / np.linalg.norm(values)).tobytes())
        batch.append(AddFact(Fact("bench", person, text, now + n), vector))
        if len(batch) >= 5_000:
            backend.write(batch)
            batch.clear()
    backend.write(batch)
    backend.close()


async def _reads(db: Path, samples: int) -> dict[str, list[float]]:
    location = Location.parse(f"sqlite://{db}", db.parent)
    assert location is not None
    store = Store(location.open, location.shown)
    rng = random.Random(3)
    gen = np.random.default_rng(5)
    found: dict[str, list[float]] = {"history": [], "words": [], "heavy": [], "vectors": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert await store.opened()
        for _ in range(samples):
            place = f"discord:{rng.randrange(PLACES)}"
            started = time.perf_counter()
            turns = await store.read(lambda b, p=place: b.recent_turns("bench", p, 10), default=[])
            found["history"].append(time.perf_counter() - started)
            assert len(turns) == 10
            words = rng.sample(WORDS, 4)
            anyone = f"discord:{1 + rng.randrange(PEOPLE)}"
            for kind, person in (("words", anyone), ("heavy", "discord:0")):
                started = time.perf_counter()
                await store.read(
                    lambda b, w=words, p=person: b.recall_text("bench", p, w, 5), default=[]
                )
                found[kind].append(time.perf_counter() - started)
            values = gen.standard_normal(DIMS).astype("<f4")
            query = Vector("bench-embed", DIMS, (values / np.linalg.norm(values)).tobytes())
            started = time.perf_counter()
            near = await store.read(
                lambda b, q=query: b.recall_vector("bench", "discord:0", q, 5), default=[]
            )
            found["vectors"].append(time.perf_counter() - started)
            assert len(near) == 5
        nursery.cancel_scope.cancel()
    return found


def bench_store(turns: int, facts: int, vectors: int, samples: int) -> dict[str, float]:
    """History loads and recalls against a store of ``turns`` turns and ``facts`` facts."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "memory.db"
        started = time.monotonic()
        _fill_turns(db, turns)
        _fill_facts(db, facts, vectors)
        filled = time.monotonic() - started
        found = trio.run(_reads, db, samples)
        size = db.stat().st_size
    return {
        "memory_turns": float(turns),
        "memory_facts": float(facts),
        "memory_vectors": float(vectors),
        "memory_fill_s": filled,
        "memory_db_mb": size / 1e6,
        "memory_history_load_p50_ms": MS * statistics.median(found["history"]),
        "memory_history_load_p95_ms": MS * pct(found["history"], 95),
        "memory_recall_p50_ms": MS * statistics.median(found["words"]),
        "memory_recall_p95_ms": MS * pct(found["words"], 95),
        "memory_recall_heavy_p50_ms": MS * statistics.median(found["heavy"]),
        "memory_recall_heavy_p95_ms": MS * pct(found["heavy"], 95),
        "memory_recall_vector_p50_ms": MS * statistics.median(found["vectors"]),
        "memory_recall_vector_p95_ms": MS * pct(found["vectors"], 95),
    }


def measure(quick: bool) -> dict[str, float]:
    results = bench_store(100_000 if quick else 1_000_000, 100_000, 10_000, 200 if quick else 500)
    results.update(bench_append(8 if quick else 20, 4.0 if quick else 15.0))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = measure(args.quick)
    print(f"memory benchmarks ({'quick' if args.quick else 'full'})\n")
    print("| benchmark | voxbridge | baseline | goal |")
    print("| --- | ---: | ---: | --- |")
    print(
        f"| turn queued → committed, under {r['memory_appends']:.0f} writes of a chat load, "
        f"p50 / p95 (ms) | {r['memory_append_p50_ms']:.3f} / {r['memory_append_p95_ms']:.3f} "
        "| | p95 ≤ 1 |"
    )
    print(
        "| chat message round trip, durable, p50 / p95 (ms) | "
        f"{r['memory_chat_round_p50_ms']:.2f} / {r['memory_chat_round_p95_ms']:.2f} | "
        f"in the process only {r['memory_chat_round_off_p50_ms']:.2f} / "
        f"{r['memory_chat_round_off_p95_ms']:.2f} | |"
    )
    print(
        f"| history load among {r['memory_turns']:,.0f} turns, p50 / p95 (ms) | "
        f"{r['memory_history_load_p50_ms']:.3f} / {r['memory_history_load_p95_ms']:.3f} | | "
        "p95 ≤ 2 |"
    )
    print(
        f"| recall by words, {r['memory_facts']:,.0f} facts about {PEOPLE:,} people, "
        f"p50 / p95 (ms) | {r['memory_recall_p50_ms']:.3f} / {r['memory_recall_p95_ms']:.3f} | "
        f"one person with {HEAVY:,}: {r['memory_recall_heavy_p50_ms']:.1f} / "
        f"{r['memory_recall_heavy_p95_ms']:.1f} | p95 ≤ 10 |"
    )
    print(
        f"| recall by vector among {r['memory_vectors']:,.0f} × {DIMS}, p50 / p95 (ms) | "
        f"{r['memory_recall_vector_p50_ms']:.3f} / {r['memory_recall_vector_p95_ms']:.3f} | | "
        "p95 ≤ 10 |"
    )
    print(f"\n(store of {r['memory_db_mb']:.0f} MB filled in {r['memory_fill_s']:.1f} s)")
    if args.json:
        print(json.dumps({k: round(v, 4) for k, v in r.items()}))


if __name__ == "__main__":
    main()
