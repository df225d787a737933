"""Sealing single values with HPKE (RFC 9180) and the ``ENC[...]`` token that carries them.

A token is ``ENC[<scheme>,<key id>,<payload>]``: the scheme names the HPKE suite, the key id says
which private key opens it, the payload is base64url (no padding) of HPKE's enc ‖ ciphertext.
The field path (``plugins.discord.bot_token``) goes into HPKE's ``info``, so a token moved to
another field no longer opens: the path is authenticated, not stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import DecryptError

__all__ = [
    "SCHEME",
    "Secret",
    "Token",
    "is_token",
    "key_id",
    "open_token",
    "parse_token",
    "seal",
]

SCHEME = "hpke1"  # DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_INFO_PREFIX = b"voxbridge/v1 field="
_TOKEN = re.compile(r"^ENC\[([a-z0-9-]+),([0-9a-f]{8}),([A-Za-z0-9_-]+)\]$")


class Secret:
    """A decrypted value that will not show itself by accident.

    ``str()``, ``repr()`` and formatting give ``[secret]``; :meth:`reveal` gives the value.
    Equality compares values in constant time, so configurations can be diffed without revealing.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plaintext. Call it only where the value is handed to the thing that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('[secret]')"

    def __str__(self) -> str:
        return "[secret]"

    def __format__(self, spec: str) -> str:
        return "[secret]"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode()).digest())

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed ``ENC[...]`` value."""

    scheme: str
    key_id: str
    payload: str


def key_id(public_key: X25519PublicKey) -> str:
    """Eight hex digits naming a key pair: the start of SHA-256 of the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:8]


def _info(field: str) -> bytes:
    return _INFO_PREFIX + field.encode()


def is_token(value: object) -> bool:
    """Whether ``value`` looks like an ENC token (well-formed or not)."""
    return isinstance(value, str) and value.startswith("ENC[")


def parse_token(value: str) -> Token:
    """Split a token into its parts.

    Raises:
        DecryptError: the value starts like a token but is not one (truncated, say).
    """
    m = _TOKEN.match(value)
    if not m:
        raise DecryptError(
            "malformed ENC value (truncated or hand-edited?): expected ENC[scheme,keyid,payload]"
        )
    return Token(*m.groups())


def seal(plaintext: str, public_key: X25519PublicKey, field: str) -> str:
    """Encrypt ``plaintext`` for ``public_key``, bound to ``field``; returns the token text."""
    blob = _SUITE.encrypt(plaintext.encode(), public_key, _info(field))
    payload = base64.urlsafe_b64encode(blob).rstrip(b"=").decode()
    return f"ENC[{SCHEME},{key_id(public_key)},{payload}]"


def open_token(token: str, private_keys: dict[str, X25519PrivateKey], field: str) -> Secret:
    """Decrypt a token sealed for ``field`` with one of ``private_keys`` (by key id).

    Raises:
        DecryptError: malformed token, unknown scheme, no private key with that id, or the
            value does not open (altered, truncated, or sealed for another field).
    """
    parsed = parse_token(token)
    if parsed.scheme != SCHEME:
        raise DecryptError(
            f"unknown encryption scheme '{parsed.scheme}' (this voxbridge knows {SCHEME})"
        )
    key = private_keys.get(parsed.key_id)
    if key is None:
        held = ", ".join(sorted(private_keys)) or "none"
        raise DecryptError(
            f"no private key with id {parsed.key_id} on this host (held: {held}); add its .key "
            "file to keys/ or set VOXBRIDGE_KEY_FILE"
        )
    try:
        blob = base64.urlsafe_b64decode(parsed.payload + "=" * (-len(parsed.payload) % 4))
        if base64.urlsafe_b64encode(blob).rstrip(b"=").decode() != parsed.payload:
            raise ValueError("non-canonical base64: a character of the payload was changed")
        return Secret(_SUITE.decrypt(blob, key, _info(field)).decode())
    except (InvalidTag, ValueError, binascii.Error, UnicodeDecodeError):
        raise DecryptError(
            "does not decrypt: the value was altered or truncated, or was encrypted for another "
            "field; encrypt it again here (voxbridge edit)"
        ) from None
