"""The fake Discord, proven with the real disnake client running on its own asyncio loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import disnake
import disnake.http
import pytest
import trio
from disnake.ext import commands
from disnake.interactions import ApplicationCommandInteraction

from tests.fake_discord import BotAccount, FakeDiscord, Op, RecordedRequest

T = TypeVar("T")
C = TypeVar("C", bound=disnake.Client)

Inter = ApplicationCommandInteraction[commands.InteractionBot]

GUILD = 100
CHANNEL, OTHER_CHANNEL = 200, 201
HUMAN, HUMAN_NAME = 300, "ada"


class AsyncioThread:
    """One asyncio event loop in a daemon thread (as disnake gets in production); Trio hands
    coroutines to it. Stopping it ends ``asyncio.run``, which cancels what is left running."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.loop: asyncio.AbstractEventLoop
        self._stop: asyncio.Event

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()

    async def start(self) -> None:
        self._thread.start()
        await trio.to_thread.run_sync(self._ready.wait)

    async def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        await trio.to_thread.run_sync(self._thread.join)

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> concurrent.futures.Future[T]:
        """Start ``fn()`` on the loop (called there, so disnake objects bind to that loop)."""

        async def call() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop)

    async def run(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn()`` on the loop and wait for its result from Trio."""
        return await outcome_of(self.spawn(fn))


async def outcome_of(future: concurrent.futures.Future[T]) -> T:
    """Wait from Trio for a future of the asyncio thread; a Trio timeout abandons the wait."""
    return await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)


class Inbox:
    """Carries plain values from disnake's event handlers (asyncio thread) to the Trio test."""

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._send, self._receive = trio.open_memory_channel[tuple[Any, ...]](math.inf)

    def put(self, *item: Any) -> None:
        self._token.run_sync_soon(self._send.send_nowait, item)

    def pending(self) -> int:
        return self._receive.statistics().current_buffer_used

    async def get(self, limit_s: float = 5) -> tuple[Any, ...]:
        with trio.fail_after(limit_s):
            return await self._receive.receive()


@pytest.fixture
async def fake(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> FakeDiscord:
    server = FakeDiscord()
    server.add_guild(GUILD, "Test guild", [CHANNEL, OTHER_CHANNEL])
    await nursery.start(server.serve)
    monkeypatch.setattr(disnake.http.Route, "BASE", server.base_url)
    return server


@pytest.fixture
async def aio() -> AsyncIterator[AsyncioThread]:
    thread = AsyncioThread()
    await thread.start()
    yield thread
    await thread.stop()


def intents() -> disnake.Intents:
    return disnake.Intents.default() | disnake.Intents(message_content=True)


@asynccontextmanager
async def running(
    aio: AsyncioThread, make: Callable[[], C], token: str
) -> AsyncIterator[tuple[C, concurrent.futures.Future[None]]]:
    """A client made by ``make()`` on the loop, and its ``start(token)`` future; on exit the
    client is closed and ``start`` has returned (or raised: await the future to see it)."""

    async def build() -> C:
        return make()

    client = await aio.run(build)
    started = aio.spawn(lambda: client.start(token))
    try:
        yield client, started
    finally:
        # shielded: a failing (cancelled) test must still close the client, or its aiohttp
        # session is garbage-collected unclosed, a ResourceWarning
        with trio.CancelScope(shield=True), trio.fail_after(5):
            await aio.run(client.close)
            await trio.to_thread.run_sync(concurrent.futures.wait, [started])


def posted(path: str, token: str | None = None) -> Callable[[RecordedRequest], bool]:
    def match(r: RecordedRequest) -> bool:
        return r.method == "POST" and r.path == path and token in (None, r.token)

    return match


def add_bot(fake: FakeDiscord, n: int = 1, **options: Any) -> BotAccount:
    return fake.add_bot(f"token-{n}", user_id=1000 + n, name=f"bot{n}", **options)


class QuickClient(disnake.Client):
    """A client that identifies again at once: disnake waits 5 s before every IDENTIFY but the
    first (``before_identify_hook``), to respect Discord's rate limit."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


def echo_client(inbox: Inbox) -> disnake.Client:
    """A client telling the inbox what it sees, and answering every message with a reply."""
    client = QuickClient(intents=intents(), guild_ready_timeout=0.01)

    @client.event
    async def on_ready() -> None:
        assert client.user is not None
        inbox.put("ready", client.user.id, client.user.name, sorted(g.id for g in client.guilds))

    @client.event
    async def on_resumed() -> None:
        inbox.put("resumed")

    @client.event
    async def on_message(message: disnake.Message) -> None:
        if message.author == client.user:
            return
        inbox.put(
            "message",
            message.id,
            message.content,
            message.author.id,
            message.author.name,
            message.channel.id,
            message.guild and message.guild.id,
            [u.id for u in message.mentions],
        )
        async with message.channel.typing():
            reply = await message.reply(f"echo: {message.content}")
        edited = await reply.edit(content=f"{reply.content}!")
        reference = reply.reference and reply.reference.message_id
        inbox.put("replied", edited.id, edited.content, reference, edited)

    return client


async def test_ready_message_reply_and_typing(fake: FakeDiscord, aio: AsyncioThread) -> None:
    bot = add_bot(fake)
    inbox = Inbox()
    async with running(aio, lambda: echo_client(inbox), bot.token):
        assert await inbox.get() == ("ready", bot.user_id, bot.name, [GUILD])
        assert bot.identifies == 1

        sent = await fake.send_message(
            bot,
            guild_id=GUILD,
            channel_id=CHANNEL,
            author_id=HUMAN,
            author_name=HUMAN_NAME,
            content="hello <@1001>",
            mentions=[bot.user_id],
        )
        assert await inbox.get() == (
            "message",
            int(sent["id"]),
            "hello <@1001>",
            HUMAN,
            HUMAN_NAME,
            CHANNEL,
            GUILD,
            [bot.user_id],
        )
        _, reply_id, content, reference, reply = await inbox.get()
        assert (content, reference) == ("echo: hello <@1001>!", int(sent["id"]))
        await aio.run(reply.delete)

    typing = await fake.wait_for(posted(f"/channels/{CHANNEL}/typing", bot.token))
    assert typing.status == 204
    create = await fake.wait_for(posted(f"/channels/{CHANNEL}/messages", bot.token))
    assert create.json["content"] == "echo: hello <@1001>"
    assert create.json["message_reference"]["message_id"] == int(sent["id"])
    edit = await fake.wait_for(lambda r: r.method == "PATCH")
    assert edit.path == f"/channels/{CHANNEL}/messages/{reply_id}"
    assert edit.json == {"content": "echo: hello <@1001>!"}
    delete = await fake.wait_for(lambda r: r.method == "DELETE")
    assert (delete.path, delete.status) == (f"/channels/{CHANNEL}/messages/{reply_id}", 204)
    assert [r.path for r in fake.requests if r.method == "GET"] == ["/users/@me", "/gateway/bot"]
    assert fake.unhandled == []


async def test_dm_in_and_out(fake: FakeDiscord, aio: AsyncioThread) -> None:
    bot = add_bot(fake)
    inbox = Inbox()
    async with running(aio, lambda: echo_client(inbox), bot.token) as (client, _):
        await inbox.get()
        sent = await fake.send_message(bot, author_id=HUMAN, author_name=HUMAN_NAME, content="psst")
        dm = int(sent["channel_id"])
        message = await inbox.get()
        assert message[2:] == ("psst", HUMAN, HUMAN_NAME, dm, None, [])
        await inbox.get()  # replied, in the same DM channel
        assert (await fake.wait_for(posted(f"/channels/{dm}/messages"))).json["content"] == (
            "echo: psst"
        )

        channel = await aio.run(lambda: client.create_dm(disnake.Object(HUMAN)))
        assert channel.id == dm
        await aio.run(lambda: channel.send("hi"))
    opened = await fake.wait_for(posted("/users/@me/channels"))
    assert opened.json == {"recipient_id": HUMAN}
    said = [r.json["content"] for r in fake.requests if posted(f"/channels/{dm}/messages")(r)]
    assert said == ["echo: psst", "hi"]
    assert fake.unhandled == []


async def test_several_bots_each_get_their_own_events(
    fake: FakeDiscord, aio: AsyncioThread
) -> None:
    first, second = add_bot(fake, 1), add_bot(fake, 2)
    inbox1, inbox2 = Inbox(), Inbox()
    async with (
        running(aio, lambda: echo_client(inbox1), first.token),
        running(aio, lambda: echo_client(inbox2), second.token),
    ):
        assert (await inbox1.get())[1] == first.user_id
        assert (await inbox2.get())[1] == second.user_id
        await fake.send_message(
            second,
            guild_id=GUILD,
            channel_id=OTHER_CHANNEL,
            author_id=HUMAN,
            author_name=HUMAN_NAME,
            content="for bot2",
        )
        assert (await inbox2.get())[2] == "for bot2"
        await inbox2.get()
        assert inbox1.pending() == 0
    reply = await fake.wait_for(posted(f"/channels/{OTHER_CHANNEL}/messages"))
    assert reply.token == second.token
    assert (first.identifies, second.identifies) == (1, 1)


def agent_bot(inbox: Inbox, test_guilds: list[int] | None, sync: bool) -> commands.InteractionBot:
    """An InteractionBot with ``/agent list | current | select name:str``."""
    flags = commands.CommandSyncFlags.default() if sync else commands.CommandSyncFlags.none()
    bot = commands.InteractionBot(
        intents=intents(),
        guild_ready_timeout=0.01,
        test_guilds=test_guilds,
        command_sync_flags=flags,
    )

    @bot.slash_command(name="agent", description="The agent answering here")
    async def agent(inter: Inter) -> None:
        inbox.put("invoked", inter.id, inter.author.id, inter.channel.id, inter.guild_id)

    @agent.sub_command(name="list", description="List the agents")
    async def list_agents(inter: Inter) -> None:
        await inter.response.send_message("alpha, beta")

    @agent.sub_command(name="current", description="Show the active agent")
    async def current(inter: Inter) -> None:
        await inter.response.defer()
        await inter.edit_original_response("alpha")
        await inter.followup.send("(the default)")
        original = await inter.original_response()
        inbox.put("current done", original.content)

    @agent.sub_command(name="select", description="Make an agent the active one")
    async def select(inter: Inter, name: str) -> None:
        await inter.response.send_message(f"selected {name}", ephemeral=True)

    return bot


@pytest.mark.parametrize("test_guilds", [None, [GUILD]], ids=["global", "guild"])
async def test_slash_command_subcommands(
    fake: FakeDiscord, aio: AsyncioThread, test_guilds: list[int] | None
) -> None:
    bot = add_bot(fake)
    inbox = Inbox()
    scope = f"/applications/{bot.application_id}" + (f"/guilds/{GUILD}" if test_guilds else "")
    async with running(aio, lambda: agent_bot(inbox, test_guilds, sync=True), bot.token):
        put = await fake.wait_for(lambda r: r.method == "PUT")
        assert put.path == f"{scope}/commands"
        (command,) = put.json
        assert command["name"] == "agent"
        assert [(o["name"], o["type"]) for o in command["options"]] == [
            ("list", 1),
            ("current", 1),
            ("select", 1),
        ]
        (name_option,) = command["options"][2]["options"]
        assert (name_option["name"], name_option["type"], name_option["required"]) == (
            "name",
            3,
            True,
        )

        def callback(interaction_id: str) -> Callable[[RecordedRequest], bool]:
            return lambda r: r.path.startswith(f"/interactions/{interaction_id}/")

        listed = await fake.send_interaction(
            bot, guild_id=GUILD, channel_id=CHANNEL, user_id=HUMAN, subcommand="list"
        )
        assert await inbox.get() == ("invoked", int(listed), HUMAN, CHANNEL, GUILD)
        answer = await fake.wait_for(callback(listed))
        assert answer.method == "POST" and answer.path.endswith("/callback")
        assert answer.token == bot.token and answer.status == 204
        assert answer.json["type"] == 4
        assert answer.json["data"]["content"] == "alpha, beta"

        selected = await fake.send_interaction(
            bot,
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=HUMAN,
            subcommand="select",
            options={"name": "beta"},
        )
        await inbox.get()
        answer = await fake.wait_for(callback(selected))
        assert answer.json["data"]["content"] == "selected beta"
        assert answer.json["data"]["flags"] == 64  # ephemeral

        current = await fake.send_interaction(
            bot, guild_id=GUILD, channel_id=CHANNEL, user_id=HUMAN, subcommand="current"
        )
        await inbox.get()
        assert await inbox.get() == ("current done", "alpha")
        assert (await fake.wait_for(callback(current))).json == {"type": 5, "data": {"flags": 0}}

    webhook = [r for r in fake.requests if r.path.startswith(f"/webhooks/{bot.application_id}/")]
    assert [(r.method, r.path.rsplit("/", 1)[-1], r.json["content"]) for r in webhook[:2]] == [
        ("PATCH", "@original", "alpha"),
        ("POST", webhook[1].path.rsplit("/", 1)[-1], "(the default)"),
    ]
    assert [r.method for r in webhook] == ["PATCH", "POST", "GET"]
    assert {r.token for r in webhook} == {bot.token}
    # the owner lookup (commands.Bot and InteractionBot) races the gateway and command lookups
    gets = [r.path for r in fake.requests if r.method == "GET" and r not in webhook]
    assert sorted(gets) == sorted(
        ["/users/@me", "/oauth2/applications/@me", "/gateway/bot"]
        # disnake caches the global commands, and those of the test guilds
        + [f"/applications/{bot.application_id}/commands"]
        + ([f"{scope}/commands"] if test_guilds else [])
    )
    assert fake.unhandled == []


async def test_unsynced_global_command_is_dispatched_by_name(
    fake: FakeDiscord, aio: AsyncioThread
) -> None:
    bot = add_bot(fake)
    inbox = Inbox()
    async with running(aio, lambda: agent_bot(inbox, None, sync=False), bot.token):
        interaction = await fake.send_interaction(bot, guild_id=None, user_id=HUMAN)
        _, interaction_id, user_id, channel_id, guild_id = await inbox.get()
        assert (interaction_id, user_id, guild_id) == (int(interaction), HUMAN, None)
        assert channel_id not in (CHANNEL, OTHER_CHANNEL)  # the DM channel
        answer = await fake.wait_for(lambda r: r.path.endswith("/callback"))
        assert answer.json["data"]["content"] == "alpha, beta"
    assert not any(r.method == "PUT" for r in fake.requests)


async def test_invalid_token_is_login_failure(fake: FakeDiscord, aio: AsyncioThread) -> None:
    add_bot(fake)
    inbox = Inbox()
    async with running(aio, lambda: echo_client(inbox), "wrong") as (_, started):
        with pytest.raises(disnake.LoginFailure):
            await outcome_of(started)
    [login] = fake.requests
    assert (login.method, login.path, login.token, login.status) == (
        "GET",
        "/users/@me",
        "wrong",
        401,
    )


@pytest.mark.parametrize(
    ("code", "error"),
    [(4004, disnake.ConnectionClosed), (4014, disnake.PrivilegedIntentsRequired)],
)
async def test_gateway_refusal(
    fake: FakeDiscord, aio: AsyncioThread, code: int, error: type[Exception]
) -> None:
    bot = add_bot(fake, close_on_identify=code)
    inbox = Inbox()
    async with running(aio, lambda: echo_client(inbox), bot.token) as (client, started):
        with pytest.raises(error) as raised:
            await outcome_of(started)
        # disnake closes itself on 4004 but leaves the client open on 4014
        assert client.is_closed() is (code == 4004)
    if isinstance(raised.value, disnake.ConnectionClosed):
        assert raised.value.code == code
    assert (bot.identifies, bot.resumes) == (1, 0)
    assert not fake.connected(bot)


@pytest.mark.parametrize("code", [1000, 4000])
async def test_dropped_connection_resumes_and_replays(
    fake: FakeDiscord, aio: AsyncioThread, code: int
) -> None:
    bot = add_bot(fake)
    inbox = Inbox()
    async with running(aio, lambda: echo_client(inbox), bot.token):
        await inbox.get()
        fake.disconnect(bot, code=code)
        # sent while the bot is away: replayed on RESUME
        sent = await fake.send_message(bot, author_id=HUMAN, author_name=HUMAN_NAME, content="hi")
        assert not fake.connected(bot)
        got = {(await inbox.get())[0] for _ in range(3)}
        assert got == {"resumed", "message", "replied"}
        assert (bot.identifies, bot.resumes) == (1, 1)
        assert fake.connected(bot)
    (resume,) = [m for m in fake.gateway_messages if m.op == Op.RESUME]
    assert resume.d["session_id"] == bot.session_id
    assert resume.d["token"] == bot.token
    reply = await fake.wait_for(posted(f"/channels/{sent['channel_id']}/messages"))
    assert reply.json["content"] == "echo: hi"


async def test_forgotten_session_makes_disnake_identify_again(
    fake: FakeDiscord, aio: AsyncioThread
) -> None:
    bot = add_bot(fake)
    inbox = Inbox()
    async with running(aio, lambda: echo_client(inbox), bot.token):
        first = await inbox.get()
        fake.disconnect(bot, forget_session=True)
        assert await inbox.get() == first
        assert (bot.identifies, bot.resumes) == (2, 0)
    assert [m.op for m in fake.gateway_messages if m.op in (Op.IDENTIFY, Op.RESUME)] == [
        Op.IDENTIFY,
        Op.RESUME,
        Op.IDENTIFY,
    ]


async def test_member_chunking_at_startup(fake: FakeDiscord, aio: AsyncioThread) -> None:
    bot = add_bot(fake)
    inbox = Inbox()

    def make() -> disnake.Client:
        client = disnake.Client(
            intents=intents() | disnake.Intents(members=True), guild_ready_timeout=0.01
        )

        @client.event
        async def on_ready() -> None:
            (guild,) = client.guilds
            inbox.put(guild.chunked, sorted(m.id for m in guild.members))

        return client

    async with running(aio, make, bot.token):
        assert await inbox.get() == (True, [1, bot.user_id])
    (request,) = [m for m in fake.gateway_messages if m.op == Op.REQUEST_MEMBERS]
    assert request.d["guild_id"] == GUILD


async def test_unknown_route_is_recorded_and_answered_404(
    fake: FakeDiscord, aio: AsyncioThread, caplog: pytest.LogCaptureFixture
) -> None:
    bot = add_bot(fake)
    inbox = Inbox()
    async with running(aio, lambda: echo_client(inbox), bot.token) as (client, _):
        await inbox.get()
        with pytest.raises(disnake.NotFound):
            await aio.run(lambda: client.fetch_user(HUMAN))
    [unknown] = fake.unhandled
    assert (unknown.method, unknown.path, unknown.status) == ("GET", f"/users/{HUMAN}", 404)
    assert f"no route for GET /users/{HUMAN}" in caplog.text
