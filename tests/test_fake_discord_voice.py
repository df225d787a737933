"""The fake Discord's voice side, proven with disnake 2.12's own voice client (no voxbridge code):
joining, DAVE, the bot's audio recorded and decoded, humans' speech that parses and decrypts as
the bot would see it, and the faults (resume, kick)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import dave
import davey
import disnake
import disnake.http
import numpy as np
import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.fake_discord import BotAccount, FakeDiscord
from tests.fake_discord_voice import (
    RTP,
    SILENCE,
    FakeVoiceServer,
    SafeDecoder,
    Transport,
    VoiceOp,
    load_opus,
    to_16k_mono,
)
from tests.mls_external_sender import ExternalSender, commit_epoch, split_commit_welcome
from voxbridge.plugins.aio import loop, run_on_loop

GUILD, TEXT = 100, 200
VOICE, OTHER_VOICE = 210, 211
HUMAN, HUMAN2 = 300, 301
TONE_HZ = 440.0


async def start_fake(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, dave_version: int = 1
) -> tuple[FakeDiscord, BotAccount]:
    fake = FakeDiscord(dave_version=dave_version)
    fake.add_guild(GUILD, "Guild", [TEXT], voice_channel_ids=[VOICE, OTHER_VOICE])
    bot = fake.add_bot("token-1", user_id=1001, name="bot1")
    await nursery.start(fake.serve)
    monkeypatch.setattr(disnake.http.Route, "BASE", fake.base_url)
    return fake, bot


@pytest.fixture
async def fake(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> FakeDiscord:
    return (await start_fake(nursery, monkeypatch))[0]


@pytest.fixture
def bot(fake: FakeDiscord) -> BotAccount:
    return fake._bot("token-1")


@dataclass
class Bot:
    """A disnake client on the shared asyncio loop, and its voice client once connected."""

    client: disnake.Client
    vc: disnake.VoiceClient | None = None

    @property
    def voice(self) -> disnake.VoiceClient:
        assert self.vc is not None
        return self.vc

    async def connect(
        self, channel_id: int = VOICE, cls: type[disnake.VoiceClient] = disnake.VoiceClient
    ) -> disnake.VoiceClient:
        channel = self.client.get_channel(channel_id)
        assert isinstance(channel, disnake.VoiceChannel)
        # a short timeout: after 4014 + "no channel" (a kick) disnake waits this long to give up
        self.vc = await run_on_loop(lambda: channel.connect(timeout=3, cls=cls))
        return self.vc

    async def play(self, seconds: float) -> None:
        """Play a tone through disnake's own send path (Opus encoder, DAVE, transport)."""
        vc = self.voice

        async def start() -> None:
            vc.play(Tone(round(seconds / 0.02)))

        await run_on_loop(start)

    async def until(self, condition: Callable[[], bool], limit_s: float = 10) -> None:
        """Wait until ``condition()`` (read on the bot's loop) holds."""

        async def poll() -> None:
            while not condition():
                await asyncio.sleep(0.01)

        await run_on_loop(lambda: asyncio.wait_for(poll(), limit_s))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run a plain function on the bot's loop."""

        async def run() -> Any:
            return fn()

        return await run_on_loop(run)


class Tone(disnake.AudioSource):
    """``frames`` × 20 ms of a 440 Hz tone, 48 kHz stereo s16le: what disnake's player reads."""

    def __init__(self, frames: int) -> None:
        self.frames, self.sent = frames, 0

    def read(self) -> bytes:
        if self.sent >= self.frames:
            return b""
        t = (np.arange(960) + self.sent * 960) / 48_000
        self.sent += 1
        mono = (8000 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2")
        return np.repeat(mono, 2).tobytes()


@asynccontextmanager
async def running_bot(fake: FakeDiscord, account: BotAccount) -> AsyncIterator[Bot]:
    """A plain disnake client logged in to the fake, trusting the voice gateway's CA."""
    ready: asyncio.Event | None = None

    async def build() -> disnake.Client:
        nonlocal ready
        ready = asyncio.Event()
        # the connector carries the TLS trust for wss://127.0.0.1:port; made on the bot's loop
        context = ssl.create_default_context(cafile=fake.voice.ca_file)
        client = disnake.Client(
            intents=disnake.Intents(guilds=True, voice_states=True),
            connector=aiohttp.TCPConnector(ssl=context),
            guild_ready_timeout=0.01,
        )
        client.event(on_ready)
        return client

    async def on_ready() -> None:
        assert ready is not None
        ready.set()

    client = await run_on_loop(build)
    started = asyncio.run_coroutine_threadsafe(client.start(account.token), loop())
    try:
        assert ready is not None
        await run_on_loop(lambda: asyncio.wait_for(ready.wait(), 10))
        yield Bot(client)
    finally:
        with trio.CancelScope(shield=True), trio.fail_after(10):
            await run_on_loop(client.close)
            await trio.to_thread.run_sync(started.exception)


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def peak_hz(pcm16k: bytes) -> float:
    samples = np.frombuffer(pcm16k, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / 16_000)[int(np.argmax(spectrum))])


