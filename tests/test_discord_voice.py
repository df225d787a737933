"""Discord voice end to end: the real runtime and disnake's real voice client against a
Discord-compatible voice server on 127.0.0.1 (voice gateway v8 over TLS, UDP, DAVE with davey
humans), an OpenAI-compatible LLM and speech server. People speak espeak-ng speech into the
channel; the agent's answers come back as Opus, end-to-end encrypted, decoded by the fake."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.fake_discord import FakeDiscord
from tests.fake_speech import FakeOpenAIAudio
from tests.runtime_helpers import options, wait_state, write
from tests.speech_samples import say
from voxbridge import testing
from voxbridge.plugins.discord import connection, rooms
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair
from voxbridge.voice.audio import read_wav

GUILD, GENERAL = 880000000000000001, 880000000000000002
VOICE, OTHER = 880000000000000010, 880000000000000011
BOT = 101
ANN, BOB = 7001, 7002


class Rig:
    """The fakes, keys, and a runtime with agent "a" whose bot sits in voice channel VOICE."""

    def __init__(self, tmp_path: Path, *, dave_version: int = 1, **speech: Any) -> None:
        self.tmp = tmp_path
        self.dave = dave_version > 0
        self.discord = FakeDiscord(dave_version=dave_version)
        self.discord.add_guild(GUILD, "Guild", [GENERAL], voice_channel_ids=[VOICE, OTHER])
        self.discord.add_bot("tok-a", user_id=BOT, name="BotA")
        self.llm = FakeLLM(Plan([{"reply": "Hello to you."}]))
        self.speech = FakeOpenAIAudio(**speech)
        self.public = generate_key_pair(tmp_path / "keys", "k")
        self.rt: Runtime | None = None

    async def start(self, nursery: trio.Nursery, *, barge_in: bool = True) -> Runtime:
        await nursery.start(self.discord.serve)
        await start_fake(nursery, self.llm)
        await start_fake(nursery, self.speech)  # type: ignore[arg-type]
        token = seal("tok-a", self.public.key, "plugins.discord.bot_token")
        audio = f"base_url: '{self.speech.base_url}/v1', timeout: 5s"
        write(
            self.tmp,
            "a.yaml",
            f"name: A\nllm: {{base_url: '{self.llm.base_url}/v1', model: m, timeout: 5s}}\n"
            f"voice:\n  stt: {{provider: openai, model: whisper, {audio}}}\n"
            f"  tts: {{provider: openai, model: kokoro, {audio}}}\n"
            f"  vad: {{end_of_turn: 400ms}}\n  barge_in: {str(barge_in).lower()}\n"
            f"plugins:\n  discord:\n    bot_token: {token}\n"
            f"    voice: {{channels: ['{VOICE}']}}\n",
        )
        opts = options(
            self.tmp,
            discord_api_base=self.discord.base_url,
            discord_ca_file=Path(self.discord.voice.ca_file),
        )
        self.rt = await nursery.start(
            lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
        )
        await wait_state(self.rt, ("a", "discord"), ActorState.RUNNING)
        return self.rt

    async def in_call(self, *people: int) -> None:
        """``people`` join the voice channel; the bot follows them in and the call's DAVE group
        settles."""
        for user_id in people:
            await self.discord.join_voice(user_id, VOICE, name={ANN: "Ann", BOB: "Bob"}[user_id])
        await self.discord.wait_until(lambda: self.discord.bot_voice_channel("tok-a") == VOICE)
        if self.dave:
            await self.discord.voice.wait_for_dave(BOT, limit_s=15)
        else:
            await self.discord.voice.wait_until(lambda: self.discord.voice.connected(BOT))

    def asked(self) -> list[str]:
        """What each LLM request's last (user) message said."""
        return [r["messages"][-1]["content"] for r in self.llm.requests]


