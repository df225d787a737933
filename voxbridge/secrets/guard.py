"""What must never be committed: private keys anywhere, plaintext in secret fields of agent files.

``voxbridge guard FILE...`` (the pre-commit hook) checks the files it is given and names each
offence with file:line and the command that fixes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..config.nodes import compose
from ..config.schema import agent_schema, secret_paths
from ..errors import ConfigError, Problem
from .crypto import is_token

__all__ = ["guard_files"]

_PRIVATE = b"PRIVATE KEY-----"


def guard_files(paths: Iterable[Path]) -> list[Problem]:
    """Every offence in ``paths``; an empty list means they are safe to commit."""
    problems = []
    secrets = secret_paths(agent_schema())
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue  # deleted in this commit, or not a file
        shown = str(path)
        if _PRIVATE in data:
            line = data[: data.index(_PRIVATE)].count(b"\n") + 1
            problems.append(
                Problem(
                    shown,
                    line,
                    1,
                    "",
                    "a private key: never commit it (keys/"
                    ".gitignore keeps *.key out; move it out of the repository)",
                )
            )
            continue
        if path.suffix not in (".yaml", ".yml"):
            continue
        try:
            root = compose(data.decode("utf-8", "replace"), shown)
        except ConfigError:
            continue  # not YAML voxbridge reads: `voxbridge check` says why; nothing to unseal
        for field, node in root.scalars():
            key = tuple(str(p) for p in field)
            if key in secrets and isinstance(node.value, str) and not is_token(node.value):
                problems.append(
                    Problem(
                        shown,
                        node.line,
                        node.column,
                        ".".join(key),
                        f"plaintext secret: run `voxbridge encrypt {shown}` before committing",
                    )
                )
    return problems
