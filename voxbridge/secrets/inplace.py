"""Secret values rewritten inside agent file text: encrypt, reveal, re-seal, re-encrypt.

Each function takes the file's text and returns new text in which only secret values changed
(see :mod:`~voxbridge.config.yamledit`), so a git diff shows exactly those lines.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ..config.nodes import Node, compose
from ..config.schema import agent_schema, secret_paths
from ..config.yamledit import as_scalar, replace_scalars, token_scalar
from ..errors import ConfigError, DecryptError, Problem, UsageError
from .crypto import is_token, open_token, seal
from .keys import Keyring, PublicKey

__all__ = ["Revealed", "encrypt_text", "reencrypt_text", "reseal_text", "reveal_text"]

FieldPath = tuple[str, ...]


def _dotted(path: FieldPath) -> str:
    return ".".join(path)


def _string_scalars(root: Node) -> list[tuple[FieldPath, Node]]:
    return [
        (tuple(str(p) for p in path), node)
        for path, node in root.scalars()
        if isinstance(node.value, str)
    ]


def encrypt_text(
    text: str, file: str, public: PublicKey, fields: Collection[FieldPath] = ()
) -> tuple[str, int]:
    """Seal every plaintext value in a secret field, plus the extra ``fields``.

    Values already encrypted are left as they are, so running it twice changes nothing.
    Returns the new text and how many values were sealed.

    Raises:
        ConfigError: the text is not YAML voxbridge can read.
        UsageError: an extra field is absent or not a string.
    """
    root = compose(text, file)
    scalars = _string_scalars(root)
    present = {path for path, _ in scalars}
    for extra in fields:
        if extra not in present:
            raise UsageError(f"{file}: no string value at {_dotted(extra)}")
        if extra == ("name",):
            raise UsageError(f"{file}: the name cannot be encrypted: it is shown to Discord users")
    wanted = secret_paths(agent_schema()) | set(fields)
    edits = [
        (node, token_scalar(seal(node.value, public.key, _dotted(path)), node))
        for path, node in scalars
        if path in wanted and not is_token(node.value)
    ]
    return replace_scalars(text, edits), len(edits)


@dataclass(frozen=True)
class Revealed:
    """A decrypted copy of a file's text and, by field path, what each token held."""

    text: str
    opened: Mapping[FieldPath, tuple[str, str]]  # path -> (plaintext, original token)


def _open_all(root: Node, file: str, keyring: Keyring) -> dict[FieldPath, tuple[Node, str]]:
    opened: dict[FieldPath, tuple[Node, str]] = {}
    problems = []
    for path, node in _string_scalars(root):
        if not is_token(node.value):
            continue
        try:
            secret = open_token(node.value, dict(keyring.private), _dotted(path))
        except DecryptError as exc:
            problems.append(Problem(file, node.line, node.column, _dotted(path), str(exc)))
            continue
        opened[path] = (node, secret.reveal())
    if problems:
        raise ConfigError(problems)
    return opened


def reveal_text(text: str, file: str, keyring: Keyring) -> Revealed:
    """The text with every ENC value replaced by its plaintext (for ``decrypt`` and ``edit``).

    Raises:
        ConfigError: unreadable YAML, or values that do not open (each located).
    """
    opened = _open_all(compose(text, file), file, keyring)
    new = replace_scalars(text, [(node, as_scalar(plain, node)) for node, plain in opened.values()])
    return Revealed(new, {p: (plain, node.value) for p, (node, plain) in opened.items()})


def reseal_text(edited: str, file: str, public: PublicKey, before: Revealed) -> tuple[str, int]:
    """Seal an edited plaintext copy again: a value unchanged since :func:`reveal_text` gets its
    original token back (so it shows no diff), a changed or new one is sealed afresh.

    Returns the text and how many values were sealed afresh.

    Raises:
        ConfigError: the edited text is not YAML voxbridge can read.
    """
    root = compose(edited, file)
    wanted = secret_paths(agent_schema()) | set(before.opened)
    edits, fresh = [], 0
    for path, node in _string_scalars(root):
        if path not in wanted or is_token(node.value):
            continue
        old = before.opened.get(path)
        if old is not None and old[0] == node.value:
            token = old[1]
        else:
            token = seal(node.value, public.key, _dotted(path))
            fresh += 1
        edits.append((node, token_scalar(token, node)))
    return replace_scalars(edited, edits), fresh


def reencrypt_text(text: str, file: str, keyring: Keyring, public: PublicKey) -> tuple[str, int]:
    """Every ENC value opened and sealed again for ``public`` (key rotation); nothing else moves.

    Raises:
        ConfigError: unreadable YAML, or values that do not open with ``keyring``.
    """
    opened = _open_all(compose(text, file), file, keyring)
    edits = [
        (node, token_scalar(seal(plain, public.key, _dotted(path)), node))
        for path, (node, plain) in opened.items()
    ]
    return replace_scalars(text, edits), len(edits)
