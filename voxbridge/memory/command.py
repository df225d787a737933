"""``voxbridge memory AGENT list|export|forget|import``: what an agent remembers, in the
operator's hands — run beside a running instance or without one (the running instance drops
what it held of anything forgotten within seconds)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import StoreError, UsageError
from .backend import AddFact, AddTurn, Backend, StoreFault, Write
from .location import Location
from .records import StoredTurn, is_key
from .transfer import BadRecord, fact_record, read_records, turn_record

__all__ = ["memory_command"]

_BATCH = 500


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


@contextlib.contextmanager
def _opened(location: Location, *, create: bool) -> Iterator[Backend | None]:
    """The store, or None when there is none yet and ``create`` is false (nothing stored)."""
    if not create and location.kind == "sqlite" and location.path and not location.path.exists():
        yield None
        return
    try:
        backend, notice = location.open()
    except StoreFault as fault:
        raise StoreError(f"memory store {location.shown}: {fault}") from None
    if notice:
        print(f"⚠️ {notice}", file=sys.stderr)
    try:
        yield backend
    except StoreFault as fault:
        raise StoreError(f"memory store {location.shown}: {fault}") from None
    finally:
        backend.close()


def _check_keys(person: str | None, conversation: str | None) -> None:
    for option, value in (("--person", person), ("--conversation", conversation)):
        if value is not None and not is_key(value):
            raise UsageError(
                f"{option} {value!r}: expected kind:id, such as discord:123456789012345678, "
                "web:<conversation id>, terminal:<name>"
            )


def memory_command(
    location: Location | None,
    agent: str,
    action: str,
    *,
    person: str | None = None,
    conversation: str | None = None,
    everything: bool = False,
    file: Path | None = None,
    out: IO[str] = sys.stdout,
) -> int:
    """Run one action; returns the exit code.

    Raises:
        UsageError: the options do not fit the action.
        StoreError: the store cannot be opened or fails.
    """
    if location is None:
        raise UsageError("--store none keeps no memory: there is nothing to " + action)
    _check_keys(person, conversation)
    if action == "forget" and person is None and conversation is None and not everything:
        raise UsageError(
            "forget what? --person P (their facts and every exchange they asked), "
            "--conversation C, or --all (everything this agent remembers)"
        )
    if action == "import":
        return _import(location, agent, file)
    with _opened(location, create=False) as backend:
        if backend is None:
            print(f"· nothing stored yet in {location.shown}", file=sys.stderr)
            return 0
        if action == "list":
            _list(backend, agent, person, conversation, out)
        elif action == "export":
            _export(backend, agent, person, conversation, file, out)
        elif action == "forget":
            _forget(backend, agent, person, conversation, out)
        else:  # pragma: no cover - argparse offers only these
            raise UsageError(f"unknown action {action!r}")
    return 0


def _list(
    backend: Backend, agent: str, person: str | None, conversation: str | None, out: IO[str]
) -> None:
    if person is not None:
        facts = backend.facts(agent, person)
        print(f"{len(facts)} fact(s) {agent} remembers about {person}:", file=out)
        for fact in facts:
            print(f"  {_when(fact.at)}  {fact.text}", file=out)
    if conversation is not None:
        turns = list(backend.export_turns(agent, place=conversation))
        print(f"{len(turns)} turn(s) of {conversation}:", file=out)
        for turn in turns[-50:]:
            who = turn.name or turn.person or turn.role
            print(f"  {_when(turn.at)}  {who if turn.part == 0 else agent}: {turn.text}", file=out)
    if person is not None or conversation is not None:
        return
    places = backend.places(agent)
    people = backend.persons(agent)
    if not places and not people:
        print(
            f"{agent} remembers nothing (agents with memory: "
            f"{', '.join(backend.agents()) or 'none'})",
            file=out,
        )
        return
    print(f"conversations of {agent} ({len(places)}):", file=out)
    for place in places:
        print(f"  {place.place:<40} {place.turns:>6} turns  last {_when(place.last)}", file=out)
    print(f"people {agent} remembers ({len(people)}):", file=out)
    for p in people:
        name = f" ({p.name})" if p.name else ""
        print(
            f"  {p.person + name:<40} {p.facts:>4} facts {p.turns:>6} turns  last {_when(p.last)}",
            file=out,
        )


def _export(
    backend: Backend,
    agent: str,
    person: str | None,
    conversation: str | None,
    file: Path | None,
    out: IO[str],
) -> None:
    with open(file, "w", encoding="utf-8") if file else contextlib.nullcontext(out) as sink:
        count = 0
        for turn in backend.export_turns(agent, person=person, place=conversation):
            sink.write(json.dumps(turn_record(turn), ensure_ascii=False) + "\n")
            count += 1
        facts = 0
        if conversation is None:
            people = [person] if person else [p.person for p in backend.persons(agent)]
            for who in people:
                for fact in reversed(backend.facts(agent, who)):
                    sink.write(json.dumps(fact_record(fact), ensure_ascii=False) + "\n")
                    facts += 1
    print(f"✓ exported {count} turn(s) and {facts} fact(s) of {agent}", file=sys.stderr)


def _forget(
    backend: Backend, agent: str, person: str | None, conversation: str | None, out: IO[str]
) -> None:
    counts = backend.forget(agent, person=person, place=conversation)
    what = person or conversation or "everything"
    print(f"✓ {agent} forgot {what}: {counts.turns} turn(s), {counts.facts} fact(s)", file=out)


def _import(location: Location, agent: str, file: Path | None) -> int:
    source = str(file) if file else "stdin"
    try:
        stream = open(file, encoding="utf-8") if file else sys.stdin  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"{file}: {exc.strerror or exc}") from None
    turns = facts = 0
    with stream, _opened(location, create=True) as backend:
        assert backend is not None
        batch: list[Write] = []
        try:
            for record in read_records(stream, agent, source):
                if isinstance(record, StoredTurn):
                    batch.append(AddTurn(record))
                    turns += 1
                else:
                    batch.append(AddFact(record))
                    facts += 1
                if len(batch) >= _BATCH:
                    backend.write(batch)
                    batch.clear()
        except BadRecord as exc:
            raise UsageError(f"{exc} (the records before it were imported)") from None
        finally:
            backend.write(batch)
    print(
        f"✓ {turns} turn(s) and {facts} fact(s) imported into {agent} from {source} "
        "(those already there were left as they were)",
        file=sys.stderr,
    )
    return 0
