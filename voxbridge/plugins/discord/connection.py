"""A Discord voice connection that also receives: disnake's ``VoiceClient``, extended.

disnake 2.12 sends voice (and negotiates DAVE through dave.py) but has no receive path. This
subclass adds one without patching disnake:

- it sees every voice-gateway message from the first (``hook=`` on the websocket, which disnake's
  own ``connect_websocket`` never passes) to map each speaker's SSRC to their user id;
- it reads the voice UDP socket on the asyncio loop once the handshake is done (IP discovery
  reads the same socket), unregistering *before* disnake closes the socket on a server move,
  or asyncio's selector keeps a stale key for the fd number the next socket reuses;
- transport decryption for both ``*_rtpsize`` modes (:mod:`.rtp`), and AES-256-GCM for sending,
  which disnake lacks and Discord prefers;
- DAVE decryption per sender with dave.py's ``Decryptor``, keyed from the MLS session disnake
  already runs; receivers take the new keys at *prepare* time (old ones stay valid 10 s), the
  sender switches at *execute* — libdave's own order;
- an 8-byte UDP keepalive every 5 s (Discord echoes it), so a dead UDP path shows as silence.

It leans on disnake internals (``_connected``, ``_ready``, ``_resumed``, ``DaveState``,
``_get_nonce``): ``pyproject.toml`` pins ``disnake<2.13`` and the Discord voice tests are the
tripwire. Everything here runs on the asyncio loop; received packets leave through
:class:`Receiver`, which the Trio side implements.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any, Protocol

import dave
import disnake
from disnake.gateway import DiscordVoiceWebSocket
from disnake.utils import MISSING
from disnake.voice_client import DaveState

from .rtp import AES_GCM, MODES, SILENCE, Packet, Transport, TransportError, is_rtcp

__all__ = ["KEEPALIVE_EVERY", "Receiver", "VoiceConnection"]

log = logging.getLogger("voxbridge.plugins.discord.voice")
logging.getLogger("libdave").setLevel(logging.CRITICAL)  # every failed decrypt, else

KEEPALIVE_EVERY = 5.0
_MAX_DATAGRAM = 2048


class Receiver(Protocol):
    """Where a connection's sound goes; called on the asyncio loop, so it must not block."""

    def packet(self, user_id: int, packet: Packet) -> None:
        """One speaker's Opus frame (decrypted)."""

    def left(self, user_id: int) -> None:
        """That user left the channel (their stream ends)."""


class _ReceivingDave(DaveState):
    """disnake's DAVE state plus one dave.py ``Decryptor`` per other member."""

    def __init__(self, vc: VoiceConnection) -> None:
        super().__init__(vc)
        self._decryptors: dict[int, dave.Decryptor] = {}

    def _decryptor(self, user_id: int) -> dave.Decryptor:
        decryptor = self._decryptors.get(user_id)
        if decryptor is None:
            decryptor = self._decryptors[user_id] = dave.Decryptor()
            # Plain frames are fine until the group is up (and during a downgrade).
            decryptor.transition_to_passthrough_mode(True)
            self._key(decryptor, user_id)
        return decryptor

    def _key(self, decryptor: dave.Decryptor, user_id: int) -> None:
        if self._session.has_established_group():
            ratchet = self._session.get_key_ratchet(str(user_id))
            if ratchet is not None:
                decryptor.transition_to_key_ratchet(ratchet)

    async def prepare_transition(self, transition_id: int, version: int) -> None:
        for user_id in self._recognized_users - {self._self_id}:
            decryptor = self._decryptor(user_id)
            if version == self.DISABLED_VERSION:
                decryptor.transition_to_passthrough_mode(True)
            else:
                self._key(decryptor, user_id)
        await super().prepare_transition(transition_id, version)

    def remove_recognized_user(self, user_id: int) -> None:
        super().remove_recognized_user(user_id)
        self._decryptors.pop(user_id, None)

    def _setup_ratchet_for_user(self, user_id: int, version: int) -> None:
        if self._encryptor is None:
            return  # a call without DAVE (version 0): disnake would log this as an error
        super()._setup_ratchet_for_user(user_id, version)

    def decrypt(self, user_id: int, frame: bytes) -> bytes | None:
        if frame == SILENCE:  # never encrypted
            return frame
        result: bytes | None = self._decryptor(user_id).decrypt(dave.MediaType.audio, frame)
        return result


