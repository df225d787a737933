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
            # disnake's state has no event to wait on: poll it
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        await run_on_loop(lambda: asyncio.wait_for(poll(), limit_s))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run a plain function on the bot's loop."""

        async def run() -> Any:
            return fn()

        return await run_on_loop(run)


class Tone(disnake.AudioSource):
    """``frames`` x 20 ms of a 440 Hz tone, 48 kHz stereo s16le: what disnake's player reads."""

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


async def settled(fake: FakeDiscord, account: BotAccount, b: Bot, limit_s: float = 10) -> None:
    """DAVE is up on both sides: the fake sent the last op 22, and the bot executed it (from
    then on it encrypts with the new epoch's key; disnake forgets nothing it prepared, so a
    connection lost between op 23 and op 22 would leave a transition pending for good)."""
    vc = b.voice
    await fake.voice.wait_for_dave(account, limit_s)
    await b.until(lambda: vc.is_connected() and vc.dave.can_encrypt(), limit_s)
    await b.until(lambda: not vc.dave._prepared_transitions, limit_s)


async def test_join_dave_and_e2ee_audio(fake: FakeDiscord, bot: BotAccount) -> None:
    await fake.join_voice(HUMAN, VOICE)
    async with running_bot(fake, bot) as b:
        started = time.monotonic()
        vc = await b.connect()
        await settled(fake, bot, b)
        joined_s = time.monotonic() - started
        assert joined_s < 5

        assert fake.bot_voice_channel(bot) == VOICE
        assert fake.voice.epoch(VOICE) == 1
        # the human came in GUILD_CREATE's voice_states, the bot by its own VOICE_STATE_UPDATE
        in_voice = await b.call(lambda: sorted(vc.channel.voice_states))
        assert in_voice == sorted([HUMAN, bot.user_id])
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


async def test_dave_off(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, bot = await start_fake(nursery, monkeypatch, dave_version=0)
    await fake.join_voice(HUMAN, VOICE)
    async with running_bot(fake, bot) as b:
        await b.connect()
        await fake.voice.wait_until(lambda: fake.voice.connected(bot))
        description = next(
            m.d for m in fake.voice.sent_ops(bot) if m.op == VoiceOp.SESSION_DESCRIPTION
        )
        assert description["dave_protocol_version"] == 0
        assert all(m.op < VoiceOp.DAVE_PREPARE_TRANSITION for m in fake.voice.sent_ops(bot))
        await assert_bot_audio(fake, bot, b, e2ee=False)
        assert fake.voice.epoch(VOICE) == 0
        await run_on_loop(b.voice.disconnect)
        await fake.wait_until(lambda: fake.bot_voice_channel(bot) is None)
        await fake.voice.wait_until(lambda: not fake.voice.connected(bot))


def drain(sock: Any) -> list[bytes]:
    """What arrived on the bot's UDP socket (which disnake never reads after IP discovery)."""
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(4096))
        except BlockingIOError:
            return datagrams


class AesVoiceClient(disnake.VoiceClient):
    """disnake with the AES-GCM transport mode too (the fake offers it first)."""

    supported_modes = ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize")  # type: ignore[assignment]

    def _encrypt_aead_aes256_gcm_rtpsize(self, header: bytes, data: bytes) -> bytes:
        nonce, padded = self._get_nonce(12)
        sealed = AESGCM(bytes(self.secret_key)).encrypt(bytes(padded), bytes(data), bytes(header))
        return header + sealed + nonce


async def heard_by_bot(b: Bot, speak: Callable[[], Any]) -> list[bytes]:
    """The datagrams that reached the bot's socket while ``speak()`` ran."""
    vc = b.voice
    await b.call(lambda: drain(vc.socket))
    await speak()
    return list(await b.call(lambda: drain(vc.socket)))


