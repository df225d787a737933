"""Durations as people write them in agent files: ``500ms``, ``30s``, ``5m``, ``1h``, ``90d`` or
seconds."""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$")


def parse_duration(value: str | float) -> float:
    """Seconds in ``value``.

    Raises:
        ValueError: not a duration (the schema rejects these before they get here).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(f"not a duration: {value!r} (write 500ms, 30s, 5m, 1h or 90d)")
    return float(m.group(1)) * _UNITS[m.group(2)]