def tone16k(seconds: float, hz: float) -> bytes:
    t = np.arange(round(seconds * 16_000)) / 16_000
    return (6000 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


async def assert_bot_audio(fake: FakeDiscord, account: BotAccount, b: Bot, *, e2ee: bool) -> None:
    """The bot plays 1 s; the fake records 50 frames, E2EE or not, decoding to the tone."""
    mark = fake.voice.mark()
    await b.play(1.0)
    await fake.voice.wait_for_audio(account, 1.0, since=mark)
    packets = fake.voice.received(account, since=mark)
    assert len(packets) == 50
    assert fake.voice.bot_frames_are_e2ee(account, since=mark) is e2ee
    assert all(p.opus is not None for p in packets)
    pcm = fake.voice.received_pcm(account, since=mark)
    assert len(pcm) == 16_000 * 2  # 1 s of 16 kHz s16le
    assert rms(pcm) > 2000
    assert abs(peak_hz(pcm) - TONE_HZ) < 5
    assert [p.seq for p in packets] == list(range(packets[0].seq, packets[0].seq + 50))
    assert {p.ssrc for p in packets} == {fake.voice.ssrc(account.user_id)}


async def test_join_dave_and_e2ee_audio(fake: FakeDiscord, bot: BotAccount) -> None:
    await fake.join_voice(HUMAN, VOICE)
    async with running_bot(fake, bot) as b:
        started = time.monotonic()
        vc = await b.connect()
        await fake.voice.wait_for_dave(bot)
        await b.until(vc.dave.can_encrypt)
        joined_s = time.monotonic() - started
        assert joined_s < 5

        assert fake.bot_voice_channel(bot) == VOICE
        assert fake.voice.epoch(VOICE) == 1
        assert fake.voice.dave_members(VOICE) == {bot.user_id, HUMAN}
        human = fake.voice.human_dave(HUMAN)
        assert human is not None
        assert await b.call(lambda: vc.dave.voice_privacy_code) == human.voice_privacy_code

        sent = fake.voice.sent_ops(bot)
        assert sent[0].op == VoiceOp.HELLO
        numbered = [m.seq for m in sent if m.seq is not None]
        assert numbered == list(range(1, len(numbered) + 1))
        order = [m.op for m in sent]
        # the human is announced before the first DAVE proposal
        assert order.index(VoiceOp.CLIENTS_CONNECT) < order.index(VoiceOp.DAVE_MLS_PROPOSALS)
        assert order.index(VoiceOp.SPEAKING) < order.index(VoiceOp.DAVE_MLS_PROPOSALS)
        ops = [m.op for m in fake.voice.ops(bot)]
        assert ops[:2] == [VoiceOp.IDENTIFY, VoiceOp.SELECT_PROTOCOL]
        for op in (VoiceOp.DAVE_MLS_KEY_PACKAGE, VoiceOp.DAVE_MLS_COMMIT_WELCOME):
            assert op in ops

        await assert_bot_audio(fake, bot, b, e2ee=True)
        assert fake.voice.last_speaking(bot)["ssrc"] == fake.voice.ssrc(bot.user_id)
        assert fake.voice.transport_failures(bot) == 0
        print(f"join + DAVE took {joined_s:.2f} s")
