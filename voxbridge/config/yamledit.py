"""Replace single scalar values in YAML text and leave every other byte alone.

This is what keeps ``voxbridge encrypt`` diffs to exactly the secret lines: values are swapped at
the character spans :mod:`~voxbridge.config.nodes` recorded, keeping each value's quoting style,
comments and layout, instead of dumping the document again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import yaml
from yaml.resolver import Resolver

from .nodes import Node

__all__ = ["as_scalar", "replace_scalars", "token_scalar"]

# Matched whole (fullmatch: with `$` a value ending in "\n" matched, and was written plain)
_SAFE_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./+=@:-]*")
_resolver: Any = Resolver()  # untyped in types-PyYAML


def _stays_text(value: str) -> bool:
    tag = _resolver.resolve(yaml.ScalarNode, value, (True, False))
    return tag == "tag:yaml.org,2002:str" and not value.endswith(":")


def as_scalar(value: str, node: Node) -> str:
    """YAML text for string ``value`` written where ``node`` stands: plain when the original was
    plain and the value reads back as the same string, double-quoted otherwise."""
    if node.style == "" and not node.flow and _SAFE_PLAIN.fullmatch(value) and _stays_text(value):
        return value
    return _double_quoted(value)


# Characters YAML does not allow raw in a stream, plus the ones YAML 1.1 reads as line breaks.
_UNPRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
    "|[\u2028\u2029]"
)


def _double_quoted(value: str) -> str:
    """A YAML double-quoted scalar for any string (JSON's escapes are valid YAML escapes)."""
    text = json.dumps(value, ensure_ascii=False)
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def token_scalar(token: str, node: Node) -> str:
    """YAML text for an ``ENC[...]`` token replacing ``node``, in the node's quoting style.

    A token is a valid plain scalar in block context; inside ``[...]``/``{...}`` its commas would
    split it, so there it is quoted.
    """
    if node.style == "'":
        return f"'{token}'"
    if node.style == '"' or node.flow:
        return f'"{token}"'
    return token


def replace_scalars(text: str, edits: Iterable[tuple[Node, str]]) -> str:
    """``text`` with each node's span replaced by the given YAML scalar text.

    A block scalar (``|``/``>``) spans its trailing line breaks; they are kept after the
    replacement so the next key stays on its own line.
    """
    out = text
    for node, new in sorted(edits, key=lambda e: e[0].start, reverse=True):
        old = text[node.start : node.end]
        if node.style in ("|", ">"):
            new += old[len(old.rstrip("\n")) :]
        out = out[: node.start] + new + out[node.end :]
    return out
