"""Key pairs on disk and private keys from the environment.

``keys/<name>.pub`` is committed, ``keys/<name>.key`` never is: both are standard PEM
(``openssl pkey`` reads them). Private keys are gathered from the keys directory,
``VOXBRIDGE_KEY_FILE`` (one path, or several separated by ``:``), ``VOXBRIDGE_KEY`` (PEM text,
removed from the environment once read) and systemd's ``$CREDENTIALS_DIRECTORY``. Several may be
held at once, which is what makes rotation painless. New values are sealed for the *current*
public key: the one whose name sorts last (default names are timestamps, so: the newest).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import KeyPermissionError, KeysError
from .crypto import key_id

__all__ = [
    "Keyring",
    "PublicKey",
    "current_public_key",
    "default_key_name",
    "ensure_keys_dir",
    "generate_key_pair",
    "load_keyring",
    "public_keys",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_GITIGNORE = (
    "# Private keys never go into git; the public keys (*.pub) are meant to be committed.\n*.key\n"
)


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key found in the keys directory."""

    name: str
    key_id: str
    key: X25519PublicKey


@dataclass(frozen=True, slots=True)
class Keyring:
    """The private keys this host holds, by key id, with where each came from."""

    private: Mapping[str, X25519PrivateKey] = field(default_factory=dict)
    origin: Mapping[str, str] = field(default_factory=dict)


def default_key_name(now: dt.datetime | None = None) -> str:
    """``vb-YYYYMMDD-HHMMSS`` in UTC: names that sort in the order keys were made."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("vb-%Y%m%d-%H%M%S")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # the umask may have taken bits away from a .pub


def ensure_keys_dir(keys_dir: Path) -> None:
    """Create the keys directory (0700) with its .gitignore, if missing."""
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    gitignore = keys_dir / ".gitignore"
    if not gitignore.exists():
        gitignore.write_text(_GITIGNORE)


def generate_key_pair(
    keys_dir: Path, name: str | None = None, private: X25519PrivateKey | None = None
) -> PublicKey:
    """Write a key pair as ``<name>.key`` (0600) and ``<name>.pub`` in ``keys_dir``.

    A new key is made unless ``private`` is given (rotation makes it first, to seal with it
    before anything is written).

    Raises:
        KeysError: a bad name, or a key of that name exists already (never overwritten).
    """
    name = name or default_key_name()
    if not _NAME.match(name):
        raise KeysError(f"key name '{name}' must be letters, digits, '.', '_' or '-'")
    ensure_keys_dir(keys_dir)
    priv_path, pub_path = keys_dir / f"{name}.key", keys_dir / f"{name}.pub"
    if priv_path.exists() or pub_path.exists():
        raise KeysError(f"{pub_path} exists already; choose another --name")
    private = private or X25519PrivateKey.generate()
    public = private.public_key()
    _write_new(
        priv_path,
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write_new(
        pub_path,
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    return PublicKey(name, key_id(public), public)


def public_keys(keys_dir: Path) -> list[PublicKey]:
    """The public keys in ``keys_dir``, sorted by name.

    Raises:
        KeysError: a .pub file that is not an X25519 public key.
    """
    found = []
    for path in sorted(keys_dir.glob("*.pub")) if keys_dir.is_dir() else []:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, OSError) as exc:
            raise KeysError(f"{path}: not a PEM public key ({exc.__class__.__name__})") from None
        if not isinstance(key, X25519PublicKey):
            raise KeysError(f"{path}: not an X25519 public key")
        found.append(PublicKey(path.stem, key_id(key), key))
    return found


def current_public_key(keys_dir: Path) -> PublicKey:
    """The key new values are sealed for: the public key whose name sorts last.

    Raises:
        KeysError: there is none (with the command that makes one).
    """
    keys = public_keys(keys_dir)
    if not keys:
        raise KeysError(
            f"no public key in {keys_dir}/: run `voxbridge keys generate` (or `voxbridge init`)"
        )
    return keys[-1]


def _check_private_mode(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyPermissionError(
            f"{path}: permissions {mode:04o} are too open; a private key must be readable by "
            f"its owner only: chmod 600 {path}"
        )


def _parse_private(data: bytes, origin: str) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeysError(
            f"{origin}: not an unencrypted PEM private key ({exc.__class__.__name__})"
        ) from None
    if not isinstance(key, X25519PrivateKey):
        raise KeysError(f"{origin}: not an X25519 private key")
    return key


def _read_private_file(path: Path) -> X25519PrivateKey:
    try:
        _check_private_mode(path)
        data = path.read_bytes()
    except OSError as exc:
        raise KeysError(f"{path}: cannot read the private key: {exc.strerror}") from None
    return _parse_private(data, str(path))


def load_keyring(keys_dir: Path, environ: MutableMapping[str, str] | None = None) -> Keyring:
    """Gather every private key this host holds.

    ``VOXBRIDGE_KEY`` is removed from ``environ`` once read, so child processes never inherit it.

    Raises:
        KeyPermissionError: a private key file is readable by group or others.
        KeysError: a named key file is missing or not an X25519 PEM private key.
    """
    env = os.environ if environ is None else environ
    keys: dict[str, X25519PrivateKey] = {}
    origin: dict[str, str] = {}

    def add(key: X25519PrivateKey, where: str) -> None:
        kid = key_id(key.public_key())
        keys.setdefault(kid, key)
        origin.setdefault(kid, where)

    if keys_dir.is_dir():
        for path in sorted(keys_dir.glob("*.key")):
            add(_read_private_file(path), str(path))
    for item in filter(None, env.get("VOXBRIDGE_KEY_FILE", "").split(os.pathsep)):
        add(_read_private_file(Path(item)), item)
    text = env.pop("VOXBRIDGE_KEY", None)
    if text:
        add(_parse_private(text.encode(), "VOXBRIDGE_KEY"), "VOXBRIDGE_KEY")
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and Path(creds).is_dir():
        for path in sorted(Path(creds).iterdir()):
            if path.is_file() and b"PRIVATE KEY-----" in path.read_bytes()[:64]:
                add(_read_private_file(path), str(path))
    return Keyring(keys, origin)
