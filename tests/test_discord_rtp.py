"""Discord's voice packets: both rtpsize transport modes, header extensions, padding, forgeries,
and interoperation with disnake's own sender."""

from __future__ import annotations

import os
import struct

import nacl.secret
import pytest

from voxbridge.plugins.discord.rtp import (
    AES_GCM,
    MODES,
    XCHACHA,
    Packet,
    Transport,
    TransportError,
    is_rtcp,
)

KEY = os.urandom(32)


def _header(seq: int, *, extension_words: int = 0, padding: bool = False, csrcs: int = 0) -> bytes:
    first = 0x80 | (0x10 if extension_words else 0) | (0x20 if padding else 0) | csrcs
    header = struct.pack(">BBHII", first, 0x78, seq, seq * 960, 4242) + bytes(4 * csrcs)
    if extension_words:
        header += b"\xbe\xde" + struct.pack(">H", extension_words)
    return header


@pytest.mark.parametrize("mode", MODES)
def test_a_sealed_packet_opens_to_its_payload(mode: str) -> None:
    transport = Transport(mode, KEY)
    packet = transport.open(transport.seal(_header(7), b"opus frame", 1))
    assert packet == Packet(7, 7 * 960, 4242, b"opus frame")


@pytest.mark.parametrize("mode", MODES)
def test_the_encrypted_extension_body_and_padding_are_stripped(mode: str) -> None:
    transport = Transport(mode, KEY)
    header = _header(9, extension_words=2, padding=True, csrcs=1)
    body = b"\x10\x01\x22\x33\x44\x00\x00\x00"  # two one-byte elements, padded to words
    datagram = transport.seal(header, body + b"opus" + b"\x00\x00\x03", 2)
    assert transport.open(datagram).payload == b"opus"


@pytest.mark.parametrize("mode", MODES)
def test_forged_stale_or_short_packets_are_refused(mode: str) -> None:
    transport = Transport(mode, KEY)
    datagram = transport.seal(_header(3), b"opus frame", 5)
    flipped = bytearray(datagram)
    flipped[3] ^= 1  # the sequence number is authenticated (AAD)
    for bad in (bytes(flipped), datagram[:-1], datagram[:20]):
        with pytest.raises(TransportError):
            transport.open(bad)
    with pytest.raises(TransportError):
        Transport(mode, os.urandom(32)).open(datagram)  # another session's key


def test_disnakes_own_packets_open() -> None:
    """disnake seals XChaCha20 packets itself (voice_client.py); they must open here."""
    header = _header(11)
    counter = struct.pack(">I", 99)
    box = nacl.secret.Aead(KEY)
    datagram = header + box.encrypt(b"from disnake", header, counter + bytes(20)).ciphertext
    assert Transport(XCHACHA, KEY).open(datagram + counter).payload == b"from disnake"


def test_rtcp_is_told_apart_and_unknown_modes_refused() -> None:
    assert is_rtcp(b"\x81\xc9" + bytes(30))  # a receiver report
    assert not is_rtcp(_header(1))
    with pytest.raises(ValueError, match="xsalsa20_poly1305"):
        Transport("xsalsa20_poly1305", KEY)
    assert AES_GCM in MODES
