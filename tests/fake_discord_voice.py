"""Discord's voice servers on 127.0.0.1, for tests driving disnake's real voice client.

:class:`FakeVoiceServer` is the media side of :class:`tests.fake_discord.FakeDiscord` (which owns
the voice *states* and tells this server who is where). It serves, from a Trio nursery:

- the voice gateway v8 over TLS (trio-websocket; disnake hard-codes ``wss://{endpoint}/?v=8``,
  so it cannot be plain ws). The certificate comes from a throwaway trustme CA whose PEM is
  :attr:`FakeVoiceServer.ca_file`. HELLO, IDENTIFY → READY, SELECT_PROTOCOL →
  SESSION_DESCRIPTION, heartbeats, RESUME (buffered messages replayed), every server message
  numbered (``seq`` in JSON, a u16 prefix on binary), every client message recorded;
- the voice UDP socket: IP discovery, the bots' RTP (transport-decrypted with the session key,
  DAVE-decrypted as a group member, Opus-decoded and recorded), and the humans' speech, sent
  to each bot in the channel as Discord's SFU forwards it;
- DAVE v1: the gateway's MLS external sender (:mod:`tests.mls_external_sender`) and the
  humans as davey members, with one group per voice channel that follows who is in the call.

Humans exist only here: they are davey sessions and RTP streams, not websocket clients.
"""

from __future__ import annotations

import array
import ctypes
import enum
import functools
import itertools
import json
import logging
import math
import os
import random
import ssl
import struct
import tempfile
import wave
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import davey
import disnake.opus
import nacl.exceptions
import nacl.secret
import numpy as np
import soxr
import trio
import trio_websocket
import trustme
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.mls_external_sender import ExternalSender, split_commit_welcome

__all__ = [
    "MODES",
    "RTP",
    "SILENCE",
    "FakeVoiceServer",
    "ReceivedPacket",
    "SafeDecoder",
    "SentFrame",
    "Transport",
    "VoiceMessage",
    "VoiceOp",
    "load_opus",
    "to_16k_mono",
]

_log = logging.getLogger(__name__)

MODES = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")
"""The transport modes READY offers, in Discord's order; the client takes the first it knows
(disnake knows only xchacha)."""
SILENCE = b"\xf8\xff\xfe"
"""Discord's Opus silence frame: ends a talk spurt, and DAVE leaves it unencrypted."""
DAVE_MAGIC = b"\xfa\xfa"
"""The last two bytes of every DAVE-encrypted frame."""
OPUS_PT = 0x78
RATE = 48_000
FRAME = 960
"""Samples per channel in Discord's 20 ms Opus frame."""
FRAME_S = 0.02
HEARTBEAT_INTERVAL_MS = 13_750
GROUP_CHANGE_LIMIT_S = 10.0
"""How long a DAVE group change waits for the bots' commit and transition-ready."""
RESUME_BUFFER = 1000
"""Messages kept for a RESUME to replay, per session."""


class VoiceOp(enum.IntEnum):
    """The voice gateway opcodes the fake speaks."""

    IDENTIFY = 0
    SELECT_PROTOCOL = 1
    READY = 2
    HEARTBEAT = 3
    SESSION_DESCRIPTION = 4
    SPEAKING = 5
    HEARTBEAT_ACK = 6
    RESUME = 7
    HELLO = 8
    RESUMED = 9
    CLIENTS_CONNECT = 11
    CLIENT_DISCONNECT = 13
    DAVE_PREPARE_TRANSITION = 21
    DAVE_EXECUTE_TRANSITION = 22
    DAVE_TRANSITION_READY = 23
    DAVE_MLS_PREPARE_EPOCH = 24
    DAVE_MLS_EXTERNAL_SENDER = 25
    DAVE_MLS_KEY_PACKAGE = 26
    DAVE_MLS_PROPOSALS = 27
    DAVE_MLS_COMMIT_WELCOME = 28
    DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION = 29
    DAVE_MLS_WELCOME = 30
    DAVE_MLS_INVALID_COMMIT_WELCOME = 31


SESSION_NO_LONGER_VALID = 4006
AUTHENTICATION_FAILED = 4004
UNKNOWN_ENCRYPTION_MODE = 4016
RESUMABLE = 4015
"""Voice server crashed: the only close code after which a client resumes."""


# -- RTP and Discord's transport encryption ------------------------------------------------


@dataclass(frozen=True)
class RTP:
    """One RTP packet, its payload in clear (the extension body stripped)."""

    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    """The Opus frame, or the DAVE frame wrapping it."""
    marker: bool = False
    ext: dict[int, bytes] = field(default_factory=dict)
    """RFC 8285 one-byte header extension elements (profile BEDE), id → data."""


