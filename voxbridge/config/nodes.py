"""YAML text → a tree of nodes that remember where they stand in the file.

Built from libyaml's event stream rather than PyYAML's composer because the composer recurses in C
and crashes the process on deep nesting, and expands aliases blindly. Here nesting depth and the
expanded size are bounded while reading, so hostile input fails in microseconds with a located
error. Each node keeps its character span, which is what lets ``yamledit`` replace one value and
leave every other byte alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from ..errors import ConfigError, Problem

__all__ = ["MAX_DEPTH", "MAX_NODES", "Node", "compose", "line_col"]

# An agent file is a few dozen nodes four levels deep; these leave room for long channel lists.
MAX_DEPTH = 32
MAX_NODES = 20_000
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels: an agent file needs a few levels at most"

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

_resolver: Any = Resolver()  # untyped in types-PyYAML
_constructor = SafeConstructor()


@dataclass(slots=True, eq=False)
class Node:
    """One YAML node. ``kind`` is ``"map"``, ``"seq"`` or ``"scalar"``.

    ``line``/``column`` are 1-based; ``start``/``end`` are character offsets into the text.
    For maps, ``items`` pairs each key (a scalar node, its value the key string) with its value
    node, in file order. ``style`` is the scalar style (``""`` plain, ``'"'``, ``"'"``, ``"|"``,
    ``">"``); ``flow`` is true inside ``[...]``/``{...}``, where a plain scalar may not hold commas.
    """

    kind: str
    line: int
    column: int
    start: int
    end: int
    value: Any = None
    items: list[tuple[Node, Node]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    style: str = ""
    flow: bool = False
    size: int = 1

    def get(self, key: str) -> Node | None:
        """The value node under ``key`` in a map node, or None."""
        for k, v in self.items:
            if k.value == key:
                return v
        return None

    def find(self, path: tuple[str | int, ...]) -> tuple[Node, Node | None] | None:
        """Follow ``path`` from here; returns (node, key node or None) or None if it is absent."""
        node, key = self, None
        for part in path:
            if node.kind == "map" and isinstance(part, str):
                for k, v in node.items:
                    if k.value == part:
                        node, key = v, k
                        break
                else:
                    return None
            elif node.kind == "seq" and isinstance(part, int) and 0 <= part < len(node.children):
                node, key = node.children[part], None
            else:
                return None
        return node, key

    def to_python(self) -> Any:
        """The plain value: dicts, lists, str, int, float, bool or None."""
        if self.kind == "map":
            return {k.value: v.to_python() for k, v in self.items}
        if self.kind == "seq":
            return [c.to_python() for c in self.children]
        return self.value

    def scalars(
        self, prefix: tuple[str | int, ...] = ()
    ) -> list[tuple[tuple[str | int, ...], Node]]:
        """Every scalar below this node with its path, in file order."""
        if self.kind == "scalar":
            return [(prefix, self)]
        out: list[tuple[tuple[str | int, ...], Node]] = []
        if self.kind == "map":
            for k, v in self.items:
                out.extend(v.scalars((*prefix, k.value)))
        else:
            for i, c in enumerate(self.children):
                out.extend(c.scalars((*prefix, i)))
        return out


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of character ``offset`` in ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _Fail(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        self.line, self.column, self.message = line, column, message


def _at(event: Any) -> tuple[int, int]:
    """1-based line and column where an event starts."""
    return event.start_mark.line + 1, event.start_mark.column + 1


def _end(event: Any) -> int:
    """Character offset where an event ends."""
    return int(event.end_mark.index)


def _scalar_value(event: Any) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = _resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
    if tag == "tag:yaml.org,2002:merge":
        raise _Fail(*_at(event), "merge keys (<<) are not supported: write the keys out")
    if tag not in _SCALAR_TAGS:
        raise _Fail(*_at(event), f"the YAML tag {tag} is not supported here; remove it")
    if tag in (_STR, "tag:yaml.org,2002:timestamp"):
        # Timestamps stay text: agent files have no date fields; a surprise datetime helps no one.
        return event.value
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        return _constructor.yaml_constructors[tag](_constructor, node)
    except (
        ConstructorError,
        ValueError,
    ) as exc:  # pragma: no cover - resolver and constructor agree
        raise _Fail(*_at(event), str(exc)) from None


def _new(kind: str, event: Any) -> Node:
    m = event.start_mark
    return Node(kind, m.line + 1, m.column + 1, m.index, _end(event))


def compose(text: str, file: str) -> Node:
    """Parse one YAML document into a located node tree.

    Raises:
        ConfigError: with one Problem at the offending line: a syntax error, more than one
            document, a tag other than the standard scalar ones, a key that is not a string,
            a duplicate key, nesting deeper than MAX_DEPTH, or more than MAX_NODES nodes once
            aliases are counted (an alias bomb).
    """
    try:
        return _compose(text)
    except _Fail as f:
        raise ConfigError([Problem(file, f.line, f.column, "", f.message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        if "nesting depth" in (exc.problem or ""):
            # PyYAML ≥ 6.0.4 has a depth limit of its own, which its scanner can reach before
            # our reader sees the events: one message whichever limit trips first.
            raise ConfigError([Problem(file, line, col, "", _TOO_DEEP)]) from None
        what = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            what = f"{exc.context}, {exc.problem}"
        raise ConfigError([Problem(file, line, col, "", f"YAML syntax error: {what}")]) from None
    except yaml.reader.ReaderError as exc:  # control characters: located by offset, not mark
        line, column = line_col(text, exc.position)
        raise ConfigError(
            [
                Problem(
                    file,
                    line,
                    column,
                    "",
                    f"control character #x{exc.character:04x} is not allowed",
                )
            ]
        ) from None


def _compose(text: str) -> Node:
    stack: list[Node] = []
    pending_key: list[Node | None] = []
    open_anchors: list[str | None] = []
    anchors: dict[str, Node] = {}
    root: Node | None = None
    total = 0  # values counted with aliases expanded
    documents = 0

    def count(node: Node, n: int) -> None:
        nonlocal total
        total += n
        if total > MAX_NODES:
            raise _Fail(
                node.line,
                node.column,
                f"the document expands to more than {MAX_NODES} values "
                "(nested aliases? an agent file needs neither)",
            )

    def attach(node: Node, anchor: str | None) -> None:
        nonlocal root
        if anchor:
            anchors[anchor] = node
        if not stack:
            root = node
            return
        parent = stack[-1]
        if parent.kind == "seq":
            parent.children.append(node)
            parent.size += node.size
            return
        key = pending_key[-1]
        if key is None:
            if node.kind != "scalar" or not isinstance(node.value, str):
                raise _Fail(node.line, node.column, "a key must be a plain string")
            for k, _ in parent.items:
                if k.value == node.value:
                    raise _Fail(
                        node.line,
                        node.column,
                        f"duplicate key '{node.value}' (first at line {k.line}); keep one",
                    )
            pending_key[-1] = node
        else:
            parent.items.append((key, node))
            parent.size += node.size
            pending_key[-1] = None

    events: Iterator[Any] = yaml.parse(text, Loader=_Loader)
    for event in events:
        if isinstance(event, yaml.ScalarEvent):
            node = _new("scalar", event)
            node.value = _scalar_value(event)
            node.style = event.style or ""
            node.flow = bool(stack) and stack[-1].flow
            count(node, 1)
            attach(node, event.anchor)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            is_map = isinstance(event, yaml.MappingStartEvent)
            if event.tag not in (None, "!", _MAP_TAG if is_map else _SEQ_TAG):
                raise _Fail(*_at(event), f"the YAML tag {event.tag} is not supported")
            if len(stack) >= MAX_DEPTH:
                raise _Fail(*_at(event), _TOO_DEEP)
            node = _new("map" if is_map else "seq", event)
            node.flow = bool(event.flow_style) or (bool(stack) and stack[-1].flow)
            count(node, 1)
            stack.append(node)
            pending_key.append(None)
            open_anchors.append(event.anchor)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            node = stack.pop()
            pending_key.pop()
            node.end = _end(event)
            attach(node, open_anchors.pop())
        elif isinstance(event, yaml.AliasEvent):
            target = anchors.get(event.anchor or "")
            if target is None:  # pragma: no cover - libyaml rejects unknown aliases itself
                raise _Fail(*_at(event), f"unknown alias *{event.anchor}")
            count(target, target.size)
            attach(target, None)
        elif isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _Fail(*_at(event), "a second YAML document; one agent per file")
    if root is None:
        return Node("map", 0, 0, 0, 0)
    return root