def _loudness(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


async def test_two_people_take_turns_and_each_answer_is_attributed_and_audible(
    tmp_path: Path,
) -> None:
    """Bob joins after Ann's first question: the call's DAVE group changes epoch mid-conversation,
    and both are still heard (and hear the agent) afterwards."""
    rig = Rig(
        tmp_path,
        stt=Plan([{"text": "what time is it"}, {"text": "and the weather"}, {"text": "thanks"}]),
        tts=Plan([{"seconds": 1.0}]),
    )
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.in_call(ANN)
        voice = rig.discord.voice
        turns = [(ANN, "what time is it"), (BOB, "and the weather"), (ANN, "thanks")]
        for n, (who, question) in enumerate(turns, start=1):
            if who == BOB and n == 2:
                epoch = voice.epoch(VOICE)
                await rig.in_call(BOB)
                assert voice.epoch(VOICE) > epoch
            mark = voice.mark()
            await voice.speak(who, say(question))
            await rig.llm.wait_requests(n, limit_s=20)
            await voice.wait_for_audio(BOT, 0.8, limit_s=20, since=mark)
            answer = voice.received_pcm(BOT, since=mark)
            assert _loudness(answer) > 1000  # the tone the fake TTS made, through Opus
            assert voice.bot_frames_are_e2ee(BOT, since=mark)
        assert rig.asked() == ["Ann: what time is it", "Bob: and the weather", "Ann: thanks"]
        # The second question carries the first exchange: the history says who said what.
        second = [m["content"] for m in rig.llm.requests[1]["messages"]]
        assert "Ann: what time is it" in second and "Hello to you." in second
        # Kept as the voice channel's conversation, each question with who asked it.
        assert rig.rt is not None and rig.rt.memory.store is not None
        asked = await rig.rt.memory.store.read(
            lambda b: list(b.export_turns("a", place=f"discord-voice:{VOICE}")), default=[]
        )
        people = [(t.person, t.text) for t in asked if t.role == "user"]
        assert people == [
            (f"discord:{ANN}", "Ann: what time is it"),
            (f"discord:{BOB}", "Bob: and the weather"),
            (f"discord:{ANN}", "Ann: thanks"),
        ]
        nursery.cancel_scope.cancel()


async def test_a_person_speaking_over_the_answer_stops_it(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        stt=Plan([{"text": "tell me a long story"}, {"text": "stop"}]),
        tts=Plan([{"seconds": 8.0}, {"seconds": 0.5}]),
    )
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.in_call(ANN, BOB)
        voice = rig.discord.voice
        mark = voice.mark()
        await voice.speak(ANN, say("tell me a long story"))
        await voice.wait_for_audio(BOT, 1.0, limit_s=20, since=mark)
        interrupted = voice.mark()
        await voice.speak(BOB, say("stop"))
        await rig.llm.wait_requests(2, limit_s=20)
        # The long answer stopped: far less than its 8 s reached the channel before the second.
        long_answer = [p for p in voice.received(BOT, since=mark) if p.at < interrupted + 2]
        assert len(long_answer) * 0.02 < 5.0
        assert rig.asked()[1] == "Bob: stop"
        assert any(m["content"].endswith("…") for m in rig.llm.requests[1]["messages"])
        nursery.cancel_scope.cancel()


async def test_a_backchannel_over_the_answer_pauses_it_and_it_goes_on(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        stt=Plan([{"text": "tell me a long story"}, {"text": "Yeah."}]),
        tts=Plan([{"seconds": 4.0}]),
    )
    async with trio.open_nursery() as nursery:
        rt = await rig.start(nursery)
        await rig.in_call(ANN, BOB)
        voice = rig.discord.voice
        mark = voice.mark()
        await voice.speak(ANN, say("tell me a long story"))
        await voice.wait_for_audio(BOT, 1.0, limit_s=20, since=mark)
        over = voice.mark()
        await voice.speak(BOB, say("yeah", pad=0.1))
        # All of the answer's 4 s (the frames a pause took back were sent again).
        await voice.wait_for_audio(BOT, 4.0, limit_s=20, since=mark)
        nursery.cancel_scope.cancel()
    answer = [p.at for p in voice.received(BOT, since=mark)]
    # Silent while "yeah" was heard and judged, then the rest of the answer.
    gaps = [b - a for a, b in itertools.pairwise(answer) if a > over]
    assert max(gaps) > 0.2  # at least the 200 ms pause after "yeah" before it was judged
    assert rig.asked() == ["Ann: tell me a long story"]  # no second turn, nothing cut
    counters = rt.table.counters(("a", "discord"))
    assert counters["voice_backchannels"] == 1 and "voice_barge_ins" not in counters


async def test_speech_with_loss_and_reordering_is_still_heard(tmp_path: Path) -> None:
    rig = Rig(tmp_path, stt=Plan([{"text": "can you hear me"}]), tts=Plan([{"seconds": 0.5}]))
    async with trio.open_nursery() as nursery:
        rt = await rig.start(nursery)
        await rig.in_call(ANN)
        question = say("can you hear me now, over this bad line")
        await rig.discord.voice.speak(ANN, question, loss=0.05, reorder=0.05, seed=7)
        await rig.speech.wait_requests(1, limit_s=20)
        heard = read_wav(rig.speech.uploads[0]["audio"])
        # The utterance reached the STT whole: lost packets were filled, not cut out.
        spoken = len(question) / 2 / 16_000
        assert len(heard.pcm) / 2 / heard.rate == pytest.approx(spoken, rel=0.35)
        counters = rt.table.counters(("a", "discord"))
        assert counters.get("voice_rx_recovered", 0) > 0
        nursery.cancel_scope.cancel()


async def test_without_dave_the_transport_layer_alone_carries_the_call(tmp_path: Path) -> None:
    rig = Rig(tmp_path, dave_version=0, stt=Plan([{"text": "hello"}]), tts=Plan([{"seconds": 0.6}]))
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.in_call(ANN)
        voice = rig.discord.voice
        mark = voice.mark()
        await voice.speak(ANN, say("hello there"))
        await voice.wait_for_audio(BOT, 0.5, limit_s=20, since=mark)
        assert _loudness(voice.received_pcm(BOT, since=mark)) > 1000
        assert not voice.bot_frames_are_e2ee(BOT, since=mark)
        assert rig.asked() == ["Ann: hello"]
        nursery.cancel_scope.cancel()


async def test_the_bot_leaves_when_only_bots_remain_and_respects_a_kick(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    async with trio.open_nursery() as nursery:
        rt = await rig.start(nursery)
        await rig.in_call(ANN)
        await rig.discord.leave_voice(ANN)
        await rig.discord.wait_until(lambda: rig.discord.bot_voice_channel("tok-a") is None)

        await rig.in_call(ANN)  # back in with her
        await rig.discord.kick_from_voice("tok-a")
        await rig.discord.wait_until(lambda: rig.discord.bot_voice_channel("tok-a") is None)
        await trio.sleep(1.5)  # a moment to (wrongly) rejoin
        assert rig.discord.bot_voice_channel("tok-a") is None
        # The text side never stopped.
        assert rt.table.get(("a", "discord")).state == ActorState.RUNNING  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()


async def _answered(rig: Rig, who: int, asked: int) -> None:
    """``who`` asks; the LLM gets question number ``asked`` and the answer is heard."""
    voice = rig.discord.voice
    mark = voice.mark()
    await voice.speak(who, say("are you still there"))
    await rig.llm.wait_requests(asked, limit_s=20)
    await voice.wait_for_audio(BOT, 0.3, limit_s=20, since=mark)


@pytest.mark.parametrize("fault", ["4015 resumed", "4006 session invalid", "server moved"])
async def test_voice_server_faults_are_recovered_and_text_goes_on(
    tmp_path: Path, fault: str
) -> None:
    rig = Rig(tmp_path, stt=Plan([{"text": "are you still there"}]), tts=Plan([{"seconds": 0.5}]))
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.in_call(ANN)
        voice = rig.discord.voice
        await _answered(rig, ANN, 1)
        connections = voice.connection_count(BOT)
        if fault == "server moved":
            rig.discord.voice_server_moved("tok-a")
        else:
            await voice.close(BOT, int(fault.split()[0]))
        # The text side answers while voice recovers.
        await rig.discord.send_message("tok-a", content="hi", author_id=ANN, author_name="ann")
        await rig.llm.wait_requests(2, limit_s=20)
        await voice.wait_until(lambda: voice.connection_count(BOT) > connections, limit_s=20)
        await rig.in_call()
        await _answered(rig, ANN, 3)
        resumed = [m for m in voice.ops(BOT) if m.op == 7]
        assert bool(resumed) == (fault == "4015 resumed")
        nursery.cancel_scope.cancel()


async def test_a_moderators_move_is_followed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, stt=Plan([{"text": "are you still there"}]), tts=Plan([{"seconds": 0.5}]))
    async with trio.open_nursery() as nursery:
        await rig.start(nursery)
        await rig.in_call(ANN)
        await rig.discord.join_voice(BOB, OTHER, name="Bob")
        await rig.discord.move_bot("tok-a", OTHER)
        await rig.discord.wait_until(lambda: rig.discord.bot_voice_channel("tok-a") == OTHER)
        await rig.discord.voice.wait_for_dave(BOT, limit_s=15)
        await _answered(rig, BOB, 1)
        assert rig.asked() == ["Bob: are you still there"]
        nursery.cancel_scope.cancel()


async def test_a_silent_udp_path_is_joined_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Discord echoes keepalives, so silence means a dead path; shortened from 30 s and 5 s.
    monkeypatch.setattr(rooms, "UDP_SILENCE", 1.0)
    monkeypatch.setattr(connection, "KEEPALIVE_EVERY", 0.2)
    rig = Rig(tmp_path, stt=Plan([{"text": "are you still there"}]), tts=Plan([{"seconds": 0.5}]))
    async with trio.open_nursery() as nursery:
        rt = await rig.start(nursery)
        await rig.in_call(ANN)
        voice = rig.discord.voice
        await trio.sleep(2.0)  # quiet, but the keepalives' echoes show the path is alive
        assert voice.connection_count(BOT) == 1
        voice.mute_udp(BOT)
        await voice.wait_until(lambda: voice.connection_count(BOT) > 1, limit_s=20)
        voice.mute_udp(BOT, False)
        await rig.in_call()
        await _answered(rig, ANN, 1)
        assert rt.table.counters(("a", "discord"))["voice_errors"] >= 1
        nursery.cancel_scope.cancel()


async def test_voice_join_and_leave_follow_the_caller(tmp_path: Path) -> None:
    rig = Rig(tmp_path, stt=Plan([{"text": "hello"}]), tts=Plan([{"seconds": 0.5}]))
    discord = rig.discord

    async def command(subcommand: str) -> str:
        def callbacks() -> list[Any]:
            return [r for r in discord.requests if r.path.endswith("/callback")]

        before = len(callbacks())
        await discord.send_interaction(
            "tok-a",
            guild_id=GUILD,
            channel_id=GENERAL,
            user_id=BOB,
            name="voice",
            subcommand=subcommand,
        )
        await discord.wait_until(lambda: len(callbacks()) > before)
        return str(callbacks()[-1].json["data"]["content"])

    async with trio.open_nursery() as nursery:
        rt = await rig.start(nursery)
        await discord.wait_until(lambda: bool(discord._bot("tok-a").commands))
        assert await command("join") == "Join a voice channel first, then ask again."
        await discord.join_voice(BOB, OTHER, name="Bob")  # not a listed channel
        assert await command("join") == f"Joining <#{OTHER}> 🔊"
        await discord.wait_until(lambda: discord.bot_voice_channel("tok-a") == OTHER)
        await discord.voice.wait_for_dave(BOT, limit_s=15)
        await _answered(rig, BOB, 1)
        # The agent's state says where it is and who is speaking.
        state = rt.table.get(("a", "discord"))
        assert state is not None and state.detail is not None
        assert state.detail.startswith("🔊 in voice channel voice-1")
        assert await command("leave") == "Leaving the voice channel 👋"
        await discord.wait_until(lambda: discord.bot_voice_channel("tok-a") is None)
        nursery.cancel_scope.cancel()
