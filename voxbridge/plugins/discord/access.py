"""Who may talk to an agent's bot: ``allow`` and ``block`` (users, roles, channels) and ``dms``.

The rules, as llmcord's users know them:

- a person passes when neither ``allow.users`` nor ``allow.roles`` is set, or they are listed
  in ``allow.users``, or they have a role of ``allow.roles`` — and are not in ``block.users``
  and have no role of ``block.roles``;
- in a server, a place passes when ``allow.channels`` is not set, or the channel, the channel a
  thread belongs to, or the channel's category is listed — and none of them is in
  ``block.channels``;
- a DM passes when ``dms`` is true (the default). A DM carries no roles: a person allowed by
  a role alone is answered in the servers where they have it, not in DMs.

A refused message gets no answer and costs no LLM call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Access", "Where", "channel_ids"]


def _ids(section: Mapping[str, Any] | None, key: str) -> frozenset[int]:
    return frozenset(int(i) for i in (section or {}).get(key, ()))


@dataclass(frozen=True, slots=True)
class Where:
    """Where a message was said and by whom, as far as access cares: the author, their roles in
    the server, and the channel with the channels it belongs to (a thread's parent, a
    category); ``dm`` for a direct message."""

    user: int
    roles: frozenset[int]
    channels: frozenset[int]
    dm: bool


@dataclass(frozen=True, slots=True)
class Access:
    """The ``allow``/``block``/``dms`` settings of a discord section (see the module)."""

    allow_users: frozenset[int] = frozenset()
    allow_roles: frozenset[int] = frozenset()
    allow_channels: frozenset[int] = frozenset()
    block_users: frozenset[int] = frozenset()
    block_roles: frozenset[int] = frozenset()
    block_channels: frozenset[int] = frozenset()
    dms: bool = True

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Access:
        allow, block = settings.get("allow"), settings.get("block")
        return cls(
            _ids(allow, "users"),
            _ids(allow, "roles"),
            _ids(allow, "channels"),
            _ids(block, "users"),
            _ids(block, "roles"),
            _ids(block, "channels"),
            bool(settings.get("dms", True)),
        )

    @property
    def open(self) -> bool:
        """Whether everyone may talk everywhere (nothing to check)."""
        return self == Access()

    def refuses(self, where: Where) -> str | None:
        """Why a message is refused (``user``, ``role``, ``channel``, ``dm``), or None."""
        if where.dm and not self.dms:
            return "dm"
        if where.user in self.block_users:
            return "user"
        if where.roles & self.block_roles:
            return "role"
        if (self.allow_users or self.allow_roles) and not (
            where.user in self.allow_users or where.roles & self.allow_roles
        ):
            return "user"
        if not where.dm:
            if where.channels & self.block_channels:
                return "channel"
            if self.allow_channels and not where.channels & self.allow_channels:
                return "channel"
        return None


def channel_ids(*ids: int | None) -> frozenset[int]:
    """The ids that are not None (a channel, its parent, its category)."""
    return frozenset(i for i in ids if i is not None)
