"""What a plugin type is, and how installed ones are found.

A plugin type is a :class:`Plugin` object published under the ``voxbridge.plugins`` entry-point
group, so any installed package can add one::

    [project.entry-points."voxbridge.plugins"]
    slack = "voxbridge_slack:PLUGIN"

Its ``schema`` is the JSON Schema of its section in an agent file (``plugins.<name>``); voxbridge
adds the ``enabled`` switch. A property marked ``"x-secret": true`` is a secret: it must hold an
``ENC[...]`` value, and once decrypted it is a :class:`voxbridge.Secret`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "installed_plugins"]

ENTRY_POINT_GROUP = "voxbridge.plugins"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


# eq=False: plugins are singletons compared by identity, which also makes them hashable.
@dataclass(frozen=True, slots=True, eq=False)
class Plugin:
    """A plugin type: its name (the key under ``plugins:``), a one-line summary and the JSON
    Schema of its section (an object schema; ``enabled`` is added by voxbridge)."""

    name: str
    summary: str
    schema: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"plugin name {self.name!r} must match {_NAME.pattern}")


def _builtin() -> dict[str, Plugin]:
    from . import discord, n8n

    return {p.name: p for p in (discord.PLUGIN, n8n.PLUGIN)}


@functools.cache
def installed_plugins() -> Mapping[str, Plugin]:
    """Every plugin type: the built-in ones plus those published by installed packages.

    Entry points that fail to import or do not yield a Plugin are skipped; a broken third-party
    package must not take the built-in plugins down with it.
    """
    plugins = _builtin()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in plugins:
            continue
        try:
            obj = ep.load()
        except Exception:  # noqa: S112 - a broken plugin package is skipped, not fatal
            continue
        if isinstance(obj, Plugin) and obj.name == ep.name:
            plugins[obj.name] = obj
    return MappingProxyType(dict(sorted(plugins.items())))