class Transport:
    """Discord's ``*_rtpsize`` AEAD for one sender and key. The AAD is the RTP header *with*
    the 4-byte extension preamble; the extension body is encrypted with the payload; the nonce
    is a 4-byte big-endian counter appended to the packet, zero-padded for the cipher."""

    def __init__(self, mode: str, key: bytes) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown transport mode {mode!r}")
        self.mode, self.counter = mode, 0
        self._xchacha = mode.startswith("aead_xchacha")
        self._aead: nacl.secret.Aead | AESGCM = (
            nacl.secret.Aead(bytes(key)) if self._xchacha else AESGCM(bytes(key))
        )

    def _nonce(self, counter: bytes) -> bytes:
        return counter.ljust(24 if self._xchacha else 12, b"\x00")

    def encrypt(self, packet: RTP) -> bytes:
        body = _bede(packet.ext) if packet.ext else b""
        header = struct.pack(
            ">BBHII",
            0x80 | (0x10 if body else 0),
            (0x80 if packet.marker else 0) | OPUS_PT,
            packet.seq & 0xFFFF,
            packet.timestamp & 0xFFFF_FFFF,
            packet.ssrc,
        )
        if body:
            header += b"\xbe\xde" + struct.pack(">H", len(body) // 4)
        counter = struct.pack(">I", self.counter)
        self.counter = (self.counter + 1) & 0xFFFF_FFFF
        plain, nonce = body + packet.payload, self._nonce(counter)
        if isinstance(self._aead, AESGCM):
            sealed = self._aead.encrypt(nonce, plain, header)
        else:
            sealed = self._aead.encrypt(plain, header, nonce).ciphertext
        return header + sealed + counter

    def decrypt(self, data: bytes) -> RTP:
        """Raises ValueError for a packet that is not RTP or does not authenticate."""
        b0, b1, seq, timestamp, ssrc = struct.unpack_from(">BBHII", data)
        if b0 >> 6 != 2:
            raise ValueError("not RTP version 2")
        has_ext, padded = bool(b0 & 0x10), bool(b0 & 0x20)
        offset = 12 + 4 * (b0 & 0x0F)
        profile, words = b"", 0
        if has_ext:
            profile = data[offset : offset + 2]
            (words,) = struct.unpack_from(">H", data, offset + 2)
            offset += 4  # only the preamble is AAD; the body is encrypted
        aad, sealed, nonce = data[:offset], data[offset:-4], self._nonce(data[-4:])
        try:
            if isinstance(self._aead, AESGCM):
                plain = self._aead.decrypt(nonce, sealed, aad)
            else:
                plain = self._aead.decrypt(sealed, aad, nonce)
        except (InvalidTag, nacl.exceptions.CryptoError) as exc:
            raise ValueError("RTP packet does not authenticate") from exc
        if padded and plain:
            plain = plain[: -plain[-1]]
        body, payload = plain[: 4 * words], plain[4 * words :]
        ext = _parse_bede(body) if profile == b"\xbe\xde" else {}
        return RTP(seq, timestamp, ssrc, payload, bool(b1 & 0x80), ext)


def _bede(elements: dict[int, bytes]) -> bytes:
    body = b"".join(bytes([(i << 4) | (len(d) - 1)]) + d for i, d in elements.items())
    return body + b"\x00" * (-len(body) % 4)


def _parse_bede(body: bytes) -> dict[int, bytes]:
    """RFC 8285 one-byte elements: ``[id:4|len-1:4]`` then the data; 0 pads, id 15 stops."""
    elements, i = {}, 0
    while i < len(body):
        ident, size = body[i] >> 4, (body[i] & 0x0F) + 1
        if body[i] == 0:
            i += 1
            continue
        if ident == 15:
            break
        elements[ident] = body[i + 1 : i + 1 + size]
        i += 1 + size
    return elements


def _is_dave_frame(payload: bytes) -> bool:
    """The whitepaper's protocol frame check, as far as a recorder needs it: the magic marker
    and a supplemental-data size that fits in the frame."""
    return len(payload) > 3 and payload.endswith(DAVE_MAGIC) and 0 < payload[-3] < len(payload)


# -- Opus ----------------------------------------------------------------------------------


def load_opus() -> None:
    """Load the libopus bundled in PyAV's wheel into disnake, so no system libopus is needed
    (Linux wheels keep it in ``av.libs/``, macOS wheels in ``av/.dylibs/``)."""
    if disnake.opus.is_loaded():
        return
    import av  # only here: most tests never touch Opus

    package = Path(av.__file__).parent
    found = sorted(package.parent.glob("av.libs/libopus*.so*"))
    found += sorted(package.glob(".dylibs/libopus*.dylib"))
    if not found:
        raise RuntimeError(f"no libopus in PyAV's wheel at {package}")
    disnake.opus.load_opus(str(found[0]))


class SafeDecoder(disnake.opus.Decoder):
    """disnake's decoder sizes its buffer by the *packet's* channel count while a stereo decoder
    always writes two channels: a mono packet (Discord's silence frame is one) overflows the
    heap and glibc aborts. This one always allocates for stereo."""

    def decode(self, data: bytes | None, *, fec: bool = False) -> bytes:
        if data is None:
            samples = self._get_last_packet_duration() or self.SAMPLES_PER_FRAME
        else:
            samples = self.packet_get_nb_frames(data) * self.packet_get_samples_per_frame(data)
        pcm = (ctypes.c_int16 * (samples * self.CHANNELS))()
        decoded = disnake.opus._lib.opus_decode(
            self._state,
            data,
            len(data) if data else 0,
            ctypes.cast(pcm, disnake.opus.c_int16_ptr),
            samples,
            fec,
        )
        return array.array("h", pcm[: decoded * self.CHANNELS]).tobytes()


def to_48k_stereo(pcm: bytes, rate: int) -> bytes:
    """s16le mono at ``rate`` → s16le stereo at 48 kHz, Discord's (and disnake's) format."""
    mono = np.frombuffer(pcm, dtype="<i2")
    if rate != RATE:
        mono = soxr.resample(mono, rate, RATE)
    return np.repeat(mono.astype("<i2"), 2).tobytes()


def to_16k_mono(pcm: bytes) -> bytes:
    """s16le stereo at 48 kHz → s16le mono at 16 kHz (what speech recognition eats)."""
    stereo = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.int32)
    mono = (stereo.sum(axis=1) // 2).astype("<i2")
    return soxr.resample(mono, RATE, 16_000).astype("<i2").tobytes()


def _audio_level(pcm: bytes) -> int:
    """RFC 6464's level, -dBov 0..127, for the header extension element 1 Discord sends."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms = math.sqrt(float(np.mean(samples**2))) if len(samples) else 0.0
    return 127 if rms < 1 else min(127, round(-20 * math.log10(rms / 32768)))


# -- what tests observe --------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceMessage:
    """One voice gateway message, either way: JSON ``d``, or a binary message's payload after
    its opcode (and, from the server, after its sequence number)."""

    op: int
    d: Any
    at: float
    """``trio.current_time()`` when it was sent or received."""
    seq: int | None = None
    """The server's sequence number (None on client messages and unnumbered ones)."""


@dataclass(frozen=True)
class ReceivedPacket:
    """One RTP packet a bot sent, as the fake took it apart."""

    at: float
    seq: int
    timestamp: int
    ssrc: int
    opus: bytes | None
    """The Opus frame; None when it was DAVE-encrypted and no human could decrypt it."""
    e2ee: bool
    """It was a DAVE frame (ending in FA FA)."""
    pcm: bytes
    """The frame decoded: s16le stereo 48 kHz (empty when ``opus`` is None)."""


@dataclass(frozen=True)
class SentFrame:
    """One frame of a human's speech, as :meth:`FakeVoiceServer.speak` sent (or dropped) it."""

    seq: int
    timestamp: int
    opus: bytes
    """The Opus frame before DAVE."""
    payload: bytes
    """What went into RTP: the DAVE frame, or the Opus frame itself (silence, no DAVE)."""
    dropped: bool


class _HasUserId(Protocol):
    @property
    def user_id(self) -> int: ...


BotRef = int | _HasUserId
"""A bot: its user id, or anything with ``user_id`` (a ``fake_discord.BotAccount``)."""


# -- state ---------------------------------------------------------------------------------


class _Connection:
    """One voice websocket. Frames (text or bytes) and the final close code (int) queue in an
    outbox drained by one writer task, so messages from any Trio task keep their order."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self._outbox, self._pending = trio.open_memory_channel[str | bytes | int](math.inf)
        self.session: _Session | None = None
        self.sent: list[VoiceMessage] = []
        self.received: list[VoiceMessage] = []
        self.closed = trio.Event()

    def push(self, message: VoiceMessage, frame: str | bytes) -> None:
        self.sent.append(message)
        self._outbox.send_nowait(frame)

    def send(self, op: int, d: Any) -> None:
        """An unnumbered message for this connection only (not replayed on resume)."""
        self.push(VoiceMessage(op, d, trio.current_time()), json.dumps({"op": int(op), "d": d}))

    def close(self, code: int) -> None:
        self._outbox.send_nowait(code)

    async def write(self, done: trio.CancelScope) -> None:
        try:
            async for item in self._pending:
                if isinstance(item, int):
                    # aclose waits for the client's close frame; disnake may be slow to send it
                    with trio.move_on_after(2):
                        await self.ws.aclose(item)
                    done.cancel()
                    return
                await self.ws.send_message(item)
        except trio_websocket.ConnectionClosed:
            done.cancel()


@dataclass(frozen=True)
class _Grant:
    """A VOICE_SERVER_UPDATE the main gateway handed a bot: what its IDENTIFY must carry."""

    token: str
    user_id: int
    guild_id: int
    channel_id: int
    session_id: str


@dataclass
class _Bot:
    """What the fake keeps about a bot across its voice sessions and connections."""

    user_id: int
    session: _Session | None = None
    connections: list[_Connection] = field(default_factory=list)
    received: list[ReceivedPacket] = field(default_factory=list)
    udp_muted: bool = False
    transport_failures: int = 0


@dataclass
class _Session:
    """One bot's voice session: from IDENTIFY until it leaves; survives a resume."""

    grant: _Grant
    bot: _Bot
    ssrc: int
    max_dave: int
    key: bytes = field(default_factory=lambda: os.urandom(32))
    connection: _Connection | None = None
    seq: int = 0
    buffer: deque[tuple[int, VoiceMessage, str | bytes]] = field(
        default_factory=lambda: deque(maxlen=RESUME_BUFFER)
    )
    resumable: bool = True
    dropped: bool = False
    described: bool = False
    """SESSION_DESCRIPTION went out: it hears about clients joining and leaving."""
    dave_version: int = 0
    rx: Transport | None = None
    tx: Transport | None = None
    addr: tuple[str, int] | None = None
    decoder: SafeDecoder | None = None
    key_package: bytes | None = None
    commit_welcome: bytes | None = None
    ready_transitions: set[int] = field(default_factory=set)

    def _deliver(self, message: VoiceMessage, frame: str | bytes) -> None:
        self.buffer.append((self.seq, message, frame))
        if self.connection is not None:
            self.connection.push(message, frame)

    def send(self, op: int, d: Any) -> None:
        """A numbered JSON message, buffered for a resume."""
        self.seq += 1
        message = VoiceMessage(op, d, trio.current_time(), self.seq)
        self._deliver(message, json.dumps({"op": int(op), "d": d, "seq": self.seq}))

    def send_binary(self, op: int, payload: bytes) -> None:
        """A binary message: ``[u16 seq][u8 op][payload]``."""
        self.seq += 1
        message = VoiceMessage(op, payload, trio.current_time(), self.seq)
        self._deliver(message, struct.pack(">HB", self.seq & 0xFFFF, op) + payload)


@dataclass
class _Human:
    user_id: int
    ssrc: int
    dave: davey.DaveSession | None = None
    """Set while the human is a member of the call's DAVE group."""
    seq: int = field(default_factory=lambda: random.randrange(1 << 16))
    timestamp: int = field(default_factory=lambda: random.randrange(1 << 32))
    last_spoke: float | None = None


@dataclass
class _Call:
    """One voice channel's media: who is in it and its DAVE group."""

    guild_id: int
    channel_id: int
    sender: ExternalSender
    humans: dict[int, _Human] = field(default_factory=dict)
    sessions: dict[int, _Session] = field(default_factory=dict)
    """The bots' sessions, by user id."""
    epoch: int = 0
    """The group's MLS epoch; 0 while there is no group."""
    leaves: list[int | None] = field(default_factory=list)
    """The user id at each leaf of the ratchet tree (None: blank), for Remove proposals."""
    transition_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    busy: bool = False

    @property
    def members(self) -> set[int]:
        return {u for u in self.leaves if u is not None}

    def decrypt(self, sender: int, frame: bytes) -> bytes | None:
        """``sender``'s DAVE frame decrypted by the first human of the group who can (a human
        added by the last change has no key for frames of the epoch before); None if none."""
        for human in self.humans.values():
            if human.user_id == sender or human.dave is None or not human.dave.ready:
                continue
            try:
                return human.dave.decrypt(sender, davey.MediaType.audio, frame)
            except ValueError as exc:
                _log.debug(
                    "fake voice: %s cannot decrypt %s's frame: %s", human.user_id, sender, exc
                )
        return None


class FakeVoiceServer:
    """Discord's voice gateway (TLS) and voice UDP on 127.0.0.1, with DAVE (``dave_version``
    1, the default) or without (0). :class:`tests.fake_discord.FakeDiscord` creates one as its
    ``voice`` and feeds it the voice states."""

    def __init__(self, *, dave_version: int = 1) -> None:
        self.dave_version = dave_version
        """Offered in SESSION_DESCRIPTION to bots that support it; read when a bot connects."""
        self.ca_file = ""
        """A PEM file with the CA to trust: ``ssl.create_default_context(cafile=ca_file)``."""
        self.port = 0
        """The voice gateway's TLS port."""
        self.udp_port = 0
        self._grants: dict[str, _Grant] = {}
        self._bots: dict[int, _Bot] = {}
        self._calls: dict[int, _Call] = {}
        self._humans: dict[int, tuple[_Call, _Human]] = {}
        self._ssrcs = itertools.count(1001)
        self._udp: trio.socket.SocketType | None = None
        self._nursery: trio.Nursery | None = None
        self._group_changes: dict[int, trio.MemorySendChannel[trio.Event]] = {}
        self._changed = trio.Event()

    @property
    def endpoint(self) -> str:
        """What VOICE_SERVER_UPDATE carries: host:port, no scheme."""
        return f"127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; started once both sockets listen."""
        authority = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1").configure_cert(context)
        with tempfile.TemporaryDirectory(prefix="fake-voice-") as tmp:
            self.ca_file = os.path.join(tmp, "ca.pem")
            authority.cert_pem.write_to_path(self.ca_file)
            self._udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with self._udp:
                await self._udp.bind(("127.0.0.1", 0))
                self.udp_port = self._udp.getsockname()[1]
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._receive_udp, self._udp)
                    serving = functools.partial(
                        trio_websocket.serve_websocket,
                        self._handle,
                        "127.0.0.1",
                        0,
                        ssl_context=context,
                    )
                    server = await nursery.start(serving)
                    self.port = server.port
                    task_status.started()

    # -- what tests observe ----------------------------------------------------------------

    @staticmethod
    def mark() -> float:
        """Now, on the clock of every ``at`` here: pass it as ``since`` later."""
        return trio.current_time()

    def ops(self, bot: BotRef) -> list[VoiceMessage]:
        """Every message the bot sent on the voice gateway, over all its connections."""
        return [m for c in self._bot(bot).connections for m in c.received]

    def sent_ops(self, bot: BotRef) -> list[VoiceMessage]:
        """Every message the fake sent the bot, connection by connection (HELLO first)."""
        return [m for c in self._bot(bot).connections for m in c.sent]

    def connection_count(self, bot: BotRef) -> int:
        return len(self._bot(bot).connections)

    def connected(self, bot: BotRef) -> bool:
        """The bot has a voice session with an open websocket that has been described."""
        session = self._bot(bot).session
        return session is not None and session.connection is not None and session.described

    def last_speaking(self, bot: BotRef) -> Any:
        """The ``d`` of the last op 5 SPEAKING the bot sent, or None."""
        speaking = [m.d for m in self.ops(bot) if m.op == VoiceOp.SPEAKING]
        return speaking[-1] if speaking else None

    def received(self, bot: BotRef, since: float = -math.inf) -> list[ReceivedPacket]:
        """The bot's RTP packets that arrived after ``since``, in arrival order."""
        return [p for p in self._bot(bot).received if p.at > since]

    def received_pcm(self, bot: BotRef, since: float = -math.inf) -> bytes:
        """Everything the bot said after ``since`` (silence frames included), decoded and
        converted to s16le mono 16 kHz."""
        pcm = b"".join(p.pcm for p in self.received(bot, since))
        return to_16k_mono(pcm) if pcm else b""

    def first_packet_after(self, bot: BotRef, t: float) -> ReceivedPacket | None:
        return next(iter(self.received(bot, t)), None)

    def bot_frames_are_e2ee(self, bot: BotRef, since: float = -math.inf) -> bool:
        """Every frame but silence was DAVE-encrypted (and there was at least one)."""
        frames = [p for p in self.received(bot, since) if p.opus != SILENCE]
        return bool(frames) and all(p.e2ee for p in frames)

    def transport_failures(self, bot: BotRef) -> int:
        """Packets from the bot's ssrc that did not authenticate."""
        return self._bot(bot).transport_failures

    async def wait_for_audio(
        self, bot: BotRef, min_seconds: float, limit_s: float = 10.0, since: float = -math.inf
    ) -> None:
        """Wait until the bot sent ``min_seconds`` of frames other than silence after
        ``since``; :class:`trio.TooSlowError` after ``limit_s``."""
        needed = math.ceil(min_seconds / FRAME_S - 1e-9)

        def enough() -> bool:
            return sum(p.opus != SILENCE for p in self.received(bot, since)) >= needed

        await self.wait_until(enough, limit_s)

    async def wait_until(self, condition: Callable[[], bool], limit_s: float = 10.0) -> None:
        """Wait until ``condition()`` holds, re-checked after every message and packet."""
        with trio.fail_after(limit_s):
            while not condition():
                await self._changed.wait()

    def session_key(self, bot: BotRef) -> tuple[str, bytes]:
        """The transport mode and key of the bot's session."""
        session = self._session(bot)
        if session.rx is None:
            raise RuntimeError("the bot has not selected a protocol yet")
        return session.rx.mode, session.key

    def ssrc(self, user_id: int) -> int:
        """The ssrc of a bot's session or of a human in voice."""
        if user_id in self._humans:
            return self._humans[user_id][1].ssrc
        return self._session(user_id).ssrc

    def epoch(self, channel_id: int) -> int:
        """The DAVE epoch of the channel's group (0: no group)."""
        call = self._calls.get(channel_id)
        return call.epoch if call else 0

    def dave_members(self, channel_id: int) -> set[int]:
        call = self._calls.get(channel_id)
        return call.members if call else set()

    def human_dave(self, user_id: int) -> davey.DaveSession | None:
        """The human's DAVE session, while it is in a group (its privacy code, decrypt...)."""
        return self._humans[user_id][1].dave

    async def wait_for_dave(self, bot: BotRef, limit_s: float = 10.0) -> None:
        """Wait until the bot is in its channel's DAVE group with every human there, and no
        group change is under way."""

        def settled() -> bool:
            session = self._bot(bot).session
            if session is None:
                return False
            call = self._calls[session.grant.channel_id]
            wanted = {session.bot.user_id, *call.humans}
            return not call.busy and call.members == wanted

        await self.wait_until(settled, limit_s)

    # -- driving the bots ------------------------------------------------------------------

    async def speak(
        self,
        user_id: int,
        pcm: bytes,
        rate: int = 16_000,
        *,
        loss: float = 0.0,
        reorder: float = 0.0,
        seed: int = 0,
    ) -> list[SentFrame]:
        """The human says ``pcm`` (s16le mono at ``rate``) to every bot in its channel, as
        Discord's SFU forwards it: Opus frames (48 kHz stereo), DAVE-encrypted by the human
        when in a group, transport-encrypted with each bot's key, one every 20 ms, then the 5
        silence frames that end a talk spurt. ``loss`` drops and ``reorder`` swaps adjacent
        packets, each with that probability, drawn from ``seed``. Returns the frames in
        sequence order."""
        load_opus()
        call, human = self._humans[user_id]
        stereo = to_48k_stereo(pcm, rate)
        size = FRAME * 4
        stereo += b"\x00" * (-len(stereo) % size)
        chunks = [stereo[i : i + size] for i in range(0, len(stereo), size)]
        encoder = disnake.opus.Encoder()
        frames = [(encoder.encode(c, FRAME), _audio_level(c)) for c in chunks]
        frames += [(SILENCE, 127)] * 5

        # a new talk spurt: seq continues, the timestamp follows the wall clock
        now = trio.current_time()
        if human.last_spoke is not None:
            human.timestamp += max(0, round((now - human.last_spoke) * RATE / FRAME)) * FRAME
        rng = random.Random(seed)
        dropped = [rng.random() < loss for _ in frames]
        order = list(range(len(frames)))
        i = 0
        while i < len(order) - 1:
            if rng.random() < reorder:
                order[i], order[i + 1] = order[i + 1], order[i]
                i += 1
            i += 1
        first_seq, first_ts = human.seq, human.timestamp
        human.seq = (human.seq + len(frames)) & 0xFFFF
        human.timestamp = (human.timestamp + len(frames) * FRAME) & 0xFFFF_FFFF

        # encrypted in sequence order (as the human's client would), just in time, so an epoch
        # change in the middle of the speech applies from the next frame on
        payloads: list[bytes] = []

        def payload(index: int) -> bytes:
            while len(payloads) <= index:
                opus = frames[len(payloads)][0]
                dave = human.dave
                e2ee = opus != SILENCE and dave is not None and dave.ready
                payloads.append(dave.encrypt_opus(opus) if e2ee and dave else opus)
            return payloads[index]

        start = trio.current_time()
        for slot, index in enumerate(order):
            await trio.sleep_until(start + slot * FRAME_S)
            data = payload(index)
            if dropped[index]:
                continue
            packet = RTP(
                seq=(first_seq + index) & 0xFFFF,
                timestamp=(first_ts + index * FRAME) & 0xFFFF_FFFF,
                ssrc=human.ssrc,
                payload=data,
                marker=index == 0,
                ext={1: bytes([frames[index][1]])},
            )
            await self._send_to_bots(call, packet)
        human.last_spoke = trio.current_time()
        payload(len(frames) - 1)
        return [
            SentFrame(
                (first_seq + i) & 0xFFFF,
                (first_ts + i * FRAME) & 0xFFFF_FFFF,
                opus,
                payloads[i],
                dropped[i],
            )
            for i, (opus, _) in enumerate(frames)
        ]

    async def speak_wav(self, user_id: int, path: str | os.PathLike[str], **options: Any) -> None:
        """:meth:`speak` a mono 16-bit WAV file."""
        with wave.open(os.fspath(path)) as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
                raise ValueError(f"{path}: speak_wav wants mono 16-bit PCM")
            rate, pcm = wav.getframerate(), wav.readframes(wav.getnframes())
        await self.speak(user_id, pcm, rate, **options)

    def mute_udp(self, bot: BotRef, muted: bool = True) -> None:
        """Stop (or resume) sending the bot anything over UDP."""
        self._bot(bot).udp_muted = muted

    async def close(self, bot: BotRef, code: int, limit_s: float = 5.0) -> None:
        """Close the bot's voice websocket with ``code`` and wait until it is closed. After
        4015 the session may be resumed; after any other code it may not."""
        session = self._session(bot)
        connection = session.connection
        if connection is None:
            raise RuntimeError("the bot's voice websocket is not open")
        session.resumable = code == RESUMABLE
        connection.close(code)
        with trio.fail_after(limit_s):
            await connection.closed.wait()

    # -- fed by the main gateway -----------------------------------------------------------

    def grant(
        self, token: str, *, user_id: int, guild_id: int, channel_id: int, session_id: str
    ) -> None:
        """Accept an IDENTIFY with this token (a VOICE_SERVER_UPDATE went to the bot)."""
        self._grants[token] = _Grant(token, user_id, guild_id, channel_id, session_id)

    async def human_joined(self, guild_id: int, channel_id: int, user_id: int) -> None:
        """A human is now in the channel: bots there hear of it (op 11, op 5) and the DAVE
        group adds the human; returns once the group change is done."""
        call = self._call(guild_id, channel_id)
        human = _Human(user_id, next(self._ssrcs))
        call.humans[user_id] = human
        self._humans[user_id] = (call, human)
        for session in self._described(call):
            self._announce(session, [human])
        await self._change_group(call)

    async def human_left(self, user_id: int) -> None:
        """The human left its channel: op 13 to the bots there, and a DAVE Remove."""
        call, _ = self._humans.pop(user_id)
        del call.humans[user_id]
        for session in self._described(call):
            session.send(VoiceOp.CLIENT_DISCONNECT, {"user_id": str(user_id)})
        await self._change_group(call)

    async def bot_left(self, user_id: int) -> None:
        """The bot's voice state went to no channel (or elsewhere): its session ends."""
        session = self._bots[user_id].session if user_id in self._bots else None
        if session is not None:
            await self._change_group(self._drop(session))

    # -- the gateway -----------------------------------------------------------------------

    def _bot(self, bot: BotRef) -> _Bot:
        user_id = bot if isinstance(bot, int) else bot.user_id
        return self._bots.setdefault(user_id, _Bot(user_id))

    def _session(self, bot: BotRef) -> _Session:
        session = self._bot(bot).session
        if session is None:
            raise RuntimeError("the bot has no voice session")
        return session

    def _call(self, guild_id: int, channel_id: int) -> _Call:
        call = self._calls.get(channel_id)
        if call is None:
            call = self._calls[channel_id] = _Call(
                guild_id, channel_id, ExternalSender.generate(channel_id)
            )
        return call

    @staticmethod
    def _described(call: _Call) -> list[_Session]:
        return [s for s in call.sessions.values() if s.described]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        connection = _Connection(await request.accept())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.write, nursery.cancel_scope)
            connection.send(VoiceOp.HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "v": 8})
            try:
                while True:
                    self._on_message(connection, await connection.ws.get_message())
            except trio_websocket.ConnectionClosed:
                nursery.cancel_scope.cancel()
            finally:
                session = connection.session
                if session is not None and session.connection is connection:
                    session.connection = None
                connection.closed.set()
                self._notify()

    def _on_message(self, connection: _Connection, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            # client binary messages have no sequence number: [u8 op][payload]
            op, d = raw[0], raw[1:]
        else:
            payload = json.loads(raw)
            op, d = payload["op"], payload.get("d")
        connection.received.append(VoiceMessage(op, d, trio.current_time()))
        session = connection.session
        if op == VoiceOp.IDENTIFY:
            self._identify(connection, d)
        elif op == VoiceOp.RESUME:
            self._resume(connection, d)
        elif op == VoiceOp.HEARTBEAT:
            connection.send(VoiceOp.HEARTBEAT_ACK, {"t": d.get("t")})
        elif session is None:
            _log.warning("fake voice: op %s before IDENTIFY", op)
        elif op == VoiceOp.SELECT_PROTOCOL:
            self._select_protocol(session, d)
        elif op == VoiceOp.DAVE_TRANSITION_READY:
            session.ready_transitions.add(d["transition_id"])
        elif op == VoiceOp.DAVE_MLS_KEY_PACKAGE:
            session.key_package = d
            call = self._calls[session.grant.channel_id]
            self._schedule_group_change(call)
        elif op == VoiceOp.DAVE_MLS_COMMIT_WELCOME:
            session.commit_welcome = d
        elif op == VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME:
            _log.warning(
                "fake voice: bot %s rejected a commit or welcome: %s", session.bot.user_id, d
            )
        self._notify()

    def _identify(self, connection: _Connection, d: Any) -> None:
        grant = self._grants.get(d.get("token", ""))
        claimed = (int(d["user_id"]), int(d["server_id"]), d["session_id"])
        if grant is None or claimed != (grant.user_id, grant.guild_id, grant.session_id):
            connection.close(AUTHENTICATION_FAILED)
            return
        bot = self._bot(grant.user_id)
        if bot.session is not None:  # re-identifying (moved, server changed): the old one ends
            self._schedule_group_change(self._drop(bot.session))
        call = self._call(grant.guild_id, grant.channel_id)
        session = _Session(grant, bot, next(self._ssrcs), d.get("max_dave_protocol_version", 0))
        bot.session = session
        call.sessions[bot.user_id] = session
        self._attach(connection, session)
        session.send(
            VoiceOp.READY,
            {
                "ssrc": session.ssrc,
                "ip": "127.0.0.1",
                "port": self.udp_port,
                "modes": list(MODES),
                "experiments": [],
            },
        )

    def _resume(self, connection: _Connection, d: Any) -> None:
        session = self._session_by_token(d.get("token", ""))
        if (
            session is None
            or not session.resumable
            or session.dropped
            or d.get("session_id") != session.grant.session_id
        ):
            connection.close(SESSION_NO_LONGER_VALID)
            return
        self._attach(connection, session)
        connection.send(VoiceOp.RESUMED, None)
        seen = d.get("seq_ack", -1)
        for seq, message, frame in session.buffer:
            if seq > seen:
                connection.push(message, frame)

    def _session_by_token(self, token: str) -> _Session | None:
        for bot in self._bots.values():
            if bot.session is not None and bot.session.grant.token == token:
                return bot.session
        return None

    @staticmethod
    def _attach(connection: _Connection, session: _Session) -> None:
        """The newest connection of a session gets its messages."""
        if session.connection is not None and session.connection is not connection:
            session.connection.close(SESSION_NO_LONGER_VALID)
        connection.session = session
        session.connection = connection
        session.bot.connections.append(connection)

    def _select_protocol(self, session: _Session, d: Any) -> None:
        mode = d["data"]["mode"]
        if mode not in MODES:
            if session.connection is not None:
                session.connection.close(UNKNOWN_ENCRYPTION_MODE)
            return
        if session.addr is None:  # no IP discovery: trust what the client says
            session.addr = (d["data"]["address"], int(d["data"]["port"]))
        session.rx, session.tx = Transport(mode, session.key), Transport(mode, session.key)
        session.dave_version = self.dave_version if session.max_dave >= self.dave_version else 0
        session.send(
            VoiceOp.SESSION_DESCRIPTION,
            {
                "mode": mode,
                "secret_key": list(session.key),
                "dave_protocol_version": session.dave_version,
                "audio_codec": "opus",
                "video_codec": None,
                "media_session_id": os.urandom(16).hex(),
            },
        )
        session.described = True
        call = self._calls[session.grant.channel_id]
        others = [s for s in self._described(call) if s is not session]
        # before any DAVE proposal: libdave refuses an Add for a user it was not told about
        ids = [str(u) for u in (*call.humans, *(s.bot.user_id for s in others))]
        if ids:
            session.send(VoiceOp.CLIENTS_CONNECT, {"user_ids": ids})
        for human in call.humans.values():
            session.send(VoiceOp.SPEAKING, self._speaking(human))
        for other in others:
            other.send(VoiceOp.CLIENTS_CONNECT, {"user_ids": [str(session.bot.user_id)]})
        if session.dave_version:
            session.send_binary(VoiceOp.DAVE_MLS_EXTERNAL_SENDER, call.sender.marshal())

    def _announce(self, session: _Session, humans: list[_Human]) -> None:
        session.send(VoiceOp.CLIENTS_CONNECT, {"user_ids": [str(h.user_id) for h in humans]})
        for human in humans:
            session.send(VoiceOp.SPEAKING, self._speaking(human))

    @staticmethod
    def _speaking(human: _Human) -> dict[str, Any]:
        return {"user_id": str(human.user_id), "ssrc": human.ssrc, "speaking": 1}

    def _drop(self, session: _Session) -> _Call:
        """End a bot's session: out of its call (the others hear op 13), no resume."""
        session.dropped = True
        session.resumable = False
        self._grants.pop(session.grant.token, None)
        if session.bot.session is session:
            session.bot.session = None
        call = self._calls[session.grant.channel_id]
        if call.sessions.get(session.bot.user_id) is session:
            del call.sessions[session.bot.user_id]
        for other in self._described(call):
            other.send(VoiceOp.CLIENT_DISCONNECT, {"user_id": str(session.bot.user_id)})
        self._notify()
        return call

    # -- DAVE ------------------------------------------------------------------------------

    def _schedule_group_change(self, call: _Call) -> trio.Event:
        """Queue a reconciliation of the call's DAVE group with who is in the call; changes
        run one at a time, in order. The event is set when this one is done."""
        if call.channel_id not in self._group_changes:
            send, receive = trio.open_memory_channel[trio.Event](math.inf)
            self._group_changes[call.channel_id] = send
            assert self._nursery is not None
            self._nursery.start_soon(self._run_group_changes, call, receive)
        done = trio.Event()
        self._group_changes[call.channel_id].send_nowait(done)
        return done

    async def _change_group(self, call: _Call) -> None:
        await self._schedule_group_change(call).wait()

    async def _run_group_changes(
        self, call: _Call, changes: trio.MemoryReceiveChannel[trio.Event]
    ) -> None:
        async for done in changes:
            call.busy = True
            try:
                with trio.fail_after(GROUP_CHANGE_LIMIT_S):
                    await self._reconcile(call)
            except (trio.TooSlowError, _Abandoned) as exc:
                # the bots' groups are now out of step with the humans': start over
                _log.warning(
                    "fake voice: DAVE group change in %s abandoned: %r", call.channel_id, exc
                )
                self._reset_group(call)
            finally:
                call.busy = False
                done.set()
                self._notify()

    @staticmethod
    def _reset_group(call: _Call) -> None:
        call.epoch, call.leaves = 0, []
        for human in call.humans.values():
            human.dave = None

    async def _reconcile(self, call: _Call) -> None:
        """Bring the group to: every DAVE bot that sent a key package, plus every human, as
        long as a bot is there (a group of humans only is no one's business here)."""
        bots = {
            s.bot.user_id: s
            for s in call.sessions.values()
            if s.dave_version and s.key_package is not None and not s.dropped
        }
        wanted = set(bots) | set(call.humans) if bots else set()
        current = call.members
        if not wanted or not (current & set(bots)):
            # no bot of the group remains to commit: the old group is gone
            self._reset_group(call)
            current = set()
        if wanted == current or (not current and len(wanted) < 2):
            return  # nothing to do, or a bot alone: it keeps its pending group
        if current:
            committer = next(bots[u] for u in current if u in bots)
        else:
            committer = next(iter(bots.values()))
            current = {committer.bot.user_id}
        added = sorted(wanted - current)
        removed = sorted(current - wanted)
        for user_id in added:
            if user_id in call.humans:
                dave = davey.DaveSession(1, user_id, call.channel_id)
                dave.set_external_sender(call.sender.marshal())
                call.humans[user_id].dave = dave

        def key_package(user_id: int) -> bytes:
            human = call.humans.get(user_id)
            if human is not None and human.dave is not None:
                return human.dave.get_serialized_key_package()
            package = bots[user_id].key_package
            assert package is not None
            return package

        proposals = [call.sender.propose_remove(call.epoch, call.leaves.index(u)) for u in removed]
        proposals += [call.sender.propose_add(call.epoch, key_package(u)) for u in added]
        payload = ExternalSender.proposals_append(proposals)
        staying = current - set(removed)
        member_bots = [bots[u] for u in staying if u in bots]
        member_humans = [call.humans[u] for u in staying if u in call.humans]
        everyone = [int(u) for u in (*call.humans, *bots)]
        committer.commit_welcome = None
        for session in member_bots:
            session.send_binary(VoiceOp.DAVE_MLS_PROPOSALS, payload)
        for human in member_humans:
            # the winner's commit refers to these proposals: the humans must know them; their
            # own commits are dropped, as the gateway relays only the first one
            assert human.dave is not None
            human.dave.process_proposals(davey.ProposalsOperationType.append, payload[1:], everyone)
        await self._wait(lambda: committer.commit_welcome is not None, committer)
        assert committer.commit_welcome is not None
        commit, welcome = split_commit_welcome(committer.commit_welcome)
        transition = (next(call.transition_ids) - 1) % 0xFFFF + 1  # a u16, never 0 (immediate)
        tid = struct.pack(">H", transition)
        new_bots = [bots[u] for u in added if u in bots]
        for session in member_bots:
            session.send_binary(VoiceOp.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION, tid + commit)
        if new_bots and welcome is None:
            raise _Abandoned("a commit adding a bot came without a welcome")
        for session in new_bots:
            session.send_binary(VoiceOp.DAVE_MLS_WELCOME, tid + (welcome or b""))
        transitioning = member_bots + new_bots
        # the humans switch keys only once every bot holds the new epoch's keys (bots take
        # their receive keys when they process the commit, before saying ready), so a human
        # never sends a frame a bot cannot decrypt
        await self._wait(
            lambda: all(transition in s.ready_transitions for s in transitioning), *transitioning
        )
        for human in member_humans:
            assert human.dave is not None
            human.dave.process_commit(commit)
        for user_id in added:
            human = call.humans.get(user_id)
            if human is not None and human.dave is not None:
                assert welcome is not None
                human.dave.process_welcome(welcome)
        for session in transitioning:
            session.send(VoiceOp.DAVE_EXECUTE_TRANSITION, {"transition_id": transition})
        call.epoch += 1
        if not call.leaves:
            call.leaves = [committer.bot.user_id]
        for user_id in removed:
            call.leaves[call.leaves.index(user_id)] = None
        for user_id in added:  # each Add takes the leftmost blank leaf
            blank = call.leaves.index(None) if None in call.leaves else len(call.leaves)
            call.leaves[blank : blank + 1] = [user_id]
            human = call.humans.get(user_id)
            if human is not None and human.dave is not None:
                assert human.dave.own_leaf_index == blank, (human.dave.own_leaf_index, blank)

    async def _wait(self, condition: Callable[[], bool], *sessions: _Session) -> None:
        """Wait for ``condition``; a session dropped meanwhile abandons the change."""
        while not condition():
            if any(s.dropped for s in sessions):
                raise _Abandoned("a bot left during a DAVE group change")
            await self._changed.wait()

    # -- UDP -------------------------------------------------------------------------------

    async def _receive_udp(self, sock: trio.socket.SocketType) -> None:
        while True:
            data, addr = await sock.recvfrom(2048)
            await self._on_datagram(sock, data, addr)

    def _session_by_ssrc(self, ssrc: int) -> _Session | None:
        for bot in self._bots.values():
            if bot.session is not None and bot.session.ssrc == ssrc:
                return bot.session
        return None

    async def _on_datagram(self, sock: trio.socket.SocketType, data: bytes, addr: Any) -> None:
        if len(data) == 74 and data[:4] == struct.pack(">HH", 1, 70):
            # IP discovery: type 1 request → type 2 response with the address we saw
            (ssrc,) = struct.unpack_from(">I", data, 4)
            session = self._session_by_ssrc(ssrc)
            if session is not None:
                session.addr = (addr[0], addr[1])
                host = addr[0].encode().ljust(64, b"\x00")
                await sock.sendto(
                    struct.pack(">HHI", 2, 70, ssrc) + host + struct.pack(">H", addr[1]), addr
                )
            return
        if len(data) == 8:
            # A client's UDP keepalive (a counter): Discord echoes it, which is how a client
            # tells a live UDP path from a dead one while nobody speaks.
            if not any(
                b.udp_muted for b in self._bots.values() if b.session and b.session.addr == addr
            ):
                await sock.sendto(data, addr)
            return
        if len(data) < 12 + 16 + 4 or 200 <= data[1] <= 204:
            return  # RTCP, and anything else too short for voice
        session = self._session_by_ssrc(struct.unpack_from(">I", data, 8)[0])
        if session is None or session.rx is None:
            return
        try:
            packet = session.rx.decrypt(data)
        except (ValueError, struct.error):
            session.bot.transport_failures += 1
            return
        self._record(session, packet)

    def _record(self, session: _Session, packet: RTP) -> None:
        opus: bytes | None = packet.payload
        e2ee = _is_dave_frame(packet.payload)
        if e2ee:
            # decrypted as a member of the group would: by a human in the channel
            opus = self._calls[session.grant.channel_id].decrypt(session.bot.user_id, opus)
        pcm = b""
        if opus is not None:
            load_opus()
            if session.decoder is None:
                session.decoder = SafeDecoder()
            pcm = session.decoder.decode(opus, fec=False)
        session.bot.received.append(
            ReceivedPacket(
                trio.current_time(), packet.seq, packet.timestamp, packet.ssrc, opus, e2ee, pcm
            )
        )
        self._notify()

    async def _send_to_bots(self, call: _Call, packet: RTP) -> None:
        assert self._udp is not None
        for session in list(call.sessions.values()):
            if session.tx is None or session.addr is None or session.bot.udp_muted:
                continue
            await self._udp.sendto(session.tx.encrypt(packet), session.addr)


class _Abandoned(Exception):
    """A DAVE group change that cannot complete."""
