"""Exponential backoff with jitter, the shape of Kubernetes' CrashLoopBackOff with a faster start.

The n-th consecutive failure waits ``initial * factor**(n-1)`` capped at ``max``, then jittered
down by up to 10% so that actors that crashed together (a network blip) do not retry in lockstep.
Staying healthy for ``reset_after`` forgives past failures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..config.model import RestartPolicy

__all__ = ["JITTER", "Backoff"]

JITTER = 0.1


@dataclass
class Backoff:
    """The retry delays of one actor under ``policy``."""

    policy: RestartPolicy
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """Seconds to wait after one more failure."""
        self.failures += 1
        p = self.policy
        # Cap the exponent so a long crash loop does not overflow a float.
        base = min(p.max, p.initial * p.factor ** min(self.failures - 1, 64))
        return base * (1 - JITTER * self.rng.random())

    def healthy_for(self, seconds: float) -> None:
        """Forget past failures if the actor ran well for at least ``reset_after``."""
        if seconds >= self.policy.reset_after:
            self.failures = 0
