"""The ``discord`` actor: one disnake bot answering as its agent.

The bot lives on the shared asyncio loop (:mod:`~voxbridge.plugins.aio`); everything it hears is
handed to this Trio actor, which decides whether to answer, asks the brain, and sends the reply
back through the loop. A new client is made for every attempt, on the bridge's loop; cancelling
the actor first settles the replies in flight (their last edits, through the bot still online),
then closes the bot (gateway and HTTP session) within the grace period; a bot crash is this
actor's exception, and the supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import disnake
import trio
from disnake.ext import commands
from disnake.interactions import ApplicationCommandInteraction, MessageInteraction

from ...brain import Image, Message, Turn
from ...config.model import reveal
from ...errors import BrainError, PermanentFailure, VoxbridgeError
from ..aio import run_on_loop, to_trio
from ..api import Context
from .access import Access, Where, channel_ids
from .attachments import MAX_IMAGES, Attachment, read_attachments
from .chain import attachments_of, clean, turns_of, walk
from .handover import MAX_AGE, Handover, fresh
from .limits import Rate, RateLimiter
from .memory import FORGET, KEEP, MemoryCommands, button_owner
from .reply import LAST_EDIT_WAIT, Reply, split_message, stream_to
from .rooms import VoiceRooms

__all__ = ["APOLOGY", "QUEUE_LIMIT", "run", "slow_down"]

log = logging.getLogger("voxbridge.plugins.discord")

QUEUE_LIMIT = 20  # messages of one person in one channel waiting while the brain is busy
APOLOGY = "Sorry — I can't answer right now. Please try again in a moment."
TYPING_AFTER = 0.3  # a quicker answer needs no "typing…" (and spends no request on it)
TYPING_EVERY = 8.0  # Discord shows "typing" for about 10 s per trigger
_INTENTS_HELP = (
    "Discord refused the gateway intents (close 4014): in the Developer Portal, open this bot's "
    "Bot page and switch on 'Message Content Intent' under Privileged Gateway Intents"
)

T = TypeVar("T")
Inter = ApplicationCommandInteraction[commands.InteractionBot]


@dataclass(frozen=True, slots=True)
class _Incoming:
    """A message heard, as plain data: what answering it needs but the message object itself
    (which belongs to the client that heard it)."""

    message_id: int
    channel_id: int
    guild_id: int | None
    author_id: int
    author_name: str
    text: str
    addressed: bool  # a DM, a mention or a reply to the bot: always answered
    where: Where | None = None  # for allow/block (None: the agent lets everyone talk)
    attachments: tuple[Attachment, ...] = ()
    replying: bool = False  # it replies to a message: its chain is the context


@dataclass(frozen=True, slots=True)
class _Waiting:
    """A message in a lane: what it asks, when it was heard (Trio's clock), and its message
    object, touched only on the asyncio loop (None: a bot before this one heard it; it is
    fetched again to be answered)."""

    item: _Incoming
    heard_at: float
    message: disnake.Message | None = None

    def left(self) -> _Waiting:
        """As a stopping bot leaves it to the next one: nothing of its client."""
        return _Waiting(dataclasses.replace(self.item, attachments=()), self.heard_at)


@dataclass(eq=False)
class _Lane:
    """One person's messages in one channel, answered in order; lanes run side by side, so a
    busy channel answers several people at once."""

    waiting: collections.deque[_Waiting]
    serving: bool = False  # a task answers them (not while the bot is not ready, or stopping)


def slow_down(rate: Rate, wait: float) -> str:
    """The one short reply to a person past ``limits.per_user``."""
    seconds = max(1, round(wait))
    if seconds < 90:
        when = f"{seconds} second{'s' if seconds != 1 else ''}"
    elif seconds < 90 * 60:
        when = f"{round(seconds / 60)} minutes"
    else:
        when = f"{round(seconds / 3600)} hours"
    return f"⏳ You've reached my limit of {rate.words()}. Please come back in {when}."


def _from_trio(token: trio.lowlevel.TrioToken, fn: Callable[[], T]) -> asyncio.Future[T]:
    """From the asyncio loop: run the plain function ``fn`` in the Trio thread, await the result
    without blocking the loop (every bot shares it)."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    aio_loop = future.get_loop()

    def call() -> None:
        try:
            result = fn()
        except Exception as exc:
            aio_loop.call_soon_threadsafe(future.set_exception, exc)
        else:
            aio_loop.call_soon_threadsafe(future.set_result, result)

    to_trio(token, call)
    return future


class _Commands:
    """``/agent list|current|select`` (VoxBridge's wording: ⭐ default, 🔌 discord enabled)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def list(self, guild_id: int | None) -> str:
        fleet = self._ctx.fleet
        default = fleet.default_agent_id()
        active = fleet.active_agent_id(guild_id) if guild_id is not None else None
        lines = []
        for agent in sorted(fleet.agents().values(), key=lambda a: a.name.casefold()):
            marks = ("⭐" if agent.id == default else "") + (
                "🔌" if "discord" in agent.enabled_plugins else ""
            )
            here = " ← active here" if agent.id == active else ""
            about = f" — {reveal(agent.description)}" if agent.description else ""
            lines.append(f"{marks} **{agent.name}**{about}{here}".strip())
        return "\n".join(lines) or "No agents are loaded."

    def current(self, guild_id: int | None) -> str:
        fleet = self._ctx.fleet
        if guild_id is None:
            return f"In DMs I answer as **{self._ctx.agent.name}**."
        agent_id = fleet.active_agent_id(guild_id)
        agent = fleet.agents().get(agent_id or "")
        if agent is None:
            return "No agent is active here: pick one with `/agent select`."
        how = "selected here" if fleet.selected_agent_id(guild_id) == agent.id else "default"
        return f"The active agent here is **{agent.name}** ({how})."

    def select(self, guild_id: int | None, name: str) -> str:
        if guild_id is None:
            return "Selections apply to servers; in DMs every agent answers for itself."
        fleet = self._ctx.fleet
        agent = fleet.agent_named(name.strip())
        if agent is None:
            return f"No agent is called **{name}**: see `/agent list`."
        if "discord" not in agent.enabled_plugins:
            return f"**{agent.name}** has no Discord bot enabled: pick an agent marked 🔌."
        fleet.select(guild_id, agent.id)
        return f"✅ **{agent.name}** now answers in this server."


def _people(channel: disnake.abc.GuildChannel, me: int) -> int:
    """How many people (not bots) are in a voice channel. From its voice states: a member the
    cache does not hold yet counts as a person (bots in a guild are members the cache knows)."""
    states = getattr(channel, "voice_states", {})
    members = (channel.guild.get_member(user_id) for user_id in states if user_id != me)
    return sum(1 for member in members if member is None or not member.bot)


def _make_bot(
    ctx: Context,
    token: trio.lowlevel.TrioToken,
    deliver: Callable[[_Incoming, disnake.Message], None],
    became_ready: Callable[[], None],
    rooms: VoiceRooms,
    spawn: Callable[[Callable[[], Awaitable[None]]], None],
) -> commands.InteractionBot:
    """The disnake client for one attempt; call on the asyncio loop (it binds to it)."""
    intents = disnake.Intents(
        guilds=True,
        guild_messages=True,
        dm_messages=True,
        message_content=True,
        voice_states=True,  # who is in which voice channel (not privileged)
    )
    ca_file = ctx.options.get("discord_ca_file")
    connector = (
        aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(ca_file)))
        if ca_file
        else None
    )
    bot = commands.InteractionBot(intents=intents, guild_ready_timeout=2.0, connector=connector)
    watched = {int(c) for c in ctx.config.settings.get("channels", ())}
    replies = _Commands(ctx)

    @bot.event
    async def on_ready() -> None:
        to_trio(token, became_ready)
        me = bot.user.id if bot.user else 0
        for channel_id in rooms.listed:
            channel = bot.get_channel(channel_id)
            if isinstance(channel, disnake.abc.GuildChannel):
                guild_id, people = channel.guild.id, _people(channel, me)
                to_trio(token, functools.partial(rooms.presence, guild_id, channel_id, people))

    @bot.event
    async def on_voice_state_update(
        member: disnake.Member, before: disnake.VoiceState, after: disnake.VoiceState
    ) -> None:
        if not rooms.enabled:
            return
        guild_id = member.guild.id
        me = bot.user.id if bot.user else 0
        if member.id == me:
            where = after.channel.id if after.channel else None
            to_trio(token, lambda: rooms.bot_moved(guild_id, where))
            return
        for channel in {before.channel, after.channel}:
            if channel is not None:
                people = _people(channel, me)
                to_trio(token, functools.partial(rooms.presence, guild_id, channel.id, people))

    access = Access.from_settings(ctx.config.settings)
    everyone = access.open  # then a message needs no look at its roles and channels
    roles = bool(access.allow_roles or access.block_roles)

    @bot.event
    async def on_message(message: disnake.Message) -> None:
        me = bot.user
        if me is None or message.author.bot or message.author.id == me.id:
            return
        is_dm = message.guild is None
        channel = message.channel
        parent = getattr(channel, "parent_id", None)  # a thread's channel
        ref = message.reference
        replied = ref.resolved if ref is not None else None
        addressed = (
            is_dm
            or any(u.id == me.id for u in message.mentions)
            or (isinstance(replied, disnake.Message) and replied.author.id == me.id)
        )
        if not (addressed or channel.id in watched or parent in watched):
            return
        where = None
        if not everyone:
            category = getattr(channel, "category_id", None) or getattr(
                getattr(channel, "parent", None), "category_id", None
            )
            member_roles = getattr(message.author, "roles", ()) if roles else ()
            where = Where(
                message.author.id,
                frozenset(r.id for r in member_roles),
                channel_ids(channel.id, parent, category),
                is_dm,
            )
        item = _Incoming(
            message_id=message.id,
            channel_id=channel.id,
            guild_id=message.guild.id if message.guild else None,
            author_id=message.author.id,
            author_name=message.author.display_name,
            text=clean(message.content, me.id),
            addressed=addressed,
            where=where,
            attachments=attachments_of(message) if message.attachments else (),
            replying=ref is not None,
        )
        to_trio(token, lambda: deliver(item, message))

    @bot.slash_command(name="agent", description="Which agent answers here")
    async def agent(inter: Inter) -> None:
        pass

    def guild_of(inter: Inter) -> int | None:
        guild_id: int | None = inter.guild_id
        return guild_id

    @agent.sub_command(name="list", description="The agents (⭐ default, 🔌 on Discord)")
    async def agent_list(inter: Inter) -> None:
        text = await _from_trio(token, lambda: replies.list(guild_of(inter)))
        # A long fleet does not fit one message: the rest follows up, in order.
        first, *rest = split_message(text)
        await inter.response.send_message(first)
        for part in rest:
            await inter.followup.send(part)

    @agent.sub_command(name="current", description="The agent answering in this server")
    async def agent_current(inter: Inter) -> None:
        text = await _from_trio(token, lambda: replies.current(guild_of(inter)))
        await inter.response.send_message(text)

    @agent.sub_command(name="select", description="Choose the agent answering in this server")
    async def agent_select(inter: Inter, name: str) -> None:
        text = await _from_trio(token, lambda: replies.select(guild_of(inter), name))
        await inter.response.send_message(text)

    remembered = MemoryCommands(ctx)

    def on_trio(work: Callable[[], Awaitable[None]]) -> None:
        to_trio(token, lambda: spawn(work))

    @bot.slash_command(name="memory", description="What this agent remembers about you")
    async def memory(inter: Inter) -> None:
        pass

    @memory.sub_command(name="show", description="What this agent remembers about you")
    async def memory_show(inter: Inter) -> None:
        user = inter.author.id

        async def answer() -> None:
            text = await remembered.show(user)
            await run_on_loop(lambda: inter.response.send_message(text, ephemeral=True))

        on_trio(answer)

    @memory.sub_command(name="forget", description="Erase what this agent remembers about you")
    async def memory_forget(inter: Inter) -> None:
        user = inter.author.id

        async def answer() -> None:
            text, anything = await remembered.ask_forget(user)
            buttons = (
                [
                    disnake.ui.Button(
                        label="Forget everything",
                        style=disnake.ButtonStyle.danger,
                        custom_id=f"{FORGET}:{user}",
                    ),
                    disnake.ui.Button(
                        label="Keep",
                        style=disnake.ButtonStyle.secondary,
                        custom_id=f"{KEEP}:{user}",
                    ),
                ]
                if anything
                else []
            )
            await run_on_loop(
                lambda: inter.response.send_message(text, components=buttons, ephemeral=True)
            )

        on_trio(answer)

    @bot.listen("on_button_click")
    async def memory_button(inter: MessageInteraction[commands.InteractionBot]) -> None:
        owner = button_owner(inter.component.custom_id or "")
        if owner is None:
            return
        action, user = owner
        if inter.author.id != user:
            await inter.response.send_message("This button is not yours.", ephemeral=True)
            return

        async def answer() -> None:
            text = await remembered.forget(user) if action == FORGET else "Nothing was forgotten."
            await run_on_loop(lambda: inter.response.edit_message(content=text, components=[]))

        on_trio(answer)

    @bot.slash_command(name="voice", description="This agent in voice channels")
    async def voice(inter: Inter) -> None:
        pass

    @voice.sub_command(name="join", description="Join your voice channel")
    async def voice_join(inter: Inter) -> None:
        state = getattr(inter.author, "voice", None)
        if not rooms.enabled or not rooms.follow:
            text = "Voice commands are off for this agent (plugins.discord.voice.follow)."
        elif inter.guild_id is None or state is None or state.channel is None:
            text = "Join a voice channel first, then ask again."
        else:
            guild_id, channel_id = inter.guild_id, state.channel.id
            to_trio(token, lambda: rooms.want(guild_id, channel_id))
            text = f"Joining <#{channel_id}> 🔊"
        await inter.response.send_message(text)

    @voice.sub_command(name="leave", description="Leave the voice channel")
    async def voice_leave(inter: Inter) -> None:
        if not rooms.enabled or not rooms.follow or inter.guild_id is None:
            text = "Voice commands are off for this agent (plugins.discord.voice.follow)."
        else:
            guild_id = inter.guild_id
            to_trio(token, lambda: rooms.leave(guild_id))
            text = "Leaving the voice channel 👋"
        await inter.response.send_message(text)

    return bot


async def run(ctx: Context, *, task_status: trio.TaskStatus[None]) -> None:
    """Keep the agent's bot online until cancelled.

    Raises:
        PermanentFailure: the token is invalid (401, close 4004) or a privileged intent is not
            enabled for the bot (close 4014).
    """
    api_base = ctx.options.get("discord_api_base")
    if api_base:
        # Class-wide in disnake: every bot of this process talks to the same API anyway.
        disnake.http.Route.BASE = str(api_base).rstrip("/")
    settings = ctx.config.settings
    secret = settings["bot_token"]
    token = trio.lowlevel.current_trio_token()
    lanes: dict[tuple[int, int], _Lane] = {}
    ready = trio.Event()
    access = Access.from_settings(settings)
    per_user = (settings.get("limits") or {}).get("per_user")
    rate = Rate.parse(per_user) if per_user else None
    limiter = ctx.lasting("discord.limits", RateLimiter)  # outlives this actor (see .limits)
    # What the bot before this one left unanswered (and, on a stop, what this one leaves).
    handover: Handover[_Waiting] = ctx.lasting("discord.waiting", Handover)
    online = trio.CancelScope(shield=True)  # lifted once every answer has settled

    try:
        async with trio.open_nursery() as nursery:
            answers: trio.Nursery = await nursery.start(_answering, online)

            def serve(key: tuple[int, int], lane: _Lane) -> None:
                if not lane.serving and ready.is_set() and online.shield:
                    lane.serving = True
                    answers.start_soon(_serve_lane, ctx, lanes, key, lane, bot_holder, answers)

            def queue(waiting: _Waiting) -> bool:
                """Put a message in its lane (False: the lane is full); answered as soon as the
                bot is ready — while it goes offline, it waits for the next bot."""
                key = (waiting.item.channel_id, waiting.item.author_id)
                lane = lanes.setdefault(key, _Lane(collections.deque()))
                if len(lane.waiting) >= QUEUE_LIMIT:
                    return False
                lane.waiting.append(waiting)
                serve(key, lane)
                return True

            def deliver(item: _Incoming, message: disnake.Message) -> None:  # in the Trio thread
                if not item.addressed and (
                    item.guild_id is None
                    or ctx.fleet.active_agent_id(item.guild_id) != ctx.agent_id
                ):
                    return  # an ambient message for another agent
                if item.where is not None and access.refuses(item.where):
                    ctx.count("messages_refused")
                    return
                if rate is not None:
                    now, person = trio.current_time(), f"discord:{item.author_id}"
                    wait = limiter.take(person, rate, now)
                    if wait:
                        ctx.count("messages_limited")
                        if limiter.first_refusal(person, wait, now) and online.shield:
                            nursery.start_soon(_say, ctx, message, slow_down(rate, wait))
                        return
                if not queue(_Waiting(item, trio.current_time(), message)):
                    ctx.count("messages_dropped")
                    ctx.log.warning(
                        "⚠️ channel %s: %d messages of one person waiting already; one dropped",
                        item.channel_id,
                        QUEUE_LIMIT,
                    )

            def take_over(left: list[_Waiting]) -> None:
                young, old = fresh(left, trio.current_time())
                if old:
                    _unanswered(ctx, old, f"heard over {MAX_AGE:.0f}s ago")
                taken = sum(queue(w) for w in young)
                if taken < len(young):
                    _unanswered(ctx, len(young) - taken, "past the queue's bound")
                if taken:
                    ctx.log.info("↪️ %d messages heard before a restart are answered first", taken)

            def became_ready() -> None:
                if not ready.is_set():
                    ready.set()
                    for key, lane in list(lanes.items()):  # those the bot before this one left
                        serve(key, lane)
                    task_status.started()

            bot_holder: list[commands.InteractionBot] = []
            rooms = VoiceRooms(ctx, lambda: bot_holder[-1] if bot_holder else None, nursery)

            async def main() -> None:  # on the asyncio loop
                bot = _make_bot(ctx, token, deliver, became_ready, rooms, nursery.start_soon)
                bot_holder.append(bot)
                try:
                    await bot.start(secret.reveal(), reconnect=True)
                finally:
                    if not bot.is_closed():
                        await bot.close()
                    _cancel_leftovers(bot)

            handover.attach(take_over)
            try:
                with online:
                    await run_on_loop(main, grace=ctx.grace)
            except disnake.LoginFailure:
                raise PermanentFailure(
                    "Discord rejected the bot token (401): reset it in the "
                    "Developer Portal and put the new one in the file"
                ) from None
            except disnake.PrivilegedIntentsRequired:
                raise PermanentFailure(_INTENTS_HELP) from None
            except disnake.ConnectionClosed as exc:
                if exc.code == 4004:
                    raise PermanentFailure(
                        "Discord closed the gateway with 4004 (authentication "
                        "failed): the bot token is invalid"
                    ) from None
                if exc.code == 4014:
                    raise PermanentFailure(_INTENTS_HELP) from None
                raise
            finally:
                handover.detach(take_over)
            raise RuntimeError("the Discord client stopped by itself")
    finally:
        _leave(ctx, handover, lanes)


async def _answering(
    online: trio.CancelScope, *, task_status: trio.TaskStatus[trio.Nursery]
) -> None:
    """Hold the nursery where answers are made and settled, until cancelled.

    ``online`` shields the bot from the cancellation that stops the actor until every answer
    in flight has had its last edit (each within its wait: see :meth:`.Reply.last_word`), so a
    reply cut off by the stop is settled through the bot still online; then the bot closes.
    """
    try:
        async with trio.open_nursery() as answers:
            task_status.started(answers)
            await trio.sleep_forever()
    finally:
        online.shield = False


def _cancel_leftovers(bot: commands.InteractionBot) -> None:
    """Cancel the tasks disnake left behind for ``bot`` on the shared loop.

    InteractionBot schedules its command sync at login to wait for the first connection; when
    the login fails or the bot closes first, that task would wait forever (and be reported as
    destroyed while pending). Other bots' tasks on the loop are left alone.
    """
    for task in asyncio.all_tasks():
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is not None and frame.f_locals.get("self") is bot and not task.done():
            task.cancel()


async def _serve_lane(
    ctx: Context,
    lanes: dict[tuple[int, int], _Lane],
    key: tuple[int, int],
    lane: _Lane,
    bots: list[commands.InteractionBot],
    background: trio.Nursery,
) -> None:
    """Answer one person's messages in one channel in order, one at a time, then end (the
    last edits of an answer, held back by the edit rhythm, are made in ``background`` while
    the next one starts). A stop leaves the messages not begun in the lane, for the next bot."""
    try:
        while lane.waiting:
            first = lane.waiting[0]
            item, message = first.item, first.message
            if message is None:
                item, message = await _heard_again(ctx, item, bots[-1])
            await trio.lowlevel.checkpoint()  # a stop come meanwhile: the message stays
            lane.waiting.popleft()
            if message is not None:
                # Stopped before the person saw a word of it: it waits for the next bot again.
                unseen = functools.partial(lane.waiting.appendleft, first)
                await _answer(ctx, item, message, bots[-1], background, unseen)
    finally:
        lane.serving = False
        if lanes.get(key) is lane and not lane.waiting:
            del lanes[key]


async def _heard_again(
    ctx: Context, item: _Incoming, bot: commands.InteractionBot
) -> tuple[_Incoming, disnake.Message | None]:
    """A message a bot before this one heard, fetched through this one (None: it is gone)."""
    channel = bot.get_partial_messageable(item.channel_id)

    async def fetch() -> tuple[_Incoming, disnake.Message]:
        message = await channel.fetch_message(item.message_id)
        # Its attachments are read through this bot's session, not the closed one's.
        attachments = attachments_of(message) if message.attachments else ()
        return dataclasses.replace(item, attachments=attachments), message

    try:
        return await run_on_loop(fetch)
    except disnake.NotFound:
        ctx.log.info("a message heard before a restart was deleted since: not answered")
    except disnake.HTTPException as exc:
        _unanswered(ctx, 1, f"it could not be fetched again ({exc})")
    return item, None


def _unanswered(ctx: Context, count: int, why: str, *, counted: bool = True) -> None:
    if counted:
        ctx.count("messages_dropped", count)
    ctx.log.warning("⚠️ %d waiting message(s) will not be answered: %s", count, why)


def _leave(ctx: Context, handover: Handover[_Waiting], lanes: dict[tuple[int, int], _Lane]) -> None:
    """The bot has stopped: hand the messages still waiting to the next bot of the agent, or
    at shutdown say how many go unanswered (an agent deleted: see .handover)."""
    left = [waiting.left() for lane in lanes.values() for waiting in lane.waiting]
    lanes.clear()
    if not left:
        return
    if ctx.fleet.stopping:
        _unanswered(ctx, len(left), "voxbridge is shutting down")
        return

    def lost(count: int) -> None:  # the actor's counters went with the agent: a warning only
        _unanswered(ctx, count, "the agent was deleted as its bot stopped", counted=False)

    handover.leave(left, lost)


async def _say(ctx: Context, message: disnake.Message, text: str) -> None:
    try:
        await run_on_loop(lambda: message.reply(text, mention_author=False))
    except disnake.HTTPException as exc:
        ctx.count("send_errors")
        ctx.log.error("❌ could not reply in channel %s: %s", message.channel.id, exc)


async def _typing(message: disnake.Message) -> None:
    await trio.sleep(TYPING_AFTER)
    while True:
        await run_on_loop(lambda: message.channel.trigger_typing())
        await trio.sleep(TYPING_EVERY)


async def _settle(ctx: Context, reply: Reply[disnake.Message]) -> None:
    try:
        await reply.settle()
    except disnake.HTTPException as exc:
        ctx.count("send_errors")
        ctx.log.error("❌ could not finish a reply: %s", exc)


class _ReplySink:
    """Pages of a reply on Discord: the first replies to the message, each next one to the
    page before (so a reply to any page brings the whole answer back: see .chain)."""

    def __init__(self, message: disnake.Message, typing: trio.CancelScope) -> None:
        self._message = message
        self._typing = typing
        self.first_post_at: float | None = None

    async def post(self, text: str) -> disnake.Message:
        if self.first_post_at is None:
            self._typing.cancel()  # the text itself shows that the bot is writing
            self.first_post_at = trio.current_time()
        last = self._message
        page = await run_on_loop(lambda: last.reply(text, mention_author=False))
        self._message = page
        return page

    async def edit(self, handle: disnake.Message, text: str) -> None:
        await run_on_loop(lambda: handle.edit(content=text))


@dataclass(frozen=True, slots=True)
class _Asked:
    """A question as the brain gets it: the text (attachments named, text files inlined), the
    images shown with it, and for a reply the chain it answers (None: the conversation's
    latest turns are the context)."""

    text: str
    images: tuple[Image, ...] = ()
    chain: list[Turn] | None = None


async def _asked(
    ctx: Context, item: _Incoming, message: disnake.Message, bot: commands.InteractionBot
) -> _Asked:
    if not (item.attachments or item.replying):
        return _Asked(item.text)  # the usual message: nothing to read or fetch
    agent = ctx.agent
    vision = agent.llm is not None and agent.llm.vision  # n8n reads no pictures
    text, images = item.text, tuple[Image, ...]()
    if item.attachments:
        notes, images = await read_attachments(item.attachments, vision=vision)
        text = f"{text}\n{notes}".strip()
    chain = None
    if item.replying and agent.history > 0:
        said = await run_on_loop(lambda: walk(bot, message, agent.history))
        if said:
            left = MAX_IMAGES - len(images)
            chain, _ = await turns_of(said, item.author_id, vision=vision, images=left)
    return _Asked(text, images, chain)


async def _answer(
    ctx: Context,
    item: _Incoming,
    message: disnake.Message,
    bot: commands.InteractionBot,
    background: trio.Nursery,
    unseen: Callable[[], None],
) -> None:
    """Answer ``item``; ``unseen()`` when a stop of the bot cuts it before anything of the
    answer was shown — only "typing…" — so that the next bot answers it."""
    agent = ctx.agent
    place = f"discord:{item.channel_id}"  # a channel, a thread or a DM: each its own
    person = f"discord:{item.author_id}"
    asked = await _asked(ctx, item, message, bot)
    text = asked.text
    conversation = await ctx.memory.conversation(place)
    exchange = conversation.ask(text, person=person, name=item.author_name)
    if asked.chain is None:
        turns = exchange.context(agent.history)
    else:  # a reply: the chain it answers, in place of the channel's latest turns
        turns = [*asked.chain, Turn("user", text)]
    if asked.images:  # shown with this request only: memory keeps their names
        turns[-1] = Turn("user", text, asked.images)
    question = Message(
        session_id=place,
        user_id=str(item.author_id),
        username=item.author_name,
        text=text,
        person=person,
    )
    started = trio.current_time()
    typing = trio.CancelScope()
    sink = _ReplySink(message, typing)
    failure: VoxbridgeError | disnake.HTTPException | None = None
    said, complete, ended = "", False, False
    try:
        async with trio.open_nursery() as nursery:

            async def show_typing() -> None:
                with typing:
                    await _typing(message)

            nursery.start_soon(show_typing)
            try:
                async with ctx.think(question, turns, stored=exchange.stored) as answer:
                    try:
                        # Half the grace period at most: the other half is the bot's to close.
                        wait = min(LAST_EDIT_WAIT, ctx.grace / 2)
                        reply = await stream_to(sink, answer, stop_wait=wait, logger=ctx.log)
                        # Before leaving the block (a checkpoint): a stop that comes as the
                        # brain's request closes still finds the edits held back, and makes them.
                        background.start_soon(_settle, ctx, reply)
                    finally:
                        said, complete = answer.text, answer.done
                failure = reply.failure
            except (BrainError, disnake.HTTPException) as exc:
                failure = exc
            typing.cancel()
        ended = True
    finally:
        exchange.answered(said, cut=bool(said.strip()) and not complete)
        # Stopped (not failed: a message that crashes the bot must not come back for the next)
        # before anything was shown.
        stopped = trio.current_effective_deadline() == -math.inf
        if not ended and stopped and sink.first_post_at is None:
            unseen()
    if sink.first_post_at is not None:
        ctx.observe("first_text", sink.first_post_at - started)
    ctx.observe("brain", trio.current_time() - started)
    if isinstance(failure, disnake.HTTPException):
        # Missing permissions in one channel, say: that reply is lost, the bot is not.
        ctx.count("send_errors")
        ctx.log.error("❌ could not reply in channel %s: %s", item.channel_id, failure)
        return
    if failure is not None:
        ctx.count("brain_errors")
        what = "could not answer" if sink.first_post_at is None else "answer broke off"
        ctx.log.error("❌ %s in channel %s: %s", what, item.channel_id, failure)
        ctx.note(f"last brain error: {failure}")
        if sink.first_post_at is None:
            await run_on_loop(lambda: message.reply(APOLOGY, mention_author=False))
    ctx.count("messages")
