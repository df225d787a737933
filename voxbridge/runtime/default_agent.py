"""Which agent answers where: the cached default agent and each guild's ``/agent select``.

The default follows the seed's rule — the agent saying ``default: true``, else the first agent
(by id) with discord enabled, else none — cached for a TTL (300 s) and cleared on every applied
change. A hit is one clock read and a comparison: it sits on every Discord message.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomicfile import write_atomic
from ..config.load import AgentIndex

__all__ = ["DefaultAgent", "Selections"]

log = logging.getLogger("voxbridge.default_agent")


@dataclass(frozen=True, slots=True)
class _Resolved:
    agent_id: str | None
    reason: str


class DefaultAgent:
    """The default agent id with a TTL cache over an :class:`AgentIndex`."""

    def __init__(
        self, index: AgentIndex, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._index = index
        self._ttl = ttl
        self._clock = clock
        self._id: str | None = None
        self._reason = "not resolved yet"
        self._expires = -math.inf
        self._resolved_at = -math.inf

    def get(self) -> str | None:
        """The default agent's id, from the cache while it is younger than the TTL."""
        if self._clock() < self._expires:
            return self._id
        return self._resolve()

    def invalidate(self) -> None:
        """Forget the cached answer (every applied change calls this)."""
        self._expires = -math.inf

    def info(self) -> dict[str, object]:
        """The cached answer, why it was chosen and how old it is (for the status API)."""
        agent_id = self.get()
        return {
            "agent": agent_id,
            "reason": self._reason,
            "cache_age_s": round(self._clock() - self._resolved_at, 3),
            "ttl_s": self._ttl,
        }

    def _resolve(self) -> str | None:
        flagged = self._index.flagged_default()
        if flagged is not None:
            found = _Resolved(flagged, "default: true")
        else:
            first = self._index.first_with_plugin("discord")
            found = (
                _Resolved(first, "first agent (by id) with discord enabled")
                if first is not None
                else _Resolved(None, "no agent says default: true or enables discord")
            )
        now = self._clock()
        if found.agent_id != self._id or self._resolved_at == -math.inf:
            log.info(
                "📌 Default agent: %s (%s)",
                found.agent_id or "none",
                found.reason,
                extra={"agent": found.agent_id},
            )
        self._id, self._reason = found.agent_id, found.reason
        self._resolved_at, self._expires = now, now + self._ttl
        return self._id


class Selections:
    """Per-guild ``/agent select`` choices, persisted atomically in the state directory."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._by_guild: dict[int, str] = {}
        try:
            raw = json.loads(path.read_text("utf-8"))
            self._by_guild = {int(k): str(v) for k, v in raw.get("guilds", {}).items()}
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, OSError) as exc:
            log.warning("⚠️ %s unreadable (%s); starting with no guild selections", path, exc)

    def get(self, guild_id: int) -> str | None:
        return self._by_guild.get(guild_id)

    def all(self) -> dict[int, str]:
        return dict(self._by_guild)

    def select(self, guild_id: int, agent_id: str) -> None:
        """Record a guild's choice and persist it (survives a restart)."""
        self._by_guild[guild_id] = agent_id
        self._path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {"guilds": {str(k): v for k, v in sorted(self._by_guild.items())}}, indent=2
        )
        write_atomic(self._path, text + "\n")
