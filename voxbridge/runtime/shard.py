"""Which replica owns which agent: rendezvous (highest random weight) hashing on the agent id.

Every replica computes the same owner for an agent without talking to the others, each agent
has exactly one owner, and going from N to N+1 replicas moves only the agents the new replica
wins: about 1/(N+1) of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

__all__ = ["Shard"]

_SHARD = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True, slots=True)
class Shard:
    """Replica ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with 0 ≤ I < N.

        Raises:
            ValueError: anything else (the message says what is expected).
        """
        m = _SHARD.match(text.strip())
        if not m or not int(m.group(1)) < int(m.group(2)):
            raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, such as 0/3")
        return cls(int(m.group(1)), int(m.group(2)))

    def owner(self, agent_id: str) -> int:
        """The replica that owns ``agent_id``."""
        return max(range(self.count), key=lambda r: _weight(r, agent_id))

    def owns(self, agent_id: str) -> bool:
        return self.count == 1 or self.owner(agent_id) == self.index


def _weight(replica: int, agent_id: str) -> bytes:
    return hashlib.blake2b(f"{replica}\0{agent_id}".encode(), digest_size=8).digest()