class VoiceConnection(disnake.VoiceClient):
    """Pass ``cls=lambda client, channel: VoiceConnection(client, channel, receiver)`` to
    ``VoiceChannel.connect``."""

    supported_modes = MODES  # type: ignore[assignment]  # disnake's Literal lacks AES-GCM

    def __init__(
        self, client: disnake.Client, channel: disnake.abc.Connectable, receiver: Receiver
    ) -> None:
        super().__init__(client, channel)
        self.dave: _ReceivingDave = _ReceivingDave(self)
        self.receiver = receiver
        self.speakers: dict[int, int] = {}
        """SSRC → user id, from the voice gateway's SPEAKING events."""
        self.last_datagram = time.monotonic()
        """When the UDP socket last got anything (voice, or the echo of a keepalive)."""
        self.counters = {"packets": 0, "undecryptable": 0, "dave_failures": 0, "unknown_ssrc": 0}
        self._reading: int | None = None  # the fd registered with the loop
        self._transport: Transport | None = None
        self._keepalive: Any = None  # asyncio.TimerHandle
        self._keepalives = 0

    # --- the voice gateway ---------------------------------------------------------------------

    async def connect_websocket(self, *, resume: bool = False) -> None:
        # disnake 2.12's own, plus ``hook=`` and the UDP reader once the handshake is done.
        self._stop_reading()
        seq = self.ws.sequence if resume and self.ws is not MISSING else None
        self.ws = ws = await DiscordVoiceWebSocket.from_client(
            self, sequence=seq, resume=resume, hook=self._hook
        )
        self._connected.clear()
        event = ws._resumed if resume else ws._ready
        while not event.is_set():
            await ws.poll_event()
        self._connected.set()
        self._transport = Transport(self.mode, bytes(self.secret_key))
        self._start_reading()

    async def _hook(self, ws: DiscordVoiceWebSocket, message: dict[str, Any]) -> None:
        op, data = message.get("op"), message.get("d") or {}
        if op == DiscordVoiceWebSocket.SPEAKING and "user_id" in data:
            self.speakers[int(data["ssrc"])] = int(data["user_id"])
        elif op == DiscordVoiceWebSocket.CLIENT_DISCONNECT:
            user_id = int(data["user_id"])
            for ssrc in [s for s, u in self.speakers.items() if u == user_id]:
                del self.speakers[ssrc]
            self.receiver.left(user_id)

    async def on_voice_server_update(self, data: Any) -> None:
        self._stop_reading()  # before disnake closes the socket (see the module's docstring)
        await super().on_voice_server_update(data)

    def cleanup(self) -> None:
        self._stop_reading()
        super().cleanup()

    # --- sending -------------------------------------------------------------------------------

    def _encrypt_aead_aes256_gcm_rtpsize(self, header: bytes, data: bytes) -> bytes:
        nonce, _ = self._get_nonce(4)
        if self._transport is None or self._transport.mode != AES_GCM:
            self._transport = Transport(AES_GCM, bytes(self.secret_key))
        return self._transport.seal(bytes(header), bytes(data), int.from_bytes(nonce))

    def can_speak(self) -> bool:
        """Whether audio sent now is end-to-end encrypted when the call requires it (before the
        DAVE group is up, disnake would send plain frames)."""
        if not self.is_connected():
            return False
        return self.dave._encryptor is None or self.dave.can_encrypt()

    # --- receiving -----------------------------------------------------------------------------

    def _start_reading(self) -> None:
        self._reading = self.socket.fileno()
        self.loop.add_reader(self._reading, self._readable)
        self.last_datagram = time.monotonic()
        if self._keepalive is None:
            self._keepalive = self.loop.call_later(KEEPALIVE_EVERY, self._send_keepalive)

    def _stop_reading(self) -> None:
        if self._reading is not None:
            self.loop.remove_reader(self._reading)
            self._reading = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _send_keepalive(self) -> None:
        self._keepalive = self.loop.call_later(KEEPALIVE_EVERY, self._send_keepalive)
        self._keepalives += 1
        try:
            self.socket.sendto(
                struct.pack("<I", self._keepalives & 0xFFFF_FFFF) + bytes(4),
                (self.endpoint_ip, self.voice_port),
            )
        except OSError as exc:  # a full buffer or a closed socket: the silence check notices
            log.debug("voice keepalive not sent: %s", exc)

    def _readable(self) -> None:
        while True:
            try:
                datagram, source = self.socket.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._stop_reading()
                return
            # The socket is not connected: anyone could send to it.
            if source != (self.endpoint_ip, self.voice_port):
                continue
            self.last_datagram = time.monotonic()
            self._datagram(datagram)

    def _datagram(self, datagram: bytes) -> None:
        if self._transport is None or len(datagram) < 32 or is_rtcp(datagram):
            return  # keepalive echoes and RTCP reports carry no voice
        try:
            packet = self._transport.open(datagram)
        except TransportError:
            self.counters["undecryptable"] += 1
            return
        self.counters["packets"] += 1
        user_id = self.speakers.get(packet.ssrc)
        if user_id is None:
            self.counters["unknown_ssrc"] += 1  # SPEAKING comes first; a stray one is dropped
            return
        if self.dave._encryptor is not None or self.dave._session.has_established_group():
            frame = self.dave.decrypt(user_id, packet.payload)
            if frame is None:
                self.counters["dave_failures"] += 1
                return
            if frame is not packet.payload:
                packet = Packet(packet.sequence, packet.timestamp, packet.ssrc, frame)
        self.receiver.packet(user_id, packet)
