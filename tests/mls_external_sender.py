"""The voice gateway's part in DAVE's MLS group: an MLS (RFC 9420) *external sender*.

In DAVE v1 every call is one MLS group whose only external sender is Discord's voice gateway:
it announces itself (op 25), proposes Add/Remove for the members (op 27), and relays the first
commit it gets (op 28) to the members (op 29) and the welcome to the newcomers (op 30). Neither
libdave (dave.py, what disnake uses) nor davey can play that role, so this is a small pure-Python
one, on ``cryptography`` only, covering exactly what DAVE v1 needs:

- ciphersuite 2 (DHKEMP256_AES128GCM_SHA256_P256), so ECDSA P-256 / SHA-256 signatures;
- proposals framed as PublicMessage from an external sender: no membership tag, and no
  GroupContext in the signed content (RFC 9420 §6.1);
- a structural parse of op 28 (a commit MLSMessage followed by an optional raw Welcome).

Everything is the MLS "TLS presentation language": big-endian integers and vectors prefixed by
an RFC 9420 §2.1.2 variable-length size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["ExternalSender", "commit_epoch", "split_commit_welcome"]

MLS10 = 1
WIRE_PUBLIC, WIRE_WELCOME = 1, 3
SENDER_MEMBER, SENDER_EXTERNAL = 1, 2
CONTENT_PROPOSAL, CONTENT_COMMIT = 2, 3
PROPOSAL_ADD, PROPOSAL_REMOVE = 1, 3
CREDENTIAL_BASIC = 1
CIPHERSUITE_DAVE_V1 = 2
LEAF_SOURCE_KEY_PACKAGE, LEAF_SOURCE_COMMIT = 1, 3
OP_APPEND, OP_REVOKE = 0, 1
"""op 27's operation type: append proposals, or revoke earlier ones by reference."""


# -- the TLS/MLS codec ---------------------------------------------------------------------


def varint(n: int) -> bytes:
    """The RFC 9420 §2.1.2 size prefix: 1, 2 or 4 bytes, the top two bits saying which."""
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return struct.pack(">H", 0x4000 | n)
    if n < 1 << 30:
        return struct.pack(">I", 0x8000_0000 | n)
    raise ValueError(f"vector of {n} bytes is too long for MLS")


def opaque(data: bytes) -> bytes:
    """``opaque data<V>``: a size-prefixed byte vector."""
    return varint(len(data)) + data


def read_varint(buf: bytes, offset: int) -> tuple[int, int]:
    """The size at ``offset`` and the offset after it."""
    prefix = buf[offset] >> 6
    if prefix == 0:
        return buf[offset], offset + 1
    if prefix == 1:
        return struct.unpack_from(">H", buf, offset)[0] & 0x3FFF, offset + 2
    if prefix == 2:
        return struct.unpack_from(">I", buf, offset)[0] & 0x3FFF_FFFF, offset + 4
    raise ValueError("invalid MLS varint prefix")


def read_opaque(buf: bytes, offset: int) -> tuple[bytes, int]:
    """The vector at ``offset`` and the offset after it."""
    n, offset = read_varint(buf, offset)
    if offset + n > len(buf):
        raise ValueError("MLS vector overruns the buffer")
    return buf[offset : offset + n], offset + n


def _sign_with_label(key: ec.EllipticCurvePrivateKey, label: str, content: bytes) -> bytes:
    """RFC 9420 §5.1.2 SignWithLabel; DER-encoded ECDSA, which is what mlspp and OpenMLS verify."""
    sign_content = opaque(b"MLS 1.0 " + label.encode()) + opaque(content)
    return key.sign(sign_content, ec.ECDSA(hashes.SHA256()))


# -- the external sender -------------------------------------------------------------------


@dataclass
class ExternalSender:
    """The voice gateway's signing identity for one call (one MLS group)."""

    group_id: int
    """DAVE's group id: the voice channel id."""
    key: ec.EllipticCurvePrivateKey
    identity: bytes = b"\x00\x01\x01\x00"
    """The basic credential's identity; clients do not check it (libdave's test helper's)."""
    sender_index: int = 0
    """Our index in the group's external_senders extension, which holds only us."""

    @classmethod
    def generate(cls, group_id: int) -> ExternalSender:
        return cls(group_id, ec.generate_private_key(ec.SECP256R1()))

    def marshal(self) -> bytes:
        """The payload of op 25: ``ExternalSender{signature_key<V>, Credential}``."""
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        credential = struct.pack(">H", CREDENTIAL_BASIC) + opaque(self.identity)
        return opaque(public) + credential

    def propose_add(self, epoch: int, key_package: bytes) -> bytes:
        """An Add proposal (an MLSMessage) for the raw KeyPackage a client sent in op 26;
        ``epoch`` must be the members' current epoch (0 for a group not yet created)."""
        return self._proposal(epoch, struct.pack(">H", PROPOSAL_ADD) + key_package)

    def propose_remove(self, epoch: int, leaf_index: int) -> bytes:
        """A Remove proposal for the member at ``leaf_index`` of the ratchet tree."""
        return self._proposal(epoch, struct.pack(">HI", PROPOSAL_REMOVE, leaf_index))

    @staticmethod
    def proposals_append(messages: list[bytes]) -> bytes:
        """The payload of op 27: the operation type, then ``MLSMessage proposal_messages<V>``.
        libdave takes all of it; davey takes the type apart and the rest (``[1:]``)."""
        return bytes([OP_APPEND]) + opaque(b"".join(messages))

    def _proposal(self, epoch: int, proposal: bytes) -> bytes:
        framed_content = (
            opaque(self.group_id.to_bytes(8, "big"))  # libdave: BigEndianBytesFrom(groupId)
            + struct.pack(">Q", epoch)
            + struct.pack(">BI", SENDER_EXTERNAL, self.sender_index)
            + opaque(b"")  # authenticated_data
            + bytes([CONTENT_PROPOSAL])
            + proposal
        )
        header = struct.pack(">HH", MLS10, WIRE_PUBLIC)
        # FramedContentTBS for an external sender has no GroupContext
        signature = _sign_with_label(self.key, "FramedContentTBS", header + framed_content)
        # PublicMessage{content, auth{signature}}; external senders carry no membership tag
        return header + framed_content + opaque(signature)


