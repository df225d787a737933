"""Discord's voice packets: RTP with the ``*_rtpsize`` transport encryption.

An encrypted packet, as Discord sends and expects it::

    RTP header (12 bytes + 4 per CSRC) [+ extension preamble BE DE, length in words]   ← AAD
    AEAD(extension body ‖ payload [‖ RTP padding]) ‖ tag (16 bytes)
    nonce counter (4 bytes, big-endian; not in the AAD)

The nonce fed to the cipher is the counter zero-padded to the cipher's size (24 bytes for
XChaCha20-Poly1305, 12 for AES-256-GCM). The extension *body* is encrypted with the payload,
so it is stripped after decrypting. Ciphers come from PyNaCl and cryptography.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "AES_GCM",
    "MODES",
    "SILENCE",
    "XCHACHA",
    "Packet",
    "Transport",
    "TransportError",
    "is_rtcp",
]

AES_GCM = "aead_aes256_gcm_rtpsize"
XCHACHA = "aead_xchacha20_poly1305_rtpsize"
MODES = (AES_GCM, XCHACHA)
"""The transport modes voxbridge speaks, preferred first (Discord's own order)."""
SILENCE = b"\xf8\xff\xfe"
"""The Opus frame Discord clients send (five of them) when a speaker stops."""

_HEADER = struct.Struct(">BBHII")
_TAG = 16
_COUNTER = 4


class TransportError(ValueError):
    """A datagram that is not a voice packet of this session (forged, stale key, truncated)."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One received RTP packet, decrypted: the payload is Opus, or a DAVE frame around it."""

    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


class Transport:
    """The transport cipher of one voice session (its key comes in SESSION_DESCRIPTION)."""

    def __init__(self, mode: str, key: bytes) -> None:
        if mode == AES_GCM:
            self._gcm: AESGCM | None = AESGCM(key)
        elif mode == XCHACHA:
            self._gcm = None
            self._box = nacl.secret.Aead(key)
        else:
            raise ValueError(f"unsupported voice transport mode {mode!r}")
        self.mode = mode

    def _seal(self, counter: bytes, data: bytes, aad: bytes) -> bytes:
        if self._gcm is not None:
            return self._gcm.encrypt(counter + bytes(8), data, aad)
        sealed: bytes = self._box.encrypt(data, aad, counter + bytes(20)).ciphertext
        return sealed

    def _open(self, counter: bytes, data: bytes, aad: bytes) -> bytes:
        if self._gcm is not None:
            return self._gcm.decrypt(counter + bytes(8), data, aad)
        plain: bytes = self._box.decrypt(data, aad, counter + bytes(20))
        return plain

    def seal(self, header: bytes, payload: bytes, counter: int) -> bytes:
        """The packet for ``header`` (12 bytes, no extension) and ``payload``."""
        nonce = struct.pack(">I", counter & 0xFFFF_FFFF)
        return header + self._seal(nonce, payload, header) + nonce

    def open(self, datagram: bytes) -> Packet:
        """Decrypt a received RTP packet.

        Raises:
            TransportError: it is not one (too short, not RTP v2, or it fails authentication).
        """
        if len(datagram) < _HEADER.size + _TAG + _COUNTER:
            raise TransportError("too short for a voice packet")
        first, _, sequence, timestamp, ssrc = _HEADER.unpack_from(datagram)
        if first >> 6 != 2:
            raise TransportError("not RTP version 2")
        aad_end = _HEADER.size + 4 * (first & 0x0F)
        extension_words = 0
        if first & 0x10:
            if len(datagram) < aad_end + 4 + _TAG + _COUNTER:
                raise TransportError("truncated header extension")
            (extension_words,) = struct.unpack_from(">H", datagram, aad_end + 2)
            aad_end += 4
        try:
            plain = self._open(
                datagram[-_COUNTER:], datagram[aad_end:-_COUNTER], datagram[:aad_end]
            )
        except (InvalidTag, nacl.exceptions.CryptoError):
            raise TransportError("authentication failed (a stale key or a forged packet)") from None
        if first & 0x20 and plain:  # RTP padding: the last byte counts it
            plain = plain[: -plain[-1]]
        return Packet(sequence, timestamp, ssrc, plain[4 * extension_words :])


def is_rtcp(datagram: bytes) -> bool:
    """Whether a datagram is RTCP (sender/receiver reports), which voxbridge ignores."""
    return len(datagram) >= 2 and 200 <= datagram[1] <= 204
