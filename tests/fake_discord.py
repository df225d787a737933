"""A Discord-compatible REST API and gateway on 127.0.0.1, for tests driving the real disnake.

:class:`FakeDiscord` serves, from inside a Trio nursery (hypercorn's Trio worker + Starlette):

- the REST routes disnake uses to log in, sync application commands, send, fetch, edit and
  delete messages, trigger typing, open DMs, and answer interactions (callbacks, followups, the
  original response); and, like Discord's CDN, the files people attached to messages. Every request is recorded as a :class:`RecordedRequest`; a route the fake
  does not know is recorded with ``handled=False``, logged as a warning, and answered 404.
- a gateway: HELLO, IDENTIFY → READY + one GUILD_CREATE per guild, heartbeats, RESUME (missed
  events replayed, then RESUMED; an unknown session gets INVALID_SESSION), member chunk requests,
  and voice state updates (op 4): a bot joining a voice channel gets VOICE_STATE_UPDATE and
  VOICE_SERVER_UPDATE pointing at :attr:`FakeDiscord.voice`, a
  :class:`tests.fake_discord_voice.FakeVoiceServer` (voice gateway, UDP, DAVE).

People's messages come with what Discord sends: attachments (:class:`Upload`, served over
HTTP at ``/attachments/<channel>/<id>/<name>``), replies (``message_reference`` and the
replied-to message, itself without its own), the author's member roles (:meth:`add_role`), in
guild channels, threads (:meth:`add_thread`: THREAD_CREATE, then messages with the thread's id
as their channel) or DMs.

Humans join and leave voice channels with :meth:`FakeDiscord.join_voice` and
:meth:`FakeDiscord.leave_voice`; every bot sees their VOICE_STATE_UPDATE (bots are in every
guild, and get voice states whatever their intents).

Point disnake at it with ``disnake.http.Route.BASE = fake.base_url`` (a class attribute shared
by every client, webhooks and interaction responses included); the gateway URL then comes from
``GET /gateway/bot``. Frames go out as plain JSON text: disnake asks for ``zlib-stream`` but
only inflates binary frames. Every JSON answer is ``Content-Type: application/json`` exactly,
since disnake does not parse JSON sent under any other content type.
"""

from __future__ import annotations

import enum
import functools
import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fake_discord_voice import FakeVoiceServer

__all__ = ["BotAccount", "FakeDiscord", "GatewayMessage", "RecordedRequest", "Upload"]

_log = logging.getLogger(__name__)

Json = dict[str, Any]

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
HEARTBEAT_INTERVAL_MS = 45_000
OWNER_ID = 1
"""The owner of every fake guild and application: a user that never takes part."""
ALL_PERMISSIONS = str((1 << 50) - 1)


class Op(enum.IntEnum):
    """The gateway opcodes the fake speaks."""

    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    REQUEST_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11


AUTHENTICATION_FAILED = 4004
"""Gateway close code for a token the fake does not know."""

VOICE_DISCONNECTED = 4014
"""Voice close code: kicked or moved out of the channel."""
VOICE_BITRATE = 64_000

# interaction callback types that produce the original response message
CHANNEL_MESSAGE_WITH_SOURCE, DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 4, 5
UPDATE_MESSAGE = 7  # a component's interaction: edit the message the component is on
LOADING_FLAG = 1 << 7
EPHEMERAL_FLAG = 1 << 6


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _user(user_id: int, name: str, *, bot: bool = False) -> Json:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": None if bot else name,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def _member(user: Json | None = None, roles: Iterable[int] = ()) -> Json:
    """A member object; with ``user`` as in GUILD_CREATE and interactions, without as in
    MESSAGE_CREATE (where the author carries the user)."""
    member: Json = {
        "roles": [str(r) for r in roles],
        "joined_at": _now(),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "permissions": ALL_PERMISSIONS,
    }
    if user is not None:
        member["user"] = user
    return member


def _bot_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bot ") if auth.startswith("Bot ") else None


@dataclass(frozen=True)
class RecordedRequest:
    """One REST request a client made, as the fake answered it."""

    method: str
    path: str
    """The path below the API prefix, e.g. ``/channels/10/messages``."""
    query: dict[str, str]
    json: Any
    """The JSON body, or None when there was none (or it was not JSON)."""
    token: str | None
    """The bot token the request acted for: its ``Authorization`` header, or for interaction
    callbacks and webhooks (which carry none) the token of the bot the interaction went to."""
    status: int
    handled: bool
    """False for a route the fake does not implement (answered 404)."""
    at: float = 0.0
    """``time.perf_counter()`` when the request arrived (benchmarks measure with it)."""


@dataclass(frozen=True)
class GatewayMessage:
    """One payload a client sent over the gateway."""

    token: str | None
    """The bot's token, once the connection has identified or resumed."""
    op: int
    d: Any


@dataclass
class BotAccount:
    """A bot user the fake knows, with its application, commands and gateway session."""

    token: str
    user_id: int
    name: str
    application_id: int
    close_on_identify: int | None = None
    """Close the gateway with this code right after IDENTIFY, e.g. 4004 or 4014."""
    identifies: int = 0
    resumes: int = 0
    session_id: str | None = None
    commands: dict[int | None, list[Json]] = field(default_factory=dict)
    """Application commands by guild id (None: global), as the fake returns them."""
    _connection: _Connection | None = None
    _seq: int = 0
    _events: list[tuple[int, str]] = field(default_factory=list)

    @property
    def user(self) -> Json:
        """The bot's user object."""
        return _user(self.user_id, self.name, bot=True)


@dataclass
class _Channel:
    id: int
    guild_id: int | None
    name: str = ""
    recipient_id: int | None = None
    """For a DM: the user on the other side."""
    bot_id: int | None = None
    """For a DM: the bot's user id."""
    voice: bool = False
    parent_id: int | None = None
    """For a thread: its channel."""