@pytest.mark.parametrize(
    ("cls", "mode"),
    [
        (disnake.VoiceClient, "aead_xchacha20_poly1305_rtpsize"),
        (AesVoiceClient, "aead_aes256_gcm_rtpsize"),
    ],
)
async def test_speech_reaches_the_bot_and_decrypts(
    fake: FakeDiscord, bot: BotAccount, cls: type[disnake.VoiceClient], mode: str
) -> None:
    await fake.join_voice(HUMAN, VOICE)
    await fake.join_voice(HUMAN2, VOICE)
    async with running_bot(fake, bot) as b:
        vc = await b.connect(cls=cls)
        await settled(fake, bot, b)
        assert fake.voice.session_key(bot) == (mode, bytes(vc.secret_key))
        ssrc = fake.voice.ssrc(HUMAN)
        assert {"user_id": str(HUMAN), "ssrc": ssrc, "speaking": 1} in [
            m.d for m in fake.voice.sent_ops(bot) if m.op == VoiceOp.SPEAKING
        ]
        sent: list[Any] = []

        async def speak() -> None:
            sent.extend(
                await fake.voice.speak(HUMAN, tone16k(1.0, 300), loss=0.1, reorder=0.2, seed=7)
            )

        datagrams = await heard_by_bot(b, speak)

        # what the bot knows: its mode and key, and its libdave session's ratchet for the human
        transport = Transport(vc.mode, bytes(vc.secret_key))
        packets = [transport.decrypt(d) for d in datagrams]
        ratchet = await b.call(lambda: vc.dave._session.get_key_ratchet(str(HUMAN)))
        decryptor = dave.Decryptor()
        decryptor.transition_to_key_ratchet(ratchet)
        # and another member of the group, a davey one
        other = fake.voice.human_dave(HUMAN2)
        assert other is not None

        kept = [f for f in sent if not f.dropped]
        assert len(sent) == 55 and 0 < len(sent) - len(kept) < 15
        assert sorted(p.seq for p in packets) == sorted(f.seq for f in kept)
        assert [p.seq for p in packets] != sorted(p.seq for p in packets)  # some reordered
        by_seq = {f.seq: f for f in sent}
        decoder = SafeDecoder()
        pcm = b""
        for packet in sorted(packets, key=lambda p: p.seq):
            frame = by_seq[packet.seq]
            assert packet.ssrc == ssrc
            assert packet.timestamp == frame.timestamp
            assert set(packet.ext) == {1}
            assert packet.payload == frame.payload
            if frame.opus == SILENCE:
                assert packet.payload == SILENCE  # silence is never DAVE-encrypted
            else:
                assert packet.payload.endswith(b"\xfa\xfa")
                opus = decryptor.decrypt(dave.MediaType.audio, packet.payload)
                assert opus == frame.opus
                assert other.decrypt(HUMAN, davey.MediaType.audio, packet.payload) == opus
            pcm += decoder.decode(frame.opus, fec=False)
        assert [f.opus for f in sent[-5:]] == [SILENCE] * 5
        assert abs(peak_hz(to_16k_mono(pcm)) - 300) < 5


async def test_humans_join_and_leave_mid_call(fake: FakeDiscord, bot: BotAccount) -> None:
    await fake.join_voice(HUMAN, VOICE)
    async with running_bot(fake, bot) as b:
        vc = await b.connect()
        await settled(fake, bot, b)

        async def bot_hears(user_id: int) -> None:
            """The bot can decrypt the human's speech with its own libdave session."""

            async def speak() -> None:
                await fake.voice.speak(user_id, tone16k(0.2, 500))

            datagrams = await heard_by_bot(b, speak)
            ratchet = await b.call(lambda: vc.dave._session.get_key_ratchet(str(user_id)))
            decryptor = dave.Decryptor()
            decryptor.transition_to_key_ratchet(ratchet)
            transport = Transport(vc.mode, bytes(vc.secret_key))
            frames = [transport.decrypt(d).payload for d in datagrams]
            assert len(frames) == 15
            assert all(decryptor.decrypt(dave.MediaType.audio, f) for f in frames)

        for step, (change, members) in enumerate(
            [
                (lambda: fake.join_voice(HUMAN2, VOICE), {bot.user_id, HUMAN, HUMAN2}),
                (lambda: fake.leave_voice(HUMAN2), {bot.user_id, HUMAN}),
                (lambda: fake.leave_voice(HUMAN), {bot.user_id}),
                (lambda: fake.join_voice(HUMAN, VOICE), {bot.user_id, HUMAN}),
            ],
            start=2,
        ):
            await change()
            assert fake.voice.epoch(VOICE) == step
            # every human's VOICE_STATE_UPDATE reached the bot
            present = sorted(members)
            await b.until(lambda present=present: sorted(vc.channel.voice_states) == present)
            assert fake.voice.dave_members(VOICE) == members
            # the bot switches its sender key on op 22; a human added by this change cannot
            # decrypt frames of the epoch before (nor could one on Discord)
            await b.until(lambda: not vc.dave._prepared_transitions)
            if len(members) > 1:
                await assert_bot_audio(fake, bot, b, e2ee=True)
                for human in members - {bot.user_id}:
                    await bot_hears(human)
        ops = [m.op for m in fake.voice.sent_ops(bot)]
        assert ops.count(VoiceOp.CLIENT_DISCONNECT) == 2
        assert ops.count(VoiceOp.DAVE_EXECUTE_TRANSITION) == 5


