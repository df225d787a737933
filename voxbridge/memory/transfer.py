"""Memory as JSON Lines: one record a line, so it can be backed up, read, filtered with ``jq``,
and moved between stores (``voxbridge memory A export | voxbridge memory A import --store …``).

    {"kind": "turn", "agent": "support", "place": "discord:1234", "exchange": 1764979200000000,
     "role": "user", "text": "…", "person": "discord:42", "name": "Ann", "cut": false,
     "at": "2026-12-05T23:59:01.000000+00:00"}
    {"kind": "fact", "agent": "support", "person": "discord:42", "text": "…", "at": "…"}

Importing is idempotent — a turn is known by its conversation, exchange and role, a fact by
its person and text — so an import can be run again after a failure. Vectors are not exported:
a running agent with ``memory.embeddings`` embeds imported facts itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from .records import ANSWER, QUESTION, Fact, StoredTurn, is_key

__all__ = ["BadRecord", "fact_record", "read_records", "turn_record"]


class BadRecord(ValueError):
    """A line of an import that is not a record (its message says the line and why)."""


def _time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")


def turn_record(turn: StoredTurn) -> dict[str, Any]:
    return {
        "kind": "turn",
        "agent": turn.agent,
        "place": turn.place,
        "exchange": turn.exchange,
        "role": turn.role,
        "text": turn.text,
        "person": turn.person,
        "name": turn.name,
        "cut": turn.cut,
        "at": _time(turn.at),
    }


def fact_record(fact: Fact) -> dict[str, Any]:
    return {
        "kind": "fact",
        "agent": fact.agent,
        "person": fact.person,
        "text": fact.text,
        "at": _time(fact.at),
    }


def _when(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    raise BadRecord(f'{where}: "at" must be an ISO 8601 time or Unix seconds')


def _text(record: dict[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not value and not optional):
        raise BadRecord(f'{where}: "{key}" must be a{"" if optional else " non-empty"} string')
    return value


def _key(record: dict[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    value = _text(record, key, where, optional=optional)
    if value is not None and not is_key(value):
        raise BadRecord(f'{where}: "{key}" must look like kind:id (discord:1234, web:ab12)')
    return value


def read_records(lines: Iterable[str], agent: str, source: str) -> Iterator[StoredTurn | Fact]:
    """The turns and facts in JSON Lines, for ``agent`` (whatever agent they were exported
    from: an import may rename). Blank lines are skipped.

    Raises:
        BadRecord: a line is not a record; ``source:line:`` says which, and why.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise BadRecord(f"{where}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise BadRecord(f'{where}: expected an object with "kind": "turn" or "fact"')
        kind = record.get("kind")
        if kind == "fact":
            yield Fact(
                agent,
                _key(record, "person", where),
                _text(record, "text", where),
                _when(record.get("at"), where),
            )
        elif kind == "turn":
            role = record.get("role")
            exchange = record.get("exchange")
            if role not in ("user", "assistant"):
                raise BadRecord(f'{where}: "role" must be user or assistant')
            if not isinstance(exchange, int) or isinstance(exchange, bool) or exchange <= 0:
                raise BadRecord(f'{where}: "exchange" must be a positive integer')
            yield StoredTurn(
                agent,
                _key(record, "place", where),
                exchange,
                QUESTION if role == "user" else ANSWER,
                _text(record, "text", where, optional=True) or "",
                _when(record.get("at"), where),
                _key(record, "person", where, optional=True),
                _text(record, "name", where, optional=True),
                record.get("cut") is True,
            )
        else:
            raise BadRecord(f'{where}: "kind" must be turn or fact, not {kind!r}')