@dataclass
class _Guild:
    id: int
    name: str
    channel_ids: list[int]
    roles: dict[int, str] = field(default_factory=dict)
    thread_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Upload:
    """A file a person attaches to a message: its name, bytes and media type (None: Discord
    could not tell), and for an image its size in pixels (Discord sends them)."""

    name: str
    data: bytes = field(repr=False)
    content_type: str | None = "application/octet-stream"
    width: int | None = None
    height: int | None = None


@dataclass
class _Interaction:
    id: int
    token: str
    bot: BotAccount
    channel_id: int
    responded: bool = False
    original: Json | None = None


class _Connection:
    """One gateway websocket. Frames (text) and the final close code (int) queue in an outbox
    drained by a single writer task, so frames from any Trio task keep their order."""

    def __init__(self) -> None:
        self.outbox, self._pending = trio.open_memory_channel[str | int](math.inf)
        self.bot: BotAccount | None = None

    def send(self, op: int, d: Any) -> None:
        self.outbox.send_nowait(json.dumps({"op": op, "d": d, "s": None, "t": None}))

    def close(self, code: int) -> None:
        self.outbox.send_nowait(code)

    async def write(self, ws: WebSocket, done: trio.CancelScope) -> None:
        async for item in self._pending:
            if isinstance(item, int):
                await ws.close(code=item)
                done.cancel()
                return
            await ws.send_text(item)


