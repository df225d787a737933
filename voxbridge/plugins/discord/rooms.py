"""The bot in voice channels (SPEC §12): which channel to be in, and a spoken conversation there.

    VoiceRooms           per bot: what each guild's voice channel should be
    └── keep(guild)      joins, rejoins with backoff after a fault, leaves when told
        └── Room         one connection: a VoiceSession, one SpeakerStream per person heard,
                         the answer played back through the same connection

Joining: a listed channel is joined while a person is in it and left when only bots remain;
``/voice join`` and ``/voice leave`` (with ``follow``) override that. A moderator kicking the bot
out is respected: the channel is not rejoined until it empties (or someone asks). A moderator
moving it is followed. disnake reconnects by itself after voice-server faults (4006, 4015
resume, a server move); what it leaves hanging — a connection stopped by close 4017/4021, or a UDP
path silent for 30 s — is ended here and joined afresh, with backoff. The text side of the bot
never waits on any of it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import disnake
import numpy as np
import trio

from ...voice.output import Pacer
from ...voice.providers import open_providers
from ...voice.session import Speaker, VoiceSession
from ..aio import run_on_loop, to_trio
from ..api import Context
from .connection import VoiceConnection
from .opus import load as load_opus
from .rtp import SILENCE, Packet
from .speakers import SpeakerStream

if TYPE_CHECKING:
    from disnake.ext import commands

__all__ = ["CONNECT_TIMEOUT", "UDP_SILENCE", "VoiceRooms"]

CONNECT_TIMEOUT = 15.0  # disnake also waits this long after close 4014 to tell a move from a kick
UDP_SILENCE = 30.0  # nothing on the UDP socket (not even keepalive echoes) for this long: dead
DAVE_WAIT = 10.0  # for the call's MLS group, before the agent may speak anyway (and be dropped)
_WATCH_EVERY = 1.0
_SPEAKING_FOR = 0.5  # a person counts as speaking this long after their last packet
_TRAILING_SILENCE = 5  # Opus silence frames after a burst, as Discord's clients send


class _Lost(Exception):
    """The voice connection is gone in a way disnake does not recover from."""


class _Player(disnake.AudioSource):
    """Frames for disnake's player thread: Opus-encoded there, then five silence frames and
    the end of the burst when the queue runs dry (the player stops; it starts again with the
    next frame)."""

    def __init__(self) -> None:
        self.frames: collections.deque[bytes] = collections.deque()  # 48 kHz mono s16le
        self._encoder = disnake.opus.Encoder()
        self._silence = 0

    def is_opus(self) -> bool:
        return True

    def read(self) -> bytes:
        try:
            mono = self.frames.popleft()
        except IndexError:
            self._silence += 1
            return SILENCE if self._silence <= _TRAILING_SILENCE else b""
        self._silence = 0
        stereo = np.repeat(np.frombuffer(mono, np.int16), 2).tobytes()
        encoded: bytes = self._encoder.encode(stereo, self._encoder.SAMPLES_PER_FRAME)
        return encoded


class _Output:
    """A voice session's side of the connection (:class:`~voxbridge.voice.output.Output`)."""

    rate = 48_000

    def __init__(self, connection: VoiceConnection, count: Callable[[str, int], None]) -> None:
        self._connection = connection
        self._count = count
        self._pacer = Pacer()
        self._player = _Player()

    async def play(self, frame: bytes) -> None:
        await self._pacer.wait()
        if not self._connection.can_speak():
            # Before the DAVE group is up disnake would send it unencrypted.
            self._count("voice_frames_dropped", 1)
            return
        self._player.frames.append(frame)
        if not self._connection.is_playing():
            await run_on_loop(self._start)

    async def _start(self) -> None:
        if not self._connection.is_playing() and self._connection.is_connected():
            self._connection.play(self._player)  # one source, burst after burst

    async def clear(self) -> None:
        self._player.frames.clear()  # the player sends its silence frames and stops
        self._pacer.reset()

    async def event(self, event: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()


class _Forward:
    """The connection's :class:`~.connection.Receiver`: hands packets to the room's Trio task
    without ever waiting for it. Packets that arrive together (several speakers, or a burst the
    socket held) cross to the Trio thread together: one wake-up of its loop, not one each."""

    def __init__(self, token: trio.lowlevel.TrioToken, room: Room) -> None:
        self._token, self._room = token, room
        self.connection: VoiceConnection | None = None
        self._names: dict[int, str] = {}
        self._inbox: collections.deque[tuple[int, str, Packet]] = collections.deque()
        self._sent = False  # a delivery is on its way to the Trio thread

    def packet(self, user_id: int, packet: Packet) -> None:
        name = self._names.get(user_id)
        if name is None:
            member = self.connection.guild.get_member(user_id) if self.connection else None
            name = self._names[user_id] = member.display_name if member else str(user_id)
        self._inbox.append((user_id, name, packet))
        if not self._sent:
            self._sent = True
            to_trio(self._token, self._deliver)

    def _deliver(self) -> None:
        """In the Trio thread: everything that came (what arrives meanwhile is delivered here
        too, or by the next delivery, which it asks for itself)."""
        self._sent = False
        while self._inbox:
            self._room.heard(*self._inbox.popleft())

    def left(self, user_id: int) -> None:
        to_trio(self._token, lambda: self._room.left(user_id))


class Room:
    """The bot in one voice channel: listening to each person, answering aloud."""

    def __init__(self, ctx: Context, bot: commands.InteractionBot, channel_id: int) -> None:
        self._ctx, self._bot, self.channel_id = ctx, bot, channel_id
        self._speakers: dict[int, tuple[SpeakerStream, Speaker]] = {}
        self._last_heard: dict[int, float] = {}
        self._nursery: trio.Nursery | None = None
        self._session: VoiceSession | None = None
        self._note = ""

    def heard(self, user_id: int, name: str, packet: Packet) -> None:
        """A packet from ``user_id`` (in the Trio thread)."""
        if self._nursery is None or self._session is None:
            return
        entry = self._speakers.get(user_id)
        if entry is None:
            voice = self._ctx.agent.voice
            tail = voice.vad.end_of_turn + 0.5 if voice else 1.0
            speaker = Speaker(str(user_id), name, attributed=True, person=f"discord:{user_id}")
            stream = SpeakerStream(self._session.ear(speaker, self._nursery), tail=tail)
            entry = self._speakers[user_id] = (stream, speaker)
            self._nursery.start_soon(stream.run)
        self._last_heard[user_id] = time.monotonic()
        entry[0].push(packet)

    def left(self, user_id: int) -> None:
        entry = self._speakers.pop(user_id, None)
        if entry is not None:
            entry[0].close()

    async def run(self, token: trio.lowlevel.TrioToken) -> None:
        """Be in the channel until cancelled.

        Raises:
            _Lost: the connection ended and disnake will not bring it back.
        """
        ctx = self._ctx
        voice = ctx.agent.voice
        if voice is None:
            raise _Lost("the agent has no voice section")
        forward = _Forward(token, self)
        channel = self._bot.get_channel(self.channel_id)
        if not isinstance(channel, disnake.VoiceChannel | disnake.StageChannel):
            raise _Lost(f"voice channel {self.channel_id} is not visible to the bot")

        def make(client: disnake.Client, where: disnake.abc.Connectable) -> VoiceConnection:
            connection = VoiceConnection(client, where, forward)
            forward.connection = connection
            return connection

        load_opus()
        connection = await run_on_loop(
            lambda: channel.connect(cls=make, timeout=CONNECT_TIMEOUT, reconnect=True)
        )
        try:
            providers = await open_providers(voice, ctx.fleet.http(), ctx.state_dir / "models")
            self._session = VoiceSession(
                config=voice,
                stt=providers.stt,
                tts=providers.tts,
                vad=providers.vad,
                think=ctx.think,
                output=_Output(connection, ctx.count),
                conversation=await ctx.memory.conversation(f"discord-voice:{self.channel_id}"),
                history=lambda: ctx.agent.history,
                session_id=f"discord-voice:{self.channel_id}",
                observe=ctx.observe,
                count=ctx.count,
                logger=ctx.log,
                smart_turn=providers.smart_turn,
            )
            ctx.log.info("🔊 joined voice channel %s", channel.name)
            ctx.count("voice_sessions", 1)
            lost: _Lost | None = None
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._converse, connection, self._session)
                    try:
                        await self._watch(connection)
                    except _Lost as exc:  # caught here, not wrapped in the nursery's group
                        lost = exc
                    nursery.cancel_scope.cancel()
            finally:
                ctx.count("voice_sessions", -1)
            if lost is not None:
                raise lost
        finally:
            self._nursery = None
            for stream, _ in self._speakers.values():
                stream.close()
            ctx.note(None)
            with ctx.cleanup_scope():
                try:
                    await run_on_loop(lambda: connection.disconnect(force=True))
                except (aiohttp.ClientError, disnake.DiscordException, OSError) as exc:
                    # Leaving a connection that is broken already: nothing more to do.
                    ctx.log.debug("voice disconnect: %s", exc)

    async def _converse(self, connection: VoiceConnection, session: VoiceSession) -> None:
        # People are heard from the start, but the agent speaks (a greeting, say) only once the
        # call's end-to-end encryption is up: until then its audio would be dropped.
        with trio.move_on_after(DAVE_WAIT):
            # The state changes on the asyncio loop, where no Trio event can be set cheaply.
            while not connection.can_speak():  # noqa: ASYNC110
                await trio.sleep(0.05)
        await session.converse()

    async def _watch(self, connection: VoiceConnection) -> None:
        """Report how the room is doing; return when the bot was disconnected for good."""
        seen = dict(connection.counters)
        while True:
            await trio.sleep(_WATCH_EVERY)
            for name, value in connection.counters.items():
                if value > seen[name]:
                    self._ctx.count(f"voice_rx_{name}", value - seen[name])
                    seen[name] = value
            for stream, _ in self._speakers.values():
                for name, grown in stream.news().items():
                    self._ctx.count(f"voice_rx_{name}", grown)
            if connection not in self._bot.voice_clients:
                return  # disconnected: kicked, or the channel went away
            runner = getattr(connection, "_runner", None)
            if runner is not None and runner.done() and connection.is_connected():
                raise _Lost("the voice gateway closed the connection and disnake gave up")
            silent = time.monotonic() - connection.last_datagram
            if connection.is_connected() and silent > UDP_SILENCE:
                raise _Lost(f"nothing on the voice UDP socket for {silent:.0f}s")
            self._show(connection)

    def _show(self, connection: VoiceConnection) -> None:
        now = time.monotonic()
        speaking = sorted(
            speaker.name
            for user_id, (_, speaker) in self._speakers.items()
            if now - self._last_heard.get(user_id, 0.0) < _SPEAKING_FOR
        )
        name = getattr(connection.channel, "name", self.channel_id)
        note = f"🔊 in voice channel {name}" + (
            f" · speaking: {', '.join(speaking)}" if speaking else ""
        )
        if not connection.is_connected():
            note += " · reconnecting"
        if note != self._note:
            self._note = note
            self._ctx.note(note)


