"""The one JSON Schema of an agent file: the base shape plus each installed plugin's section.

``voxbridge schema`` prints it, editors validate with it (through the yaml-language-server
modeline), and the loader validates with it. Secret fields are the properties marked
``"x-secret": true``; :func:`secret_paths` lists them.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Mapping
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator

from ..plugins.api import Plugin, installed_plugins

__all__ = ["FieldPaths", "agent_schema", "secret_paths", "validator"]

Path_ = tuple[str, ...]


def _plugin_section(plugin: Plugin) -> dict[str, Any]:
    section = copy.deepcopy(dict(plugin.schema))
    section.setdefault("type", "object")
    section.setdefault("description", plugin.summary)
    props = section.setdefault("properties", {})
    props["enabled"] = {
        "description": "Run this plugin. Default: true.",
        "type": "boolean",
    }
    # Required fields only bind an enabled plugin: `enabled: false` may leave them out.
    required = section.pop("required", [])
    if required:
        section["if"] = {"properties": {"enabled": {"const": False}}, "required": ["enabled"]}
        section["else"] = {"required": list(required)}
    return section


@functools.cache
def _schema(plugins: tuple[Plugin, ...]) -> dict[str, Any]:
    text = files("voxbridge.config").joinpath("agent.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    schema["properties"]["plugins"]["properties"] = {p.name: _plugin_section(p) for p in plugins}
    return schema


def agent_schema(plugins: Mapping[str, Plugin] | None = None) -> dict[str, Any]:
    """The JSON Schema of an agent file with the given (default: installed) plugin types.

    The result is shared: treat it as read-only.
    """
    chosen = installed_plugins() if plugins is None else plugins
    return _schema(tuple(chosen.values()))


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """The schema with every local ``#/$defs/...`` reference replaced by its target."""
    if isinstance(node, list):
        return [_inline_refs(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        # The definition's description says what a value must look like; error messages use it.
        expected = target.get("x-expected") or target.get("description", "")
        out = {**target, **out, "x-expected": expected}
    return out


@functools.cache
def _validator(plugins: tuple[Plugin, ...]) -> Draft202012Validator:
    # Reference lookups were a fifth of validation time; the inlined copy validates the same.
    schema = _schema(plugins)
    return Draft202012Validator(_inline_refs(schema, schema.get("$defs", {})))


def validator(plugins: Mapping[str, Plugin] | None = None) -> Draft202012Validator:
    """A compiled validator for :func:`agent_schema`."""
    chosen = installed_plugins() if plugins is None else plugins
    return _validator(tuple(chosen.values()))


class FieldPaths(frozenset[Path_]):
    """Field paths, where ``*`` in a path stands for any key (``tools.*.env.*``): ``in`` matches
    a concrete path against them."""

    __slots__ = ()

    def __contains__(self, path: object) -> bool:
        if frozenset.__contains__(self, path):
            return True
        if not isinstance(path, tuple):
            return False
        return any(
            len(pattern) == len(path)
            and all(p in ("*", k) for p, k in zip(pattern, path, strict=True))
            for pattern in self
            if "*" in pattern
        )

    def __or__(self, other: Iterable[Path_]) -> FieldPaths:  # type: ignore[override]
        return FieldPaths(frozenset.union(self, other))


def secret_paths(schema: Mapping[str, Any]) -> FieldPaths:
    """The dotted paths of every property marked ``"x-secret": true`` (objects only); a value of
    a free-form mapping (``additionalProperties``) is ``*`` in the path."""
    found: set[Path_] = set()
    defs = schema.get("$defs", {})

    def walk(node: Mapping[str, Any], path: Path_) -> None:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node = {**defs[ref.removeprefix("#/$defs/")], **node}
        if node.get("x-secret"):
            found.add(path)
        for name, sub in node.get("properties", {}).items():
            walk(sub, (*path, name))
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping):
            walk(extra, (*path, "*"))

    walk(schema, ())
    return FieldPaths(found)
