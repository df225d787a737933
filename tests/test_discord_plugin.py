"""The discord plugin end to end: the real runtime and the real disnake client against a
Discord-compatible server, an OpenAI-compatible LLM and an n8n-like webhook, all on 127.0.0.1."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import clean_env
from tests.fake_brains import FakeLLM, FakeN8n, Plan, start_fake
from tests.fake_discord import FakeDiscord, RecordedRequest
from tests.runtime_helpers import options, wait_state, wait_until, write
from tests.test_memory_faults import Run
from voxbridge import testing
from voxbridge.plugins.discord.bot import APOLOGY
from voxbridge.plugins.discord.reply import CURSOR, STOPPED
from voxbridge.runtime.fleet import Runtime
from voxbridge.runtime.run import serve
from voxbridge.runtime.state import ActorState
from voxbridge.runtime.version import blob_id
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import PublicKey, generate_key_pair

GUILD, GENERAL, OTHER = 880000000000000001, 880000000000000002, 880000000000000003
ANN = 7001


class Rig:
    """A fake Discord, LLM and n8n, keys, and a runtime over tmp_path/agents.d."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.discord = FakeDiscord()
        self.discord.add_guild(GUILD, "Guild", [GENERAL, OTHER])
        self.llm = FakeLLM(Plan([{"reply": "hello from the llm"}]))
        self.n8n = FakeN8n()
        self.public: PublicKey = generate_key_pair(tmp_path / "keys", "k")
        self.rt: Runtime | None = None

    async def servers(self, nursery: trio.Nursery) -> None:
        """Start the fake Discord, LLM and n8n (before writing agents: they need the URLs)."""
        await nursery.start(self.discord.serve)
        await start_fake(nursery, self.llm)
        await start_fake(nursery, self.n8n)

    async def start(self, nursery: trio.Nursery, **run_options: Any) -> Runtime:
        """Start the runtime over the agent files written so far."""
        opts = options(self.tmp, discord_api_base=self.discord.base_url, **run_options)
        self.rt = await nursery.start(
            lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
        )
        return self.rt

    def agent(
        self, agent_id: str, token: str, *, extra: str = "", channels: str = "[]", n8n: str = ""
    ) -> Path:
        """Write an agent whose bot logs in with ``token`` and thinks with the fake LLM."""
        sealed = seal(token, self.public.key, "plugins.discord.bot_token")
        text = (
            f"name: {agent_id.title()}\n{extra}"
            f"llm: {{base_url: '{self.llm.base_url}/v1', model: m, timeout: 5s}}\n"
            f"plugins:\n  discord:\n    bot_token: {sealed}\n    channels: {channels}\n"
        )
        if n8n:
            url = seal(
                f"{self.n8n.base_url}/webhook/hook", self.public.key, "plugins.n8n.webhook_url"
            )
            text += f"  n8n:\n    webhook_url: {url}\n    mode: {n8n}\n"
        return write(self.tmp, f"{agent_id}.yaml", text)

    async def dm_bot_a(self, nursery: trio.Nursery, text: str = "talk") -> tuple[Runtime, int]:
        """Servers, agent "a" on bot "tok-a" running, and a DM sent to it; its channel."""
        await self.servers(nursery)
        self.agent("a", "tok-a")
        rt = await self.start(nursery)
        await ready(self, "a")
        msg = await self.discord.send_message(
            "tok-a", content=text, author_id=ANN, author_name="ann"
        )
        return rt, int(msg["channel_id"])

    async def restart_bot(self, agent_id: str, old: str, new: str) -> None:
        """Replace ``old`` with ``new`` in the agent's discord section, and wait until that
        edit has restarted its bot (an edit of the section restarts the actor)."""
        rt, key = self.rt, (agent_id, "discord")
        assert rt is not None
        before = rt.table.get(key)
        assert before is not None
        path = self.tmp / "agents.d" / f"{agent_id}.yaml"
        path.write_text(path.read_text().replace(old, new))
        await rt.reconciler.apply_paths([path])

        def restarted() -> bool:
            now = rt.table.get(key)
            return now is not None and now.since > before.since and now.state == ActorState.RUNNING

        await wait_until(rt, restarted)

    def replies(self, channel: int, token: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.discord.requests
            if r.method == "POST"
            and r.path == f"/channels/{channel}/messages"
            and (token is None or r.token == token)
        ]