async def test_voice_gateway_resumes_after_4015(fake: FakeDiscord, bot: BotAccount) -> None:
    await fake.join_voice(HUMAN, VOICE)
    async with running_bot(fake, bot) as b:
        vc = await b.connect()
        await settled(fake, bot, b)
        ssrc = fake.voice.ssrc(bot.user_id)
        await fake.voice.close(bot, 4015)
        # announced while the bot is away: buffered, then replayed after RESUMED
        await fake.join_voice(HUMAN2, VOICE)
        assert fake.voice.connection_count(bot) == 2
        assert fake.voice.epoch(VOICE) == 2
        assert await b.call(vc.is_connected)
        ops = fake.voice.ops(bot)
        assert [m.op for m in ops].count(VoiceOp.IDENTIFY) == 1
        resume = next(m.d for m in ops if m.op == VoiceOp.RESUME)
        assert resume["session_id"] == bot.session_id
        resumed = [m for m in fake.voice.sent_ops(bot) if m.op == VoiceOp.RESUMED]
        assert len(resumed) == 1
        after = fake.voice.sent_ops(bot)[fake.voice.sent_ops(bot).index(resumed[0]) + 1 :]
        joined = next(m for m in after if m.op == VoiceOp.CLIENTS_CONNECT)
        assert joined.d == {"user_ids": [str(HUMAN2)]}
        assert joined.seq is not None and joined.seq > resume["seq_ack"]
        assert fake.voice.ssrc(bot.user_id) == ssrc
        await b.until(lambda: not vc.dave._prepared_transitions)
        await assert_bot_audio(fake, bot, b, e2ee=True)


async def test_kick_leaves_the_bot_out_of_the_channel(fake: FakeDiscord, bot: BotAccount) -> None:
    async with running_bot(fake, bot) as b:
        await b.connect()
        await fake.voice.wait_until(lambda: fake.voice.connected(bot))
        await fake.kick_from_voice(bot)
        assert fake.bot_voice_channel(bot) is None
        assert not fake.voice.connected(bot)
        # disnake gives up waiting for a new voice server after its connect timeout (3 s)
        await b.until(lambda: not b.client.voice_clients)
        assert fake.bot_voice_channel(bot) is None


def test_external_sender_builds_a_group_of_davey_members() -> None:
    """Three davey members, one committing the gateway's proposals; then a Remove."""
    channel, (a, b, c) = 555, (11, 22, 33)
    sender = ExternalSender.generate(channel)
    members = {u: davey.DaveSession(1, u, channel) for u in (a, b, c)}
    for member in members.values():
        member.set_external_sender(sender.marshal())
    adds = [sender.propose_add(0, members[u].get_serialized_key_package()) for u in (b, c)]
    payload = ExternalSender.proposals_append(adds)
    append = davey.ProposalsOperationType.append
    made = members[a].process_proposals(append, payload[1:], [a, b, c])
    assert made is not None and made.welcome is not None
    commit, welcome = split_commit_welcome(made.commit + made.welcome)
    assert (commit, welcome) == (made.commit, made.welcome)
    assert commit_epoch(commit) == 0
    members[a].process_commit(commit)
    for u in (b, c):
        members[u].process_welcome(welcome)
    assert [members[u].own_leaf_index for u in (a, b, c)] == [0, 1, 2]
    frame = members[b].encrypt_opus(b"\xfc" + bytes(40))
    assert members[c].decrypt(b, davey.MediaType.audio, frame) == b"\xfc" + bytes(40)

    payload = ExternalSender.proposals_append([sender.propose_remove(1, 1)])
    made = members[a].process_proposals(append, payload[1:], [a, c])
    members[c].process_proposals(append, payload[1:], [a, c])
    assert made is not None and split_commit_welcome(made.commit) == (made.commit, None)
    for u in (a, c):
        members[u].process_commit(made.commit)
    assert members[a].epoch == members[c].epoch == 2
    assert members[a].voice_privacy_code == members[c].voice_privacy_code