class VoiceRooms:
    """Which voice channel the bot should be in, per guild, and the rooms that make it so.

    Every method is called in the Trio thread; the bot's event handlers forward to them.
    """

    def __init__(
        self,
        ctx: Context,
        bot: Callable[[], commands.InteractionBot | None],
        nursery: trio.Nursery,
    ) -> None:
        settings = ctx.config.settings.get("voice") or {}
        self.enabled = "voice" in ctx.config.settings
        self.listed = frozenset(int(c) for c in settings.get("channels", ()))
        self.follow = bool(settings.get("follow", True))
        self._ctx, self._bot, self._nursery = ctx, bot, nursery
        self._wanted: dict[int, int | None] = {}
        self._rooms: dict[int, trio.CancelScope] = {}
        self._in: dict[int, int] = {}  # guild → the channel the bot is in now
        self._dismissed: set[int] = set()  # kicked from, or told to leave: not rejoined

    def want(self, guild_id: int, channel_id: int | None) -> None:
        """Be in ``channel_id`` (``None``: in no channel) in that guild."""
        if not self.enabled or self._wanted.get(guild_id) == channel_id:
            return
        self._wanted[guild_id] = channel_id
        scope = self._rooms.get(guild_id)
        if scope is not None:
            scope.cancel()  # the keeper takes up the new wish
        elif channel_id is not None:
            self._rooms[guild_id] = trio.CancelScope()
            self._nursery.start_soon(self._keep, guild_id)

    def leave(self, guild_id: int) -> None:
        """``/voice leave``: out, and not back in by itself until the channel empties."""
        channel_id = self._wanted.get(guild_id)
        if channel_id is not None:
            self._dismissed.add(channel_id)
        self.want(guild_id, None)

    def presence(self, guild_id: int, channel_id: int, people: int) -> None:
        """``people`` (not bots) are in that voice channel now."""
        if people == 0:
            self._dismissed.discard(channel_id)
            if self._in.get(guild_id, self._wanted.get(guild_id)) == channel_id:
                self.want(guild_id, None)
        elif (
            channel_id in self.listed
            and channel_id not in self._dismissed
            and self._wanted.get(guild_id) is None
        ):
            self.want(guild_id, channel_id)

    def bot_moved(self, guild_id: int, channel_id: int | None) -> None:
        """The bot's own voice state changed: a moderator moved it (followed) or disconnected
        it (respected)."""
        wanted = self._wanted.get(guild_id)
        if channel_id is None:
            self._in.pop(guild_id, None)
            return
        self._in[guild_id] = channel_id
        if wanted is not None and wanted != channel_id:
            self._wanted[guild_id] = channel_id  # moved: the connection follows by itself

    async def _keep(self, guild_id: int) -> None:
        ctx = self._ctx
        failures = 0
        token = trio.lowlevel.current_trio_token()
        try:
            while (channel_id := self._wanted.get(guild_id)) is not None:
                bot = self._bot()
                scope = self._rooms[guild_id] = trio.CancelScope()
                with scope:
                    if bot is None:
                        raise _Lost("the bot is not connected")
                    try:
                        await Room(ctx, bot, channel_id).run(token)
                    except Exception as exc:
                        # Voice trouble of any kind stays in voice: the text side goes on.
                        failures += 1
                        delay = min(60.0, 2.0**failures)
                        ctx.count("voice_errors")
                        ctx.log.warning(
                            "⚠️ voice channel %s: %s; joining again in %.0fs",
                            channel_id,
                            exc or type(exc).__name__,
                            delay,
                            exc_info=not isinstance(
                                exc, _Lost | TimeoutError | disnake.DiscordException
                            ),
                        )
                        await trio.sleep(delay)
                        continue
                    failures = 0
                    # The connection ended by itself: a moderator disconnected the bot.
                    ctx.log.info("🔇 disconnected from voice channel %s", channel_id)
                    self._dismissed.add(channel_id)
                    if self._wanted.get(guild_id) == channel_id:
                        self._wanted[guild_id] = None
        finally:
            self._rooms.pop(guild_id, None)