class _ApiError(Exception):
    def __init__(self, status: int, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class _Call:
    """A request being handled: its parsed parts, and the token it gets recorded under."""

    request: Request
    json: Any
    token: str | None

    def param(self, name: str) -> int:
        return int(self.request.path_params[name])


Handler = Callable[[_Call], Awaitable[Response]]


class FakeDiscord:
    """A Discord-compatible REST + gateway server on 127.0.0.1 (hypercorn trio worker +
    starlette). Every bot is a member of every guild."""

    def __init__(self, *, dave_version: int = 1) -> None:
        """``dave_version`` 0 turns DAVE (end-to-end encrypted voice) off."""
        self.requests: list[RecordedRequest] = []
        """Every REST request, in order."""
        self.gateway_messages: list[GatewayMessage] = []
        """Every gateway payload the clients sent, in order."""
        self._bots: dict[str, BotAccount] = {}
        self._guilds: dict[int, _Guild] = {}
        self._channels: dict[int, _Channel] = {}
        self._users: dict[int, Json] = {}
        self._messages: dict[int, Json] = {}
        self._interactions: dict[str, _Interaction] = {}
        """By token."""
        self._ids = itertools.count(1)
        self._writes: dict[int, list[float]] = {}
        """``time.perf_counter()`` of each message's creation and of every edit, by id."""
        self._files: dict[int, Upload] = {}
        """Attached files by attachment id (served at ``/attachments/...``)."""
        self._voice_states: dict[tuple[int, int], Json] = {}
        """By (guild id, user id): every user in a voice channel."""
        self._changed = trio.Event()
        self.edits_wait: trio.Event | None = None
        """While set, every message edit waits for it (a Discord slow to answer); those waiting
        are in ``edits_waiting`` (their bodies)."""
        self.edits_waiting: list[Json] = []
        self._url: str | None = None
        self._nursery: trio.Nursery | None = None
        self.voice = FakeVoiceServer(dave_version=dave_version)
        """The voice servers: voice gateway, UDP, DAVE, and what the bots said."""

    # -- setup -----------------------------------------------------------------------------

    def add_bot(
        self,
        token: str,
        *,
        user_id: int,
        name: str,
        application_id: int | None = None,
        close_on_identify: int | None = None,
    ) -> BotAccount:
        """Accept ``token`` as a bot; its application id defaults to its user id, as on Discord.
        ``close_on_identify`` closes its gateway with that code right after IDENTIFY."""
        bot = BotAccount(
            token=token,
            user_id=user_id,
            name=name,
            application_id=user_id if application_id is None else application_id,
            close_on_identify=close_on_identify,
        )
        self._bots[token] = bot
        self._users[user_id] = bot.user
        return bot

    def add_guild(
        self,
        guild_id: int,
        name: str,
        channel_ids: list[int],
        *,
        voice_channel_ids: Iterable[int] = (),
    ) -> None:
        """A guild with these text (and voice) channels; every bot is a member."""
        self._guilds[guild_id] = _Guild(guild_id, name, list(channel_ids))
        for position, channel_id in enumerate(channel_ids):
            self._channels[channel_id] = _Channel(channel_id, guild_id, f"channel-{position}")
        for position, channel_id in enumerate(voice_channel_ids):
            self.add_voice_channel(guild_id, channel_id, f"voice-{position}")

    def add_role(self, guild_id: int, role_id: int, name: str) -> None:
        """A role of the guild (before the bots connect: it shows in GUILD_CREATE)."""
        self._guilds[guild_id].roles[role_id] = name

    def add_thread(self, guild_id: int, parent_id: int, thread_id: int, name: str) -> None:
        """A public thread in a text channel of the guild: connected bots get THREAD_CREATE (and
        later ones find it in GUILD_CREATE), as Discord tells a bot that can see the channel."""
        self._guilds[guild_id].thread_ids.append(thread_id)
        thread = _Channel(thread_id, guild_id, name, parent_id=parent_id)
        self._channels[thread_id] = thread
        for bot in self._bots.values():
            if bot.session_id is not None:
                payload = self._channel_payload(thread) | {"newly_created": True}
                self._dispatch(bot, "THREAD_CREATE", payload)

    def add_voice_channel(self, guild_id: int, channel_id: int, name: str) -> None:
        """A voice channel in the guild (before the bots connect: it shows in GUILD_CREATE)."""
        self._guilds[guild_id].channel_ids.append(channel_id)
        self._channels[channel_id] = _Channel(channel_id, guild_id, name, voice=True)

    # -- serving ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The REST base to put in ``disnake.http.Route.BASE``."""
        return f"{self._origin('http')}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """The gateway URL ``GET /gateway/bot`` hands out."""
        return f"{self._origin('ws')}/gateway"

    def _origin(self, scheme: str) -> str:
        if self._url is None:
            raise RuntimeError("FakeDiscord is not serving yet")
        return f"{scheme}://{self._url}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on a free port of 127.0.0.1 until cancelled; started once listening."""
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.loglevel = "WARNING"
        # longer than aiohttp's 15 s pool keep-alive, so a client never reuses a connection
        # this server has just dropped
        config.keep_alive_timeout = 75
        app = Starlette(routes=self._routes())

        # Starlette and hypercorn spell the ASGI types differently
        serving = functools.partial(hypercorn_serve, cast(ASGIFramework, app), config, mode="asgi")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.voice.serve)
            (bound,) = await nursery.start(serving)
            self._url = bound.removeprefix("http://")
            task_status.started()

    # -- what tests observe ----------------------------------------------------------------

    def connected(self, bot: BotAccount | str) -> bool:
        """Whether the bot has a gateway session that receives dispatches."""
        return self._bot(bot)._connection is not None

    @property
    def unhandled(self) -> list[RecordedRequest]:
        """The requests to routes the fake does not implement."""
        return [r for r in self.requests if not r.handled]

    async def wait_until(self, condition: Callable[[], bool], limit_s: float = 5.0) -> None:
        """Wait until ``condition()`` holds, re-checking after every request and gateway event;
        raise :class:`trio.TooSlowError` after ``limit_s`` seconds."""
        with trio.fail_after(limit_s):
            while not condition():
                await self._changed.wait()

    async def wait_for(
        self, predicate: Callable[[RecordedRequest], bool], limit_s: float = 5.0
    ) -> RecordedRequest:
        """The first recorded request (made already or yet to come) matching ``predicate``."""
        found: list[RecordedRequest] = []

        def match() -> bool:
            found[:] = [r for r in self.requests if predicate(r)][:1]
            return bool(found)

        await self.wait_until(match, limit_s)
        return found[0]

    def delete(self, message: Json) -> None:
        """Delete a message, as its author or a moderator would (no event is sent)."""
        del self._messages[int(message["id"])]

    def messages_in(self, channel_id: int, bot: BotAccount | str | None = None) -> list[Json]:
        """The messages of a channel as they stand now (edits applied), oldest first; with
        ``bot``, only those it wrote."""
        author = str(self._bot(bot).user_id) if bot is not None else None
        return [
            m
            for m in self._messages.values()
            if m["channel_id"] == str(channel_id) and author in (None, m["author"]["id"])
        ]

    def shown(self, channel_id: int, bot: BotAccount | str | None = None) -> str:
        """The text of :meth:`messages_in`, one message per line."""
        return "\n".join(m["content"] for m in self.messages_in(channel_id, bot))

    def fastest_rewrite(self) -> float:
        """The shortest time between two writes (creation or edit) of one message, in seconds
        (``inf`` when no message was edited): Discord limits how fast a message may change."""
        gaps = [b - a for times in self._writes.values() for a, b in itertools.pairwise(times)]
        return min(gaps, default=math.inf)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- driving the bots ------------------------------------------------------------------

    async def send_message(
        self,
        bot: BotAccount | str,
        *,
        content: str,
        author_id: int,
        author_name: str,
        guild_id: int | None = None,
        channel_id: int | None = None,
        mentions: Iterable[int] = (),
        attachments: Iterable[Upload] = (),
        reply_to: Json | None = None,
        roles: Iterable[int] = (),
        limit_s: float = 5.0,
    ) -> Json:
        """Dispatch MESSAGE_CREATE to the bot and return the message. Without ``guild_id`` it is
        a DM: ``channel_id`` defaults to the DM channel between bot and author (created on
        first use); with it, ``channel_id`` may be a thread of the guild. ``attachments`` are
        served over HTTP; ``reply_to`` (a message of the channel) makes it a reply, which
        mentions the replied-to author, as Discord's client does by default; ``roles`` are the
        author's in the guild. Waits up to ``limit_s`` for the bot to have a session; while its
        connection is down the event waits for the RESUME, as on Discord."""
        account = self._bot(bot)
        author = self._users.setdefault(author_id, _user(author_id, author_name))
        channel_id = self._resolve_channel(account, guild_id, channel_id, author_id)
        extra: Json = {"attachments": [self._attachment(channel_id, f) for f in attachments]}
        mentioned = [self._user_by_id(i) for i in mentions]
        if reply_to is not None:
            extra |= self._reply_fields(channel_id, reply_to)
            replied_author = reply_to["author"]
            if all(u["id"] != replied_author["id"] for u in mentioned):
                mentioned.append(replied_author)
        message = self._message(
            channel_id=channel_id,
            author=author,
            content=content,
            mentions=mentioned,
            extra=extra,
            roles=roles,
        )
        await self.wait_until(lambda: account.session_id is not None, limit_s)
        self._dispatch(account, "MESSAGE_CREATE", message)
        return message

    async def send_interaction(
        self,
        bot: BotAccount | str,
        *,
        guild_id: int | None,
        channel_id: int | None = None,
        user_id: int,
        user_name: str = "someone",
        name: str = "agent",
        subcommand: str | None = "list",
        options: dict[str, str | int | float | bool] | None = None,
        limit_s: float = 5.0,
    ) -> str:
        """Dispatch INTERACTION_CREATE for the slash command ``/name subcommand options...``
        (delivered like :meth:`send_message`'s events); returns the interaction id.
        Without ``guild_id`` it comes from the DM channel between bot and user.

        The command id is the one the bot synced (a guild command of ``guild_id`` first, then
        a global one); an unsynced command gets a fresh id and is sent as a global one."""
        account = self._bot(bot)
        user = self._users.setdefault(user_id, _user(user_id, user_name))
        channel = self._channels[self._resolve_channel(account, guild_id, channel_id, user_id)]
        typed = [
            {"name": key, "type": self._option_type(value), "value": value}
            for key, value in (options or {}).items()
        ]
        data: Json = {"name": name, "type": 1, "options": typed}
        if subcommand is not None:
            data["options"] = [{"name": subcommand, "type": 1, "options": typed}]
        command = self._find_command(account, guild_id, name)
        data["id"] = command["id"] if command else str(self._snowflake())
        if command and "guild_id" in command:
            data["guild_id"] = command["guild_id"]

        interaction = _Interaction(
            self._snowflake(), secrets.token_urlsafe(24), account, channel.id
        )
        payload: Json = {
            "id": str(interaction.id),
            "application_id": str(account.application_id),
            "type": 2,
            "token": interaction.token,
            "version": 1,
            "channel_id": str(channel.id),
            "channel": self._channel_payload(channel),
            "data": data,
            "locale": "en-US",
            "app_permissions": ALL_PERMISSIONS,
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild_id is None:
            payload |= {
                "user": user,
                "context": 1,
                "authorizing_integration_owners": {"1": str(user_id)},
            }
        else:
            payload |= {
                "guild_id": str(guild_id),
                "guild_locale": "en-US",
                "member": _member(user),
                "context": 0,
                "authorizing_integration_owners": {"0": str(guild_id)},
            }
        self._interactions[interaction.token] = interaction
        await self.wait_until(lambda: account.session_id is not None, limit_s)
        self._dispatch(account, "INTERACTION_CREATE", payload)
        return str(interaction.id)

    async def click(
        self,
        bot: BotAccount | str,
        *,
        message: Json,
        custom_id: str,
        user_id: int,
        user_name: str = "someone",
        limit_s: float = 5.0,
    ) -> str:
        """Dispatch INTERACTION_CREATE for a click on the button ``custom_id`` of ``message``
        (a message the bot sent, an interaction's response included); returns the new
        interaction's id. Its ``UPDATE_MESSAGE`` callback edits ``message``."""
        account = self._bot(bot)
        user = self._users.setdefault(user_id, _user(user_id, user_name))
        channel = self._channels[int(message["channel_id"])]
        interaction = _Interaction(
            self._snowflake(), secrets.token_urlsafe(24), account, channel.id
        )
        interaction.original = message
        payload: Json = {
            "id": str(interaction.id),
            "application_id": str(account.application_id),
            "type": 3,
            "token": interaction.token,
            "version": 1,
            "channel_id": str(channel.id),
            "channel": self._channel_payload(channel),
            "message": message,
            "data": {"custom_id": custom_id, "component_type": 2},
            "locale": "en-US",
            "app_permissions": ALL_PERMISSIONS,
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if channel.guild_id is None:
            payload |= {"user": user, "context": 1}
        else:
            payload |= {
                "guild_id": str(channel.guild_id),
                "guild_locale": "en-US",
                "member": _member(user),
                "context": 0,
            }
        self._interactions[interaction.token] = interaction
        await self.wait_until(lambda: account.session_id is not None, limit_s)
        self._dispatch(account, "INTERACTION_CREATE", payload)
        return str(interaction.id)

    def original_response(self, interaction_id: str) -> Json | None:
        """The message an interaction's response made (or the one its component is on)."""
        for interaction in self._interactions.values():
            if str(interaction.id) == interaction_id:
                return interaction.original
        return None

    def disconnect(
        self, bot: BotAccount | str, *, code: int = 4000, forget_session: bool = False
    ) -> None:
        """Close the bot's gateway connection with ``code``. With ``forget_session`` its session
        is gone too, so a RESUME gets INVALID_SESSION and the client must IDENTIFY again."""
        account = self._bot(bot)
        if account._connection is None:
            raise RuntimeError(f"bot {account.name} is not connected")
        account._connection.close(code)
        account._connection = None
        if forget_session:
            account.session_id = None
        self._notify()

    # -- voice -----------------------------------------------------------------------------

    def bot_voice_channel(self, bot: BotAccount | str) -> int | None:
        """The voice channel the bot is in, as far as the main gateway knows (its last op 4)."""
        user_id = self._bot(bot).user_id
        for (_, member), state in self._voice_states.items():
            if member == user_id:
                return int(state["channel_id"])
        return None

    async def join_voice(self, user_id: int, channel_id: int, name: str | None = None) -> None:
        """A human joins a voice channel (leaving any other): every bot gets its
        VOICE_STATE_UPDATE, and bots connected to that channel hear of it on the voice gateway
        and take it into the DAVE group; returns once that group change is done."""
        channel = self._channels[channel_id]
        if not channel.voice or channel.guild_id is None:
            raise ValueError(f"channel {channel_id} is not a voice channel")
        if self._voice_channel_of(user_id) is not None:
            await self.leave_voice(user_id)
        self._users.setdefault(user_id, _user(user_id, name or f"user{user_id}"))
        self._set_voice_state(channel.guild_id, user_id, channel_id, secrets.token_hex(16))
        await self.voice.human_joined(channel.guild_id, channel_id, user_id)

    async def leave_voice(self, user_id: int) -> None:
        """The human leaves its voice channel (op 13 and a DAVE Remove for the bots there)."""
        where = self._voice_channel_of(user_id)
        if where is None:
            raise ValueError(f"user {user_id} is in no voice channel")
        self._set_voice_state(where[0], user_id, None, "")
        await self.voice.human_left(user_id)

    def voice_server_moved(self, bot: BotAccount | str) -> None:
        """A new VOICE_SERVER_UPDATE (new token) while the bot is in voice: disnake leaves the
        channel and joins again."""
        account = self._bot(bot)
        channel_id = self.bot_voice_channel(account)
        if channel_id is None:
            raise RuntimeError(f"bot {account.name} is not in a voice channel")
        self._voice_server_update(account, channel_id)

    async def kick_from_voice(self, bot: BotAccount | str) -> None:
        """Disconnect the bot from voice as a moderator would: its voice websocket closes with
        4014, then its voice state goes to no channel."""
        account = self._bot(bot)
        channel_id = self.bot_voice_channel(account)
        if channel_id is None:
            raise RuntimeError(f"bot {account.name} is not in a voice channel")
        if self.voice.connected(account):
            await self.voice.close(account, VOICE_DISCONNECTED)
        self._set_voice_state(self._channels[channel_id].guild_id or 0, account.user_id, None, "")
        await self.voice.bot_left(account.user_id)

    async def move_bot(self, bot: BotAccount | str, channel_id: int) -> None:
        """Move the bot to another voice channel of the guild as a moderator would: 4014, then
        VOICE_STATE_UPDATE (the new channel) and VOICE_SERVER_UPDATE."""
        account = self._bot(bot)
        if self.bot_voice_channel(account) is None:
            raise RuntimeError(f"bot {account.name} is not in a voice channel")
        if self.voice.connected(account):
            await self.voice.close(account, VOICE_DISCONNECTED)
        guild_id = self._channels[channel_id].guild_id or 0
        self._set_voice_state(guild_id, account.user_id, channel_id, account.session_id or "")
        self._voice_server_update(account, channel_id)

    def _voice_channel_of(self, user_id: int) -> tuple[int, int] | None:
        """(guild id, channel id) of the voice channel the user is in."""
        for (guild_id, member), state in self._voice_states.items():
            if member == user_id:
                return guild_id, int(state["channel_id"])
        return None

    def _on_voice_state_update(self, bot: BotAccount, d: Json) -> None:
        """Op 4 from a bot: join, move or leave (``channel_id`` null) a voice channel.
        disnake sends the ids as ints; Discord's own clients send strings."""
        guild_id = int(d["guild_id"])
        channel_id = None if d.get("channel_id") is None else int(d["channel_id"])
        channel = self._channels.get(channel_id or 0)
        if guild_id not in self._guilds or (
            channel_id is not None and (channel is None or not channel.voice)
        ):
            _log.warning("fake_discord: op 4 for an unknown guild or voice channel: %s", d)
            return
        flags = {"self_mute": bool(d.get("self_mute")), "self_deaf": bool(d.get("self_deaf"))}
        self._set_voice_state(guild_id, bot.user_id, channel_id, bot.session_id or "", **flags)
        if channel_id is None:
            assert self._nursery is not None
            self._nursery.start_soon(self.voice.bot_left, bot.user_id)
        else:
            self._voice_server_update(bot, channel_id)

    def _voice_server_update(self, bot: BotAccount, channel_id: int) -> None:
        guild_id = self._channels[channel_id].guild_id or 0
        token = secrets.token_hex(16)
        self.voice.grant(
            token,
            user_id=bot.user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            session_id=bot.session_id or "",
        )
        # host:port without a scheme, like Discord's; disnake connects to wss://{endpoint}/?v=8
        server = {"token": token, "guild_id": str(guild_id), "endpoint": self.voice.endpoint}
        self._dispatch(bot, "VOICE_SERVER_UPDATE", server)

    def _set_voice_state(
        self,
        guild_id: int,
        user_id: int,
        channel_id: int | None,
        session_id: str,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
    ) -> None:
        """Record a user's voice state and dispatch VOICE_STATE_UPDATE to every bot."""
        state: Json = {
            "guild_id": str(guild_id),
            "channel_id": None if channel_id is None else str(channel_id),
            "user_id": str(user_id),
            "member": _member(self._user_by_id(user_id)),
            "session_id": session_id,
            "deaf": False,
            "mute": False,
            "self_deaf": self_deaf,
            "self_mute": self_mute,
            "self_video": False,
            "suppress": False,
            "request_to_speak_timestamp": None,
        }
        if channel_id is None:
            self._voice_states.pop((guild_id, user_id), None)
        else:
            self._voice_states[(guild_id, user_id)] = state
        for bot in self._bots.values():
            self._dispatch(bot, "VOICE_STATE_UPDATE", state)
        self._notify()

    # -- helpers ---------------------------------------------------------------------------

    def _bot(self, bot: BotAccount | str) -> BotAccount:
        return bot if isinstance(bot, BotAccount) else self._bots[bot]

    def _snowflake(self) -> int:
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0x3FFFFF)

    def _user_by_id(self, user_id: int) -> Json:
        return self._users.get(user_id) or _user(user_id, f"user{user_id}")

    @staticmethod
    def _option_type(value: object) -> int:
        # bool first: it is an int too
        for kind, number in ((bool, 5), (int, 4), (float, 10), (str, 3)):
            if isinstance(value, kind):
                return number
        raise TypeError(f"unsupported option value {value!r}")

    @staticmethod
    def _find_command(bot: BotAccount, guild_id: int | None, name: str) -> Json | None:
        scopes = [guild_id, None] if guild_id is not None else [None]
        for scope in scopes:
            for command in bot.commands.get(scope, []):
                if command["name"] == name:
                    return command
        return None

    def _resolve_channel(
        self, bot: BotAccount, guild_id: int | None, channel_id: int | None, user_id: int
    ) -> int:
        """The channel an event from ``user_id`` happens in: a channel of ``guild_id``, or
        without a guild a DM channel (``channel_id`` if given, else the bot's DM with the user)."""
        if guild_id is not None:
            channel = self._channels.get(channel_id or 0)
            if channel is None or channel.guild_id != guild_id:
                raise ValueError(f"channel {channel_id} is not a channel of guild {guild_id}")
            return channel.id
        if channel_id is None:
            return self._dm_channel(bot, user_id)
        self._channels.setdefault(channel_id, _Channel(channel_id, None, "", user_id, bot.user_id))
        return channel_id

    def _dm_channel(self, bot: BotAccount, user_id: int) -> int:
        for channel in self._channels.values():
            if channel.recipient_id == user_id and channel.bot_id == bot.user_id:
                return channel.id
        channel_id = self._snowflake()
        self._channels[channel_id] = _Channel(channel_id, None, "", user_id, bot.user_id)
        return channel_id

    def _attachment(self, channel_id: int, upload: Upload) -> Json:
        """An attachment object (Discord's shape), its file served at its URL."""
        attachment_id = self._snowflake()
        self._files[attachment_id] = upload
        url = f"{self._origin('http')}/attachments/{channel_id}/{attachment_id}/{upload.name}"
        found: Json = {
            "id": str(attachment_id),
            "filename": upload.name,
            "size": len(upload.data),
            "url": url,
            "proxy_url": url,
        }
        if upload.content_type is not None:
            found["content_type"] = upload.content_type
        if upload.width is not None:
            found |= {"width": upload.width, "height": upload.height}
        return found

    def _reply_fields(self, channel_id: int, replied_to: Json) -> Json:
        """What makes a message a reply (type 19): the reference, and the replied-to message as
        it stands — which, as on Discord, does not carry the message it replied to in turn."""
        reference: Json = {
            "type": 0,
            "message_id": replied_to["id"],
            "channel_id": str(channel_id),
            "fail_if_not_exists": True,
        }
        guild_id = self._channels[channel_id].guild_id
        if guild_id is not None:
            reference["guild_id"] = str(guild_id)
        stored = self._messages.get(int(replied_to["id"]))  # null once deleted, as on Discord
        shown = {k: v for k, v in (stored or {}).items() if k != "referenced_message"}
        return {"type": 19, "message_reference": reference, "referenced_message": shown or None}

    def _channel_payload(self, channel: _Channel) -> Json:
        if channel.guild_id is None:
            recipient = self._user_by_id(channel.recipient_id or 0)
            return {"id": str(channel.id), "type": 1, "recipients": [recipient], "flags": 0}
        if channel.parent_id is not None:  # a public thread
            return {
                "id": str(channel.id),
                "type": 11,
                "guild_id": str(channel.guild_id),
                "parent_id": str(channel.parent_id),
                "owner_id": str(OWNER_ID),
                "name": channel.name,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "message_count": 0,
                "member_count": 1,
                "total_message_sent": 0,
                "flags": 0,
                "thread_metadata": {
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": _now(),
                    "locked": False,
                    "create_timestamp": _now(),
                },
            }
        payload: Json = {
            "id": str(channel.id),
            "type": 0,
            "guild_id": str(channel.guild_id),
            "name": channel.name,
            "position": self._guilds[channel.guild_id].channel_ids.index(channel.id),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        if channel.voice:
            return payload | {
                "type": 2,
                "bitrate": VOICE_BITRATE,
                "user_limit": 0,
                "rtc_region": None,
            }
        return payload | {"topic": None}

    def _guild_payload(self, guild: _Guild, bot: BotAccount) -> Json:
        voice_states = [s for (g, _), s in self._voice_states.items() if g == guild.id]
        in_voice = [s["member"] for s in voice_states if s["user_id"] != str(bot.user_id)]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": str(OWNER_ID),
            "unavailable": False,
            "large": False,
            "member_count": 2 + len(in_voice),  # the owner, the bot, the humans in voice
            "joined_at": _now(),
            "features": [],
            "preferred_locale": "en-US",
            "roles": [
                {
                    "id": str(role_id),
                    "name": name,
                    "permissions": ALL_PERMISSIONS,
                    "position": position,
                    "colors": {
                        "primary_color": 0,
                        "secondary_color": None,
                        "tertiary_color": None,
                    },
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
                for position, (role_id, name) in enumerate(
                    [(guild.id, "@everyone"), *guild.roles.items()]
                )
            ],
            "members": [_member(bot.user), *in_voice],
            "channels": [self._channel_payload(self._channels[c]) for c in guild.channel_ids],
            "threads": [self._channel_payload(self._channels[t]) for t in guild.thread_ids],
            "presences": [],
            "voice_states": voice_states,
            "emojis": [],
            "stickers": [],
        }

    def _message(
        self,
        *,
        channel_id: int,
        author: Json,
        content: str,
        mentions: list[Json] | None = None,
        extra: Json | None = None,
        roles: Iterable[int] = (),
    ) -> Json:
        """A full message object, stored so it can be edited, deleted and replied to."""
        guild_id = self._channels[channel_id].guild_id
        message: Json = {
            "id": str(self._snowflake()),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions or [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if guild_id is not None:
            message |= {"guild_id": str(guild_id), "member": _member(roles=roles)}
        message |= extra or {}
        self._messages[int(message["id"])] = message
        self._writes[int(message["id"])] = [time.perf_counter()]
        return message

    # -- gateway ---------------------------------------------------------------------------

    def _dispatch(self, bot: BotAccount, event: str, data: Json) -> None:
        bot._seq += 1
        frame = json.dumps({"op": Op.DISPATCH, "t": event, "s": bot._seq, "d": data})
        bot._events.append((bot._seq, frame))
        if bot._connection is not None:
            bot._connection.outbox.send_nowait(frame)

    async def _gateway(self, ws: WebSocket) -> None:
        await ws.accept()
        connection = _Connection()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.write, ws, nursery.cancel_scope)
            connection.send(Op.HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS})
            try:
                while True:
                    payload = json.loads(await ws.receive_text())
                    self._on_gateway_payload(connection, payload["op"], payload.get("d"))
            except WebSocketDisconnect:
                nursery.cancel_scope.cancel()
            finally:
                bot = connection.bot
                if bot is not None and bot._connection is connection:
                    bot._connection = None
                    self._notify()

    def _on_gateway_payload(self, connection: _Connection, op: int, d: Any) -> None:
        token = connection.bot.token if connection.bot else None
        if op in (Op.IDENTIFY, Op.RESUME):
            token = d["token"]
        self.gateway_messages.append(GatewayMessage(token, op, d))
        if op == Op.HEARTBEAT:
            connection.send(Op.HEARTBEAT_ACK, None)
        elif op == Op.IDENTIFY:
            self._identify(connection, d)
        elif op == Op.RESUME:
            self._resume(connection, d)
        elif op == Op.VOICE_STATE_UPDATE and connection.bot is not None:
            self._on_voice_state_update(connection.bot, d)
        elif op == Op.REQUEST_MEMBERS and connection.bot is not None:
            bot = connection.bot
            chunk = {
                "guild_id": d["guild_id"],
                "members": [_member(_user(OWNER_ID, "owner")), _member(bot.user)],
                "chunk_index": 0,
                "chunk_count": 1,
                "nonce": d.get("nonce"),
            }
            self._dispatch(bot, "GUILD_MEMBERS_CHUNK", chunk)
        self._notify()

    def _identify(self, connection: _Connection, d: Json) -> None:
        bot = self._bots.get(d["token"])
        if bot is None:
            connection.close(AUTHENTICATION_FAILED)
            return
        bot.identifies += 1
        if bot.close_on_identify is not None:
            connection.close(bot.close_on_identify)
            return
        bot.session_id = secrets.token_hex(16)
        bot._seq, bot._events = 0, []
        self._attach(connection, bot)
        ready = {
            "v": 10,
            "user": bot.user | {"verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in self._guilds],
            "session_id": bot.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(bot.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "_trace": ["fake-discord"],
        }
        self._dispatch(bot, "READY", ready)
        for guild in self._guilds.values():
            self._dispatch(bot, "GUILD_CREATE", self._guild_payload(guild, bot))

    def _resume(self, connection: _Connection, d: Json) -> None:
        bot = self._bots.get(d["token"])
        if bot is None or bot.session_id is None or d["session_id"] != bot.session_id:
            connection.send(Op.INVALID_SESSION, False)
            return
        bot.resumes += 1
        seen = d["seq"] or 0
        for seq, frame in bot._events:
            if seq > seen:
                connection.outbox.send_nowait(frame)
        self._attach(connection, bot)
        self._dispatch(bot, "RESUMED", {"_trace": ["fake-discord"]})

    @staticmethod
    def _attach(connection: _Connection, bot: BotAccount) -> None:
        """Make ``connection`` the bot's session: the newest one gets the dispatches."""
        connection.bot = bot
        bot._connection = connection

    # -- REST ------------------------------------------------------------------------------

    def _routes(self) -> list[BaseRoute]:
        app = "/applications/{app_id:int}"
        channel = "/channels/{channel_id:int}"
        original = "/webhooks/{app_id:int}/{token}/messages/@original"
        api: list[tuple[str, str, Handler]] = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", f"{app}/commands", self._get_commands),
            ("PUT", f"{app}/commands", self._put_commands),
            ("GET", f"{app}/guilds/{{guild_id:int}}/commands", self._get_commands),
            ("PUT", f"{app}/guilds/{{guild_id:int}}/commands", self._put_commands),
            ("POST", f"{channel}/messages", self._create_message),
            ("GET", f"{channel}/messages/{{message_id:int}}", self._get_message),
            ("PATCH", f"{channel}/messages/{{message_id:int}}", self._edit_message),
            ("DELETE", f"{channel}/messages/{{message_id:int}}", self._delete_message),
            ("POST", f"{channel}/typing", self._typing),
            ("POST", "/interactions/{interaction_id:int}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app_id:int}/{token}", self._followup),
            ("GET", original, self._get_original),
            ("PATCH", original, self._edit_original),
        ]
        routes: list[BaseRoute] = [
            Route(API_PREFIX + path, self._endpoint(handler), methods=[method])
            for method, path, handler in api
        ]
        routes.append(
            Route(
                "/attachments/{channel_id:int}/{attachment_id:int}/{filename}",
                self._endpoint(self._get_attachment),
                methods=["GET"],
            )
        )
        routes.append(WebSocketRoute("/gateway", self._gateway))
        every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        routes.append(Route("/{path:path}", self._endpoint(None), methods=every_method))
        return routes

    def _endpoint(self, handler: Handler | None) -> Callable[[Request], Awaitable[Response]]:
        """Wrap ``handler`` (None: the fallback for unknown routes) to parse, answer, record."""

        async def endpoint(request: Request) -> Response:
            arrived = time.perf_counter()
            body = await request.body()
            is_json = request.headers.get("content-type", "").startswith("application/json")
            call = _Call(request, json.loads(body) if body and is_json else None, None)
            call.token = _bot_token(request)
            path = request.url.path.removeprefix(API_PREFIX)
            if handler is None:
                _log.warning("fake_discord: no route for %s %s", request.method, path)
                response: Response = JSONResponse(
                    {"message": f"fake_discord: no route for {request.method} {path}", "code": 0},
                    status_code=404,
                )
            else:
                try:
                    response = await handler(call)
                except _ApiError as error:
                    response = JSONResponse(
                        {"message": error.message, "code": error.code}, status_code=error.status
                    )
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=path,
                    query=dict(request.query_params),
                    json=call.json,
                    token=call.token,
                    status=response.status_code,
                    handled=handler is not None,
                    at=arrived,
                )
            )
            self._notify()
            return response

        return endpoint

    def _authed(self, call: _Call) -> BotAccount:
        bot = self._bots.get(call.token or "")
        if bot is None:
            raise _ApiError(401, "401: Unauthorized")
        return bot

    def _application(self, call: _Call) -> BotAccount:
        bot = self._authed(call)
        if call.param("app_id") != bot.application_id:
            raise _ApiError(403, "Missing Access", 50001)
        return bot

    def _channel(self, call: _Call, bot: BotAccount) -> _Channel:
        channel = self._channels.get(call.param("channel_id"))
        if channel is None:
            raise _ApiError(404, "Unknown Channel", 10003)
        if channel.bot_id not in (None, bot.user_id):
            raise _ApiError(403, "Missing Access", 50001)
        return channel

    def _stored_message(self, call: _Call) -> Json:
        message = self._messages.get(call.param("message_id"))
        if message is None or message["channel_id"] != str(call.param("channel_id")):
            raise _ApiError(404, "Unknown Message", 10008)
        return message

    def _interaction(self, call: _Call) -> _Interaction:
        """The interaction a callback or webhook route names; records it under its bot."""
        interaction = self._interactions.get(call.request.path_params["token"])
        if interaction is None:
            raise _ApiError(404, "Unknown Webhook", 10015)
        call.token = interaction.bot.token
        return interaction

    @staticmethod
    def _message_fields(body: Json) -> Json:
        """The fields of a create/edit payload that the stored message takes over."""
        keys = ("content", "embeds", "components", "tts", "flags", "nonce")
        return {k: body[k] for k in keys if body.get(k) is not None}

    async def _get_me(self, call: _Call) -> Response:
        bot = self._authed(call)
        return JSONResponse(bot.user | {"verified": True, "mfa_enabled": False, "flags": 0})

    async def _get_application(self, call: _Call) -> Response:
        """commands.Bot and InteractionBot fetch this right after login to learn their owner."""
        bot = self._authed(call)
        return JSONResponse(
            {
                "id": str(bot.application_id),
                "name": bot.name,
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": _user(OWNER_ID, "owner"),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": bot.user,
            }
        )

    async def _create_dm(self, call: _Call) -> Response:
        bot = self._authed(call)
        recipient_id = int(call.json["recipient_id"])
        channel = self._channels[self._dm_channel(bot, recipient_id)]
        return JSONResponse(self._channel_payload(channel) | {"last_message_id": None})

    async def _get_gateway_bot(self, call: _Call) -> Response:
        self._authed(call)
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return JSONResponse({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_commands(self, call: _Call) -> Response:
        bot = self._application(call)
        return JSONResponse(bot.commands.get(call.request.path_params.get("guild_id"), []))

    async def _put_commands(self, call: _Call) -> Response:
        """Bulk overwrite: a command keeps its id when one of that name and type existed."""
        bot = self._application(call)
        guild_id: int | None = call.request.path_params.get("guild_id")
        old = {(c["name"], c["type"]): c["id"] for c in bot.commands.get(guild_id, [])}
        commands = []
        for body in call.json:
            kind = body.get("type", 1)
            command = body | {
                "id": old.get((body["name"], kind)) or str(self._snowflake()),
                "type": kind,
                "application_id": str(bot.application_id),
                "version": str(self._snowflake()),
            }
            if guild_id is not None:
                command["guild_id"] = str(guild_id)
            commands.append(command)
        bot.commands[guild_id] = commands
        return JSONResponse(commands)

    async def _create_message(self, call: _Call) -> Response:
        bot = self._authed(call)
        channel = self._channel(call, bot)
        body: Json = call.json or {}
        extra = self._message_fields(body)
        if reference := body.get("message_reference"):
            replied_to = self._messages.get(int(reference.get("message_id", 0)))
            if replied_to is None:
                raise _ApiError(400, "Invalid Form Body: Unknown message", 50035)
            extra |= self._reply_fields(channel.id, replied_to)
        message = self._message(
            channel_id=channel.id, author=bot.user, content=body.get("content") or "", extra=extra
        )
        return JSONResponse(message)

    async def _get_message(self, call: _Call) -> Response:
        self._channel(call, self._authed(call))
        return JSONResponse(self._stored_message(call))

    async def _get_attachment(self, call: _Call) -> Response:
        """The CDN: a file someone attached (no token needed, as the URL is the capability)."""
        upload = self._files.get(call.param("attachment_id"))
        if upload is None or upload.name != call.request.path_params["filename"]:
            return Response(status_code=404)
        return Response(upload.data, media_type=upload.content_type or "application/octet-stream")

    async def _edit_message(self, call: _Call) -> Response:
        self._authed(call)
        if (held := self.edits_wait) is not None:
            self.edits_waiting.append(call.json or {})
            self._notify()
            await held.wait()
        message = self._stored_message(call)
        message |= self._message_fields(call.json or {}) | {"edited_timestamp": _now()}
        self._writes[int(message["id"])].append(time.perf_counter())
        return JSONResponse(message)

    async def _delete_message(self, call: _Call) -> Response:
        self._authed(call)
        del self._messages[int(self._stored_message(call)["id"])]
        return Response(status_code=204)

    async def _typing(self, call: _Call) -> Response:
        self._channel(call, self._authed(call))
        return Response(status_code=204)

    async def _callback(self, call: _Call) -> Response:
        interaction = self._interaction(call)
        if interaction.id != call.param("interaction_id"):
            raise _ApiError(404, "Unknown interaction", 10062)
        if interaction.responded:
            raise _ApiError(400, "Interaction has already been acknowledged.", 40060)
        interaction.responded = True
        kind = call.json["type"]
        if kind in (CHANNEL_MESSAGE_WITH_SOURCE, DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE):
            data: Json = call.json.get("data") or {}
            loading = (
                {"flags": LOADING_FLAG} if kind == DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE else {}
            )
            interaction.original = self._webhook_message(interaction, data | loading)
        elif kind == UPDATE_MESSAGE and interaction.original is not None:
            body: Json = call.json.get("data") or {}
            interaction.original |= self._message_fields(body) | {"edited_timestamp": _now()}
            if "components" in body:
                interaction.original["components"] = body["components"]
        return Response(status_code=204)

    def _webhook_message(self, interaction: _Interaction, body: Json) -> Json:
        bot = interaction.bot
        extra = self._message_fields(body) | {
            "webhook_id": str(bot.application_id),
            "application_id": str(bot.application_id),
        }
        return self._message(
            channel_id=interaction.channel_id,
            author=bot.user,
            content=body.get("content") or "",
            extra=extra,
        )

    def _original(self, call: _Call) -> Json:
        original = self._interaction(call).original
        if original is None:
            raise _ApiError(404, "Unknown Message", 10008)
        return original

    async def _followup(self, call: _Call) -> Response:
        interaction = self._interaction(call)
        return JSONResponse(self._webhook_message(interaction, call.json or {}))

    async def _get_original(self, call: _Call) -> Response:
        return JSONResponse(self._original(call))

    async def _edit_original(self, call: _Call) -> Response:
        original = self._original(call)
        body: Json = call.json or {}
        original |= self._message_fields(body) | {"edited_timestamp": _now()}
        if "flags" not in body:
            original["flags"] &= ~LOADING_FLAG
        return JSONResponse(original)