def test_transport_round_trips_and_authenticates_the_extension() -> None:
    key = bytes(range(32))
    for mode in ("aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"):
        packet = RTP(seq=65535, timestamp=2**32 - 960, ssrc=7, payload=b"opus", ext={1: b"\x20"})
        data = Transport(mode, key).encrypt(packet)
        assert Transport(mode, key).decrypt(data) == packet
        tampered = bytearray(data)
        tampered[15] ^= 1  # the extension length: AAD
        with pytest.raises(ValueError, match="authenticate"):
            Transport(mode, key).decrypt(bytes(tampered))


def test_safe_decoder_survives_mono_silence() -> None:
    load_opus()
    decoder = SafeDecoder()
    assert decoder.decode(SILENCE, fec=False) == bytes(3840)
    assert len(decoder.decode(None, fec=False)) == 3840


def test_voice_server_needs_no_discord() -> None:
    assert FakeVoiceServer().dave_version == 1


async def reconnected(fake: FakeDiscord, account: BotAccount, b: Bot, identifies: int) -> None:
    """The bot identified ``identifies`` times in all, is in DAVE again, and is heard."""

    def identified() -> bool:
        ops = fake.voice.ops(account)
        return [m.op for m in ops].count(VoiceOp.IDENTIFY) == identifies

    await fake.voice.wait_until(identified, limit_s=15)
    await settled(fake, account, b, limit_s=15)
    await assert_bot_audio(fake, account, b, e2ee=True)


async def test_voice_server_moved_rejoins(fake: FakeDiscord, bot: BotAccount) -> None:
    await fake.join_voice(HUMAN, VOICE)
    async with running_bot(fake, bot) as b:
        await b.connect()
        await settled(fake, bot, b)
        ssrc = fake.voice.ssrc(bot.user_id)
        fake.voice_server_moved(bot)
        # disnake leaves (op 4 null) and joins again: a new session, a new DAVE group
        await reconnected(fake, bot, b, identifies=2)
        assert fake.voice.ssrc(bot.user_id) != ssrc
        assert fake.bot_voice_channel(bot) == VOICE
        assert fake.voice.epoch(VOICE) == 1


async def test_close_4006_reconnects(fake: FakeDiscord, bot: BotAccount) -> None:
    await fake.join_voice(HUMAN, VOICE)
    async with running_bot(fake, bot) as b:
        await b.connect()
        await settled(fake, bot, b)
        await fake.voice.close(bot, 4006)
        await reconnected(fake, bot, b, identifies=2)
        assert [m.op for m in fake.voice.ops(bot)].count(VoiceOp.RESUME) == 0


async def test_move_bot_to_another_channel(fake: FakeDiscord, bot: BotAccount) -> None:
    await fake.join_voice(HUMAN, VOICE)
    await fake.join_voice(HUMAN2, OTHER_VOICE)
    async with running_bot(fake, bot) as b:
        await b.connect()
        await settled(fake, bot, b)
        await fake.move_bot(bot, OTHER_VOICE)
        await reconnected(fake, bot, b, identifies=2)
        assert fake.bot_voice_channel(bot) == OTHER_VOICE
        assert await b.call(lambda: b.voice.channel.id) == OTHER_VOICE
        assert fake.voice.dave_members(OTHER_VOICE) == {bot.user_id, HUMAN2}
        assert fake.voice.dave_members(VOICE) == set()


async def test_mute_udp(fake: FakeDiscord, bot: BotAccount) -> None:
    await fake.join_voice(HUMAN, VOICE)
    async with running_bot(fake, bot) as b:
        await b.connect()
        await settled(fake, bot, b)

        async def speak() -> None:
            await fake.voice.speak(HUMAN, tone16k(0.1, 400))

        fake.voice.mute_udp(bot)
        assert await heard_by_bot(b, speak) == []
        fake.voice.mute_udp(bot, False)
        assert len(await heard_by_bot(b, speak)) == 10