# -- op 28 ---------------------------------------------------------------------------------


def split_commit_welcome(data: bytes) -> tuple[bytes, bytes | None]:
    """Split op 28's payload into the commit MLSMessage (for op 29) and the Welcome, if any
    (for op 30), as libdave's test ExternalSender::SplitCommitWelcome does.

    The commit's length comes from parsing it; should that fail (a structure this parser does
    not know), the split falls back to the unique suffix that parses as a Welcome.
    """
    try:
        end = _public_commit_length(data)
    except (AssertionError, IndexError, ValueError, struct.error):
        end = next((n for n in range(len(data) - 1, 0, -1) if _is_welcome(data, n)), len(data))
    commit, rest = data[:end], data[end:]
    if not rest:
        return commit, None
    # libdave and davey write a raw Welcome; strip an MLSMessage wrapper should one come
    if rest[:4] == struct.pack(">HH", MLS10, WIRE_WELCOME) and _is_welcome(rest, 4):
        rest = rest[4:]
    return commit, rest


def commit_epoch(commit: bytes) -> int:
    """The epoch a commit MLSMessage was made in (the members' epoch before it applies)."""
    _, offset = read_opaque(commit, 4)  # after version and wire format: group_id
    return int(struct.unpack_from(">Q", commit, offset)[0])


def _is_welcome(buf: bytes, offset: int) -> bool:
    """Whether ``buf[offset:]`` is exactly a Welcome: cipher suite u16,
    EncryptedGroupSecrets secrets<V>, opaque encrypted_group_info<V>."""
    try:
        if buf[offset : offset + 2] != struct.pack(">H", CIPHERSUITE_DAVE_V1):
            return False
        _, end = read_opaque(buf, offset + 2)
        _, end = read_opaque(buf, end)
    except (IndexError, ValueError):
        return False
    return end == len(buf)


def _public_commit_length(buf: bytes) -> int:
    """The length of the PublicMessage commit MLSMessage at the start of ``buf``: just enough
    of FramedContent(commit), its auth data and membership tag to skip over it."""
    version, wire_format = struct.unpack_from(">HH", buf, 0)
    assert (version, wire_format) == (MLS10, WIRE_PUBLIC), (version, wire_format)
    _, offset = read_opaque(buf, 4)  # group_id
    offset += 8  # epoch
    sender_type = buf[offset]
    offset += 1
    if sender_type in (SENDER_MEMBER, SENDER_EXTERNAL):
        offset += 4  # leaf or sender index
    _, offset = read_opaque(buf, offset)  # authenticated_data
    assert buf[offset] == CONTENT_COMMIT, buf[offset]
    _, offset = read_opaque(buf, offset + 1)  # proposals<V>, skipped whole
    has_path = buf[offset]
    offset += 1
    if has_path:
        offset = _leaf_node_end(buf, offset)
        _, offset = read_opaque(buf, offset)  # UpdatePathNode nodes<V>
    _, offset = read_opaque(buf, offset)  # signature
    _, offset = read_opaque(buf, offset)  # confirmation_tag (commits have one)
    if sender_type == SENDER_MEMBER:
        _, offset = read_opaque(buf, offset)  # membership_tag
    return offset


def _leaf_node_end(buf: bytes, offset: int) -> int:
    _, offset = read_opaque(buf, offset)  # encryption_key
    _, offset = read_opaque(buf, offset)  # signature_key
    (credential_type,) = struct.unpack_from(">H", buf, offset)
    assert credential_type == CREDENTIAL_BASIC, credential_type
    _, offset = read_opaque(buf, offset + 2)  # identity
    for _ in range(5):  # capabilities: versions, cipher suites, extensions, proposals, creds
        _, offset = read_opaque(buf, offset)
    source = buf[offset]
    offset += 1
    if source == LEAF_SOURCE_KEY_PACKAGE:
        offset += 16  # lifetime: not_before, not_after
    elif source == LEAF_SOURCE_COMMIT:
        _, offset = read_opaque(buf, offset)  # parent_hash
    _, offset = read_opaque(buf, offset)  # extensions
    _, offset = read_opaque(buf, offset)  # signature
    return offset
