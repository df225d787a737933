"""What an agent remembers of the person it answers, as a part of its system message."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_NOTES", "notes"]

MAX_NOTES = 2000
"""Characters of recalled facts in one system message, at most: recall never crowds out the
conversation."""


def notes(facts: Sequence[str]) -> str:
    """The facts remembered about the person asking, as a few lines for the system message
    ("" for none), cut at :data:`MAX_NOTES`."""
    lines: list[str] = []
    size = 0
    for fact in facts:
        size += len(fact) + 3
        if size > MAX_NOTES:
            break
        lines.append(f"- {fact}")
    if not lines:
        return ""
    return (
        "What you remember about the person asking, from earlier conversations (it may be out "
        "of date; use it where it helps, without reciting it):\n" + "\n".join(lines)
    )