async def ready(rig: Rig, agent_id: str) -> None:
    assert rig.rt is not None
    await wait_state(rig.rt, (agent_id, "discord"), ActorState.RUNNING)


async def test_mentions_and_dms_get_answers_in_the_agents_voice(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", extra="system_prompt: You are A.\nhistory: 4\n")
        await rig.start(nursery)
        await ready(rig, "a")
        msg = await rig.discord.send_message(
            "tok-a",
            content="<@101> hi there",
            author_id=ANN,
            author_name="ann",
            guild_id=GUILD,
            channel_id=GENERAL,
            mentions=[101],
        )
        reply = await rig.discord.wait_for(lambda r: r in rig.replies(GENERAL))
        assert str(reply.json["message_reference"]["message_id"]) == msg["id"]
        await rig.discord.wait_until(
            lambda: rig.discord.shown(GENERAL, "tok-a") == "hello from the llm"
        )
        assert rig.llm.requests[0]["messages"] == [
            {"role": "system", "content": "You are A."},
            {"role": "user", "content": "hi there"},
        ]

        # A DM, then a second DM: the history carries the first exchange.
        await rig.discord.send_message(
            "tok-a", content="and you?", author_id=ANN, author_name="ann"
        )
        await rig.llm.wait_requests(2)
        await rig.discord.send_message("tok-a", content="third", author_id=ANN, author_name="ann")
        await rig.llm.wait_requests(3)
        assert [m["content"] for m in rig.llm.requests[2]["messages"]] == [
            "You are A.",
            "and you?",
            "hello from the llm",
            "third",
        ]
        # Its own messages and other bots' are ignored; ambient messages outside `channels` too.
        await rig.discord.send_message(
            "tok-a",
            content="from me",
            author_id=101,
            author_name="BotA",
            guild_id=GUILD,
            channel_id=GENERAL,
        )
        await rig.discord.send_message(
            "tok-a",
            content="not for you",
            author_id=ANN,
            author_name="ann",
            guild_id=GUILD,
            channel_id=OTHER,
        )
        await trio.sleep(0.3)
        assert len(rig.llm.requests) == 3
        nursery.cancel_scope.cancel()


async def test_ambient_messages_go_to_the_active_agent_only(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.discord.add_bot("tok-b", user_id=102, name="BotB")
    rig.discord.add_bot("tok-c", user_id=103, name="BotC")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", extra="default: true\n", channels=f"['{GENERAL}']")
        rig.agent("b", "tok-b", channels=f"[{GENERAL}]")
        rig.agent("c", "tok-c")  # three bots online at once
        await rig.start(nursery)
        for agent_id in "abc":
            await ready(rig, agent_id)

        async def ambient(text: str) -> None:
            for token in ("tok-a", "tok-b"):  # every bot in the guild sees the message
                await rig.discord.send_message(
                    token,
                    content=text,
                    author_id=ANN,
                    author_name="ann",
                    guild_id=GUILD,
                    channel_id=GENERAL,
                )

        await ambient("anyone?")
        await rig.discord.wait_until(lambda: len(rig.replies(GENERAL)) == 1)
        await trio.sleep(0.3)
        assert [r.token for r in rig.replies(GENERAL)] == ["tok-a"]  # the default agent

        # /agent select through INTERACTION_CREATE, on b's bot.
        await rig.discord.wait_until(lambda: bool(rig.discord._bot("tok-b").commands))
        await rig.discord.send_interaction(
            "tok-b",
            guild_id=GUILD,
            channel_id=GENERAL,
            user_id=ANN,
            subcommand="select",
            options={"name": "b"},
        )
        answer = await rig.discord.wait_for(lambda r: r.path.endswith("/callback"))
        assert answer.json["data"]["content"] == "✅ **B** now answers in this server."
        await ambient("now?")
        await rig.discord.wait_until(lambda: len(rig.replies(GENERAL)) == 2)
        await trio.sleep(0.3)
        assert [r.token for r in rig.replies(GENERAL)] == ["tok-a", "tok-b"]
        assert rig.rt is not None
        assert rig.rt.selections.get(GUILD) == "b"
        nursery.cancel_scope.cancel()


async def test_agent_list_and_current(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", extra="default: true\ndescription: The first\n")
        write(tmp_path, "quiet.yaml", "name: Quiet\n")
        await rig.start(nursery)
        await ready(rig, "a")
        await rig.discord.wait_until(lambda: bool(rig.discord._bot("tok-a").commands))
        for sub, expected in (
            ("list", "⭐🔌 **A** — The first ← active here\n**Quiet**"),
            ("current", "The active agent here is **A** (default)."),
        ):
            await rig.discord.send_interaction(
                "tok-a", guild_id=GUILD, channel_id=GENERAL, user_id=ANN, subcommand=sub
            )
            answer = await rig.discord.wait_for(
                lambda r, s=sub: r.path.endswith("/callback") and r not in getattr(rig, "seen", [])
            )
            rig.seen = [*getattr(rig, "seen", []), answer]  # type: ignore[attr-defined]
            assert answer.json["data"]["content"] == expected
        await rig.discord.send_interaction(
            "tok-a",
            guild_id=GUILD,
            channel_id=GENERAL,
            user_id=ANN,
            subcommand="select",
            options={"name": "QUIET"},
        )
        answer = await rig.discord.wait_for(
            lambda r: r.path.endswith("/callback") and r not in rig.seen
        )  # type: ignore[attr-defined]
        assert answer.json["data"]["content"] == (
            "**Quiet** has no Discord bot enabled: pick an agent marked 🔌."
        )
        nursery.cancel_scope.cancel()


async def test_edits_prompt_live_token_reconnects_delete_disconnects(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    bot = rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.discord.add_bot("tok-a2", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        path = rig.agent("a", "tok-a", extra="system_prompt: first\n")
        rt = await rig.start(nursery)
        await ready(rig, "a")
        assert bot.identifies == 1

        # The prompt changes: same connection, the next answer uses the new prompt.
        path.write_text(path.read_text().replace("first", "second"))
        await wait_until(rt, lambda: rt.index.get("a").system_prompt == "second")  # type: ignore[union-attr]
        await rig.discord.send_message("tok-a", content="hi", author_id=ANN, author_name="ann")
        await rig.llm.wait_requests(1)
        assert rig.llm.requests[0]["messages"][0]["content"] == "second"
        assert bot.identifies == 1 and rig.discord.connected("tok-a")

        # The token changes: the bot reconnects with the new one.
        rig.agent("a", "tok-a2", extra="system_prompt: second\n")
        await rig.discord.wait_until(
            lambda: rig.discord.connected("tok-a2") and not rig.discord.connected("tok-a")
        )

        # The file goes: the bot disconnects.
        path.unlink()
        await rig.discord.wait_until(lambda: not rig.discord.connected("tok-a2"))
        await wait_until(rt, lambda: rt.table.get(("a", "discord")) is None)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("how", ["401", "4004", "4014"])
async def test_permanent_failures_are_parked_after_one_attempt(tmp_path: Path, how: str) -> None:
    rig = Rig(tmp_path)
    if how != "401":
        rig.discord.add_bot("tok-x", user_id=101, name="BotX", close_on_identify=int(how))
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("x", "tok-x")
        rt = await rig.start(nursery)
        await wait_state(rt, ("x", "discord"), ActorState.FAILED)
        status = rt.table.get(("x", "discord"))
        assert status is not None
        expected = {
            "401": "rejected the bot token (401)",
            "4004": "4004",
            "4014": "Message Content Intent",
        }[how]
        assert expected in (status.last_error or "")
        assert status.restarts == 0
        logins = [r for r in rig.discord.requests if r.path == "/users/@me"]
        await trio.sleep(1.5)  # well past the first backoff (1 s): still no second attempt
        assert len([r for r in rig.discord.requests if r.path == "/users/@me"]) == len(logins)
        nursery.cancel_scope.cancel()


async def test_llm_down_falls_back_to_n8n_and_failures_apologise(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.llm.plan = Plan([{"status": 500}])
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.discord.add_bot("tok-b", user_id=102, name="BotB")
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.discord.serve)
        await start_fake(nursery, rig.llm)
        await start_fake(nursery, rig.n8n)
        rig.agent("a", "tok-a", n8n="fallback")
        rig.agent("b", "tok-b")  # no n8n: the user gets the apology
        opts = options(tmp_path, discord_api_base=rig.discord.base_url)
        rig.rt = await nursery.start(
            lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
        )
        await ready(rig, "a")
        await ready(rig, "b")
        await wait_state(rig.rt, ("a", "n8n"), ActorState.RUNNING)
        await rig.discord.send_message("tok-a", content="help", author_id=ANN, author_name="ann")
        reply = await rig.discord.wait_for(
            lambda r: r.method == "POST" and r.token == "tok-a" and r.path.endswith("/messages"),
            limit_s=15,
        )
        assert reply.json["content"] == "from n8n"
        assert rig.n8n.requests[0]["text"] == "help"
        await rig.discord.send_message("tok-b", content="help", author_id=ANN, author_name="ann")
        reply = await rig.discord.wait_for(
            lambda r: r.method == "POST" and r.token == "tok-b" and r.path.endswith("/messages"),
            limit_s=15,
        )
        assert reply.json["content"] == APOLOGY
        status = rig.rt.table.get(("b", "discord"))
        assert status is not None
        assert "HTTP 500" in (status.detail or "")
        assert rig.rt.table.counters(("b", "discord"))["brain_errors"] == 1
        nursery.cancel_scope.cancel()


async def test_n8n_primary_answers_instead_of_the_llm(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.n8n.plan = Plan([{"json": [{"output": "workflow says hi"}]}])
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await nursery.start(rig.discord.serve)
        await start_fake(nursery, rig.llm)
        await start_fake(nursery, rig.n8n)
        rig.agent("a", "tok-a", n8n="primary")
        opts = options(tmp_path, discord_api_base=rig.discord.base_url)
        rig.rt = await nursery.start(
            lambda task_status: serve(opts, plugins=testing.plugins(), task_status=task_status)
        )
        await wait_state(rig.rt, ("a", "n8n"), ActorState.RUNNING)
        await ready(rig, "a")
        await rig.discord.send_message("tok-a", content="hey", author_id=ANN, author_name="ann")
        reply = await rig.discord.wait_for(
            lambda r: r.method == "POST" and r.path.endswith("/messages")
        )
        assert reply.json["content"] == "workflow says hi"
        assert rig.llm.requests == []
        nursery.cancel_scope.cancel()


async def test_a_question_cut_by_a_file_edit_before_any_word_is_answered_by_the_next_bot(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.llm.plan = Plan([{"delay": 30, "reply": "too late"}, {"reply": "answered after all"}])
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        path = rig.agent("a", "tok-a")
        rt = await rig.start(nursery)
        await ready(rig, "a")
        hi = await rig.discord.send_message("tok-a", content="hi", author_id=ANN, author_name="ann")
        await rig.llm.wait_requests(1)
        # A brain this slow gets "typing…" shown (a quick one does not need it).
        await rig.discord.wait_for(lambda r: r.path.endswith("/typing"))
        # The plugin section changes (channels): the actor restarts, the pending answer goes...
        bot = rig.discord._bot("tok-a")
        path.write_text(path.read_text().replace("channels: []", f"channels: [{OTHER}]"))
        await rig.discord.wait_until(lambda: bot.identifies == 2, limit_s=10)
        await wait_state(rt, ("a", "discord"), ActorState.RUNNING)
        # ...and as ann saw nothing of it but "typing…", the next bot asks again and answers.
        await rig.llm.wait_requests(2)
        assert [r["messages"][-1]["content"] for r in rig.llm.requests] == ["hi", "hi"]
        channel = int(hi["channel_id"])
        await rig.discord.wait_until(lambda: rig.discord.shown(channel, "tok-a") != "")
        (answer,) = rig.discord.messages_in(channel, "tok-a")
        assert answer["message_reference"]["message_id"] == hi["id"]
        await rig.discord.wait_until(
            lambda: rig.discord.shown(channel, "tok-a") == "answered after all"
        )
        assert rt.table.counters(("a", "discord")).get("messages_dropped", 0) == 0
        nursery.cancel_scope.cancel()


async def test_long_replies_go_on_in_a_new_message(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.llm.plan = Plan([{"reply": ("word " * 500).strip()}])  # 2,499 characters, streamed
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        _, channel = await rig.dm_bot_a(nursery)

        def words() -> list[str]:
            return rig.discord.shown(channel, "tok-a").split()

        await rig.discord.wait_until(lambda: words() == ["word"] * 500, limit_s=10)
        first, second = rig.discord.messages_in(channel, "tok-a")
        assert len(first["content"]) <= 2000 and len(second["content"]) <= 2000
        # Each page replies to the one before: a reply to the last brings the whole answer back.
        assert first["message_reference"]["message_id"] != second["message_reference"]["message_id"]
        assert second["message_reference"]["message_id"] == first["id"]
        assert rig.discord.fastest_rewrite() >= 0.9
        nursery.cancel_scope.cancel()


async def test_replies_stream_edited_at_most_once_a_second(tmp_path: Path) -> None:
    from voxbridge.plugins.discord.reply import CURSOR

    rig = Rig(tmp_path)
    chunks = [f"part{n} " for n in range(10)]
    rig.llm.plan = Plan([{"chunks": chunks, "chunk_delay": 0.3}])  # 2.7 s of answer
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        _, channel = await rig.dm_bot_a(nursery)
        post = await rig.discord.wait_for(lambda r: r in rig.replies(channel))
        # Posted at the first delta, with the cursor, while the LLM is still writing.
        assert post.json["content"].endswith(CURSOR)
        assert rig.llm.chunks_sent < len(chunks)
        assert post.at - rig.llm.first_chunk_at[0] < 0.25
        whole = "".join(chunks).strip()
        await rig.discord.wait_until(
            lambda: rig.discord.shown(channel, "tok-a") == whole, limit_s=10
        )
        edits = [r for r in rig.discord.requests if r.method == "PATCH"]
        assert 2 <= len(edits) <= 4  # about one a second over ~3 s
        assert all(e.json["content"].endswith(CURSOR) for e in edits[:-1])
        assert rig.discord.fastest_rewrite() >= 0.9  # never faster than once a second
        assert len(rig.replies(channel)) == 1
        nursery.cancel_scope.cancel()


async def test_a_failure_mid_answer_leaves_the_text_and_says_so(tmp_path: Path) -> None:
    from voxbridge.plugins.discord.reply import BROKE_OFF

    rig = Rig(tmp_path)
    rig.llm.plan = Plan([{"chunks": ["Here is ", "half an ", "answer"], "break_after": 2}])
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        rt, channel = await rig.dm_bot_a(nursery)
        expected = f"Here is half an\n{BROKE_OFF}"
        await rig.discord.wait_until(lambda: rig.discord.shown(channel, "tok-a") == expected)
        assert len(rig.llm.requests) == 1  # not retried once text was shown
        # The next question carries the cut answer in its history, marked.
        rig.llm.plan = Plan([{"reply": "sorry about that"}])
        await rig.discord.send_message("tok-a", content="again?", author_id=ANN, author_name="ann")
        await rig.llm.wait_requests(2)
        assert rt.table.counters(("a", "discord"))["brain_errors"] == 1
        assert rig.llm.requests[1]["messages"][-2] == {
            "role": "assistant",
            "content": "Here is half an…",
        }
        nursery.cancel_scope.cancel()


STORY = Plan([{"chunks": [f"part{n} " for n in range(40)], "chunk_delay": 0.3}])  # 12 s
"""An answer still streaming when the bot is stopped."""


def cut_off(rig: Rig, channel: int) -> str:
    """The text of the one message an answer cut off by a stop of its bot left: no cursor,
    and the line saying it was cut off last."""
    (message,) = rig.discord.messages_in(channel, "tok-a")
    shown = message["content"]
    assert shown.endswith(f"\n{STOPPED}") and CURSOR not in shown, shown
    said = shown.removesuffix(f"\n{STOPPED}")
    assert said.startswith("part0 part1")
    assert rig.llm.chunks_sent < 40  # cut off indeed
    return said


async def streaming(rig: Rig, channel: int) -> None:
    """Until the bot's answer in ``channel`` has been edited at least once, its cursor showing."""
    await rig.discord.wait_for(lambda r: r.method == "PATCH", limit_s=10)
    assert rig.discord.shown(channel, "tok-a").endswith(CURSOR)


@pytest.mark.parametrize("stop", ["edit", "delete"])
async def test_an_answer_cut_off_by_a_stop_of_the_bot_keeps_its_text_and_says_so(
    tmp_path: Path, stop: str
) -> None:
    rig = Rig(tmp_path)
    rig.llm.plan = STORY
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        rt, channel = await rig.dm_bot_a(nursery, "tell me a long story")
        await streaming(rig, channel)
        if stop == "edit":  # an edit of the discord section restarts the bot
            await rig.restart_bot("a", "channels: []", f"channels: [{OTHER}]")
        else:
            path = tmp_path / "agents.d" / "a.yaml"
            path.unlink()
            await rt.reconciler.apply_paths([path])
        # Settled by the time the bot has stopped: the text so far, and why it ends there...
        said = cut_off(rig, channel)
        # ...which memory keeps as what was said (marked as cut off), after the question.
        with trio.fail_after(5):
            await rt.memory.settle()
        conversation = await rt.memory.of("a").conversation(f"discord:{channel}")
        assert [t.content for t in conversation.turns] == ["tell me a long story", f"{said}…"]
        nursery.cancel_scope.cancel()


async def test_messages_waiting_when_the_bot_restarts_are_answered_by_the_next_one(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.llm.plan = Plan([*STORY.steps, {"reply": "answered after the restart"}])
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        rt, channel = await rig.dm_bot_a(nursery, "tell me a long story")
        # Two more while the first is answered: they wait in ann's lane.
        waiting = [
            await rig.discord.send_message("tok-a", content=text, author_id=ANN, author_name="ann")
            for text in ("and then?", "one more thing")
        ]
        await streaming(rig, channel)
        await rig.restart_bot("a", "channels: []", f"channels: [{OTHER}]")
        # The restarted bot answers them, in order, each replying to its message.
        await rig.llm.wait_requests(3)
        asked = [r["messages"][-1]["content"] for r in rig.llm.requests]
        assert asked == ["tell me a long story", "and then?", "one more thing"]
        await rig.discord.wait_until(lambda: len(rig.discord.messages_in(channel, "tok-a")) == 3)
        first, *later = rig.discord.messages_in(channel, "tok-a")
        assert first["content"].endswith(f"\n{STOPPED}")  # the first one was cut off, as before
        assert [m["message_reference"]["message_id"] for m in later] == [m["id"] for m in waiting]
        await rig.discord.wait_until(
            lambda: all(
                m["content"] == "answered after the restart"
                for m in rig.discord.messages_in(channel, "tok-a")[1:]
            )
        )
        assert rt.table.counters(("a", "discord")).get("messages_dropped", 0) == 0
        nursery.cancel_scope.cancel()


async def test_a_message_heard_as_the_bot_goes_offline_is_answered_by_the_next_one(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.llm.plan = Plan([*STORY.steps, {"reply": "answered after the restart"}])
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        rt, channel = await rig.dm_bot_a(nursery, "tell me a long story")
        await streaming(rig, channel)
        slow = rig.discord.edits_wait = trio.Event()
        async with trio.open_nursery() as restart:
            restart.start_soon(rig.restart_bot, "a", "channels: []", f"channels: [{OTHER}]")
            # The stopping bot makes its last edit, which Discord holds: it is still online...
            await rig.discord.wait_until(
                lambda: any(STOPPED in e.get("content", "") for e in rig.discord.edits_waiting),
                limit_s=10,
            )
            late = await rig.discord.send_message(
                "tok-a", content="are you there?", author_id=ANN, author_name="ann"
            )
            # ...until its last edit's wait is over (2 s); then the next bot starts.
        rig.discord.edits_wait = None
        slow.set()
        await rig.llm.wait_requests(2)
        assert rig.llm.requests[-1]["messages"][-1]["content"] == "are you there?"

        def answered() -> bool:
            return any(
                m.get("message_reference", {}).get("message_id") == late["id"]
                and m["content"] == "answered after the restart"
                for m in rig.discord.messages_in(channel, "tok-a")
            )

        await rig.discord.wait_until(answered)
        assert rt.table.counters(("a", "discord")).get("messages_dropped", 0) == 0
        nursery.cancel_scope.cancel()


async def test_messages_waiting_when_the_agent_is_deleted_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path)
    rig.llm.plan = STORY
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        rt, channel = await rig.dm_bot_a(nursery, "tell me a long story")
        for text in ("and then?", "one more thing"):
            await rig.discord.send_message("tok-a", content=text, author_id=ANN, author_name="ann")
        await streaming(rig, channel)
        path = tmp_path / "agents.d" / "a.yaml"
        path.unlink()
        await rt.reconciler.apply_paths([path])
        # No bot of this agent comes next: they are not answered, and the log says so (the
        # actor's counters go with the agent).
        cut_off(rig, channel)
        assert "2 waiting message(s) will not be answered: the agent was deleted" in caplog.text
        assert len(rig.llm.requests) == 1
        nursery.cancel_scope.cancel()


async def test_a_shutdown_mid_answer_settles_the_message(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.llm.plan = STORY
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a")
        base = rig.discord.base_url
        with Run(tmp_path, "--discord-api-base", base, "--state-dir", "state") as run:
            await run.until("✅ a/discord ready")
            asked = await rig.discord.send_message(
                "tok-a", content="tell me a long story", author_id=ANN, author_name="ann"
            )
            channel = int(asked["channel_id"])
            for text in ("and then?", "one more thing"):  # waiting: no bot comes next
                await rig.discord.send_message(
                    "tok-a", content=text, author_id=ANN, author_name="ann"
                )
            await streaming(rig, channel)
            run.proc.send_signal(signal.SIGTERM)
            # (Waited for in a thread: the fake Discord must go on serving the last edit.)
            out, _ = await trio.to_thread.run_sync(
                functools.partial(run.proc.communicate, timeout=30)
            )
            assert run.proc.returncode == 0, "".join(run.lines) + out
            said_why = "2 waiting message(s) will not be answered: voxbridge is shutting down"
            assert said_why in "".join(run.lines) + out
        said = cut_off(rig, channel)
        # The memory the process left behind (same state directory) reads the same.
        rt = await rig.start(nursery)
        conversation = await rt.memory.of("a").conversation(f"discord:{channel}")
        assert [t.content for t in conversation.turns] == ["tell me a long story", f"{said}…"]
        nursery.cancel_scope.cancel()


async def test_a_busy_channel_queues_in_order_up_to_a_bound(tmp_path: Path) -> None:
    from voxbridge.plugins.discord.bot import QUEUE_LIMIT

    rig = Rig(tmp_path)
    rig.llm.plan = Plan([{"delay": 2, "reply": "first"}, {"reply": "next"}])
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a")
        rt = await rig.start(nursery)
        await ready(rig, "a")
        # One message being answered (the brain takes 2 s)...
        await rig.discord.send_message("tok-a", content="m0", author_id=ANN, author_name="ann")
        await rig.llm.wait_requests(1)
        # ...then QUEUE_LIMIT that wait their turn, and two too many.
        for n in range(1, QUEUE_LIMIT + 3):
            await rig.discord.send_message(
                "tok-a", content=f"m{n}", author_id=ANN, author_name="ann"
            )
        await rig.llm.wait_requests(QUEUE_LIMIT + 1, limit_s=20)
        asked = [r["messages"][-1]["content"] for r in rig.llm.requests]
        assert asked == [f"m{n}" for n in range(QUEUE_LIMIT + 1)]  # in order, none lost but...
        assert rt.table.counters(("a", "discord"))["messages_dropped"] == 2  # ...the overflow
        nursery.cancel_scope.cancel()


async def test_a_long_agent_list_is_sent_in_pieces(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", extra="default: true\n")
        for i in range(60):
            write(
                tmp_path,
                f"x{i:02d}.yaml",
                f"name: Agent number {i:02d}\ndescription: {'a fairly long description ' * 3}\n",
            )
        await rig.start(nursery)
        await ready(rig, "a")
        await rig.discord.wait_until(lambda: bool(rig.discord._bot("tok-a").commands))
        await rig.discord.send_interaction(
            "tok-a", guild_id=GUILD, channel_id=GENERAL, user_id=ANN, subcommand="list"
        )

        def parts() -> list[str]:
            answers = [
                r.json["data"]["content"]
                for r in rig.discord.requests
                if r.path.endswith("/callback")
            ]
            followups = [
                r.json["content"]
                for r in rig.discord.requests
                if r.method == "POST" and r.path.startswith("/webhooks/")
            ]
            return answers + followups

        await rig.discord.wait_until(lambda: "\n".join(parts()).count("**Agent number") == 60)
        assert len(parts()) >= 2
        assert all(len(p) <= 2000 for p in parts())
        assert "⭐🔌 **A**" in "\n".join(parts())
        nursery.cancel_scope.cancel()


async def test_a_changed_token_is_make_before_break_and_a_bad_one_keeps_the_old_bot(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.discord.add_bot("tok-a2", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        path = rig.agent("a", "tok-a")
        rt = await rig.start(nursery, listen="127.0.0.1:0")
        await ready(rig, "a")
        seen: list[tuple[bool, bool]] = []

        def both() -> tuple[bool, bool]:
            return rig.discord.connected("tok-a"), rig.discord.connected("tok-a2")

        def swapped() -> bool:
            if not seen or seen[-1] != both():
                seen.append(both())
            return both() == (False, True)

        # The new token: the new bot is online before the old one leaves; the actor never
        # stops being "running".
        with rt.table.subscribe() as events:
            rig.agent("a", "tok-a2")
            await rt.reconciler.apply_paths([path])
            await rig.discord.wait_until(swapped, limit_s=15)
            await wait_until(rt, lambda: rt.table.get(("a", "discord")).swap is None)  # type: ignore[union-attr]
            states = []
            while events._queue:
                event = await events.receive()
                if event.type == "actor":
                    states.append(event.data["state"])
        assert seen == [(True, False), (True, True), (False, True)]
        assert set(states) == {ActorState.RUNNING}

        # A token Discord refuses: the running bot keeps serving, the agent says why.
        good = blob_id(path.read_bytes())
        rig.agent("a", "tok-revoked")
        bad = blob_id(path.read_bytes())
        await rt.reconciler.apply_paths([path])

        def kept() -> bool:
            s = rt.table.get(("a", "discord"))
            return s is not None and s.swap is not None and s.swap.state == ActorState.FAILED

        await wait_until(rt, kept)
        async with httpx.AsyncClient(base_url=str(rt.status_url)) as http:
            view = (await http.get("/api/agents/a")).json()["plugins"]["discord"]
            assert (view["state"], view["kept_previous_version"]) == ("running", True)
            assert "rejected the bot token (401)" in view["swap"]["error"]
            assert view["swap"]["version"] == bad
            metrics = (await http.get("/metrics")).text
            assert 'voxbridge_actor_kept_previous_version{agent="a",plugin="discord"} 1.0' in (
                metrics
            )
            assert 'voxbridge_actor_up{agent="a",plugin="discord"} 1.0' in metrics
            # Issue 21.7: the live version is the one that runs, the rejected one beside it
            # (the rejected blob was reported as live, and the serving one appeared nowhere).
            version = (await http.get("/api/agents/a")).json()["version"]
            assert version["blob"] == good
            assert version["rejected"]["blob"] == bad
            assert version["rejected"]["errors"][0].startswith(
                "plugins.discord: PermanentFailure: Discord rejected the bot token (401)"
            )
            assert f'voxbridge_agent_version_info{{agent="a",blob="{good}"' in metrics
            assert f'voxbridge_agent_rejected_version_info{{agent="a",blob="{bad}"}}' in metrics
        assert rig.discord.connected("tok-a2")
        await rig.discord.send_message(
            "tok-a2", content="still there?", author_id=ANN, author_name="ann"
        )
        await rig.llm.wait_requests(1)  # the old bot answers

        async def wait_for(blob: str) -> subprocess.CompletedProcess[bytes]:
            command = ["status", "--url", str(rt.status_url), "--wait-for", blob[:10]]
            return await trio.run_process(
                [sys.executable, "-m", "voxbridge", *command, "--timeout", "5s"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=clean_env(),
            )

        with trio.fail_after(4):  # at once, not after the timeout
            waited = await wait_for(bad)
        assert waited.returncode == 1
        assert (
            f"a: version {bad[:12]} was rejected: plugins.discord: PermanentFailure: Discord "
            "rejected the bot token (401)" in waited.stderr.decode()
        )
        waited = await wait_for(good)  # what serves is live
        assert (waited.returncode, waited.stdout.decode()) == (
            0,
            f"✓ blob {good[:10]} is live: a\n",
        )

        # Fixing the file completes the swap.
        rig.discord.add_bot("tok-a3", user_id=101, name="BotA")
        rig.agent("a", "tok-a3")
        await rt.reconciler.apply_paths([path])
        await rig.discord.wait_until(
            lambda: rig.discord.connected("tok-a3") and not rig.discord.connected("tok-a2"),
            limit_s=15,
        )
        await wait_until(rt, lambda: rt.table.get(("a", "discord")).swap is None)  # type: ignore[union-attr]
        live = rt.table.version("a")
        assert live is not None and live.blob == blob_id(path.read_bytes())
        assert (live.rejected, live.previous) == (None, None)
        nursery.cancel_scope.cancel()


def test_only_a_new_token_overlaps_the_old_bot() -> None:
    """A new token is another bot user: it comes online before the old one leaves. Any other
    change restarts the bot in place: two sessions of one bot would fight over its voice."""
    from voxbridge import Secret
    from voxbridge.config.model import PluginConfig
    from voxbridge.plugins.discord import PLUGIN

    def section(token: str, channels: list[str]) -> PluginConfig:
        return PluginConfig("discord", True, {"bot_token": Secret(token), "channels": channels})

    old = section("one", [])
    assert PLUGIN.overlaps(old, section("two", []))
    assert not PLUGIN.overlaps(old, section("one", ["880000000000000002"]))
