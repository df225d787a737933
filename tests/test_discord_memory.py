"""Memory in Discord: a channel's conversation outlives its bot's restart, a DM is its own, what
is learned about a person in one place is recalled in another, and /memory show|forget put the
person in control — the real runtime and disnake against the fake Discord and LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.fake_brains import NOTES, Plan
from tests.fake_discord import EPHEMERAL_FLAG, RecordedRequest
from tests.runtime_helpers import wait_until
from tests.test_discord_plugin import ANN, GENERAL, GUILD, Rig, ready
from voxbridge.runtime.state import ActorState

BOB = 7002
FACTS = "memory:\n  facts: true\n"


def contents(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] != "system"]


async def in_general(rig: Rig, text: str, author: int, name: str) -> None:
    """A message to bot A in the watched channel."""
    await rig.discord.send_message(
        "tok-a",
        content=text,
        author_id=author,
        author_name=name,
        guild_id=GUILD,
        channel_id=GENERAL,
    )


async def callback(rig: Rig, seen: list[RecordedRequest]) -> RecordedRequest:
    """The next interaction callback after those already ``seen``."""
    found = await rig.discord.wait_for(lambda r: r.path.endswith("/callback") and r not in seen)
    seen.append(found)
    return found


async def test_a_channel_conversation_outlives_its_bot_and_a_dm_is_its_own(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.llm.plan = Plan([{"reply": "Hi Ann."}, {"reply": "Noted."}, {"reply": "Paris."}])
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", channels=f'["{GENERAL}"]', extra="default: true\n")
        rt = await rig.start(nursery)
        await ready(rig, "a")
        await in_general(rig, "hi, I'm Ann", ANN, "Ann")
        await rig.llm.wait_requests(1)
        await rig.discord.wait_until(lambda: rig.discord.shown(GENERAL, "tok-a") == "Hi Ann.")
        # A DM is another conversation.
        await rig.discord.send_message("tok-a", content="psst", author_id=ANN, author_name="Ann")
        await rig.llm.wait_requests(2)
        assert contents(rig.llm.requests[1]) == ["psst"]
        # An edit of the discord section restarts the bot: the channel's conversation goes on.
        key = ("a", "discord")
        before = rt.table.get(key)
        assert before is not None
        rig.agent("a", "tok-a", channels=f'["{GENERAL}", "{GENERAL + 5}"]', extra="default: true\n")

        def restarted() -> bool:
            now = rt.table.get(key)
            return now is not None and now.since > before.since and now.state == ActorState.RUNNING

        await wait_until(rt, restarted)
        await in_general(rig, "what is the capital of France?", ANN, "Ann")
        await rig.llm.wait_requests(3)
        assert contents(rig.llm.requests[2]) == [
            "hi, I'm Ann",
            "Hi Ann.",
            "what is the capital of France?",
        ]
        nursery.cancel_scope.cancel()


async def test_facts_follow_a_person_and_memory_show_and_forget_put_them_in_control(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.llm.notes = ['["Prefers metric units."]', "[]"]
    seen: list[RecordedRequest] = []
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", channels=f'["{GENERAL}"]', extra="default: true\n" + FACTS)
        rt = await rig.start(nursery)
        await ready(rig, "a")
        await rig.discord.wait_until(lambda: bool(rig.discord._bot("tok-a").commands))
        await in_general(rig, "I only use metric units", ANN, "Ann")
        await rig.llm.wait_requests(1)
        await rig.discord.wait_until(lambda: rig.discord.shown(GENERAL, "tok-a") != "")
        await rig.discord.wait_until(lambda: bool(rig.llm.note_requests))
        with trio.fail_after(10):
            await rt.memory.settle()
        (note,) = rig.llm.note_requests
        assert note["messages"][0]["content"].startswith(NOTES)
        assert contents(note) == ["Ann: I only use metric units\nAssistant: hello from the llm"]
        # In a DM, the same person: what was learned in the channel is recalled.
        await rig.discord.send_message(
            "tok-a", content="how far is a mile?", author_id=ANN, author_name="Ann"
        )
        await rig.llm.wait_requests(2)
        assert "- Prefers metric units." in rig.llm.requests[1]["messages"][0]["content"]
        # Bob is another person: nothing of Ann's reaches his answers.
        await rig.discord.send_message("tok-a", content="hello", author_id=BOB, author_name="Bob")
        await rig.llm.wait_requests(3)
        assert rig.llm.requests[2]["messages"][0]["role"] == "user"

        # /memory show: only Ann sees it.
        await rig.discord.send_interaction(
            "tok-a",
            guild_id=GUILD,
            channel_id=GENERAL,
            user_id=ANN,
            name="memory",
            subcommand="show",
        )
        shown = (await callback(rig, seen)).json["data"]
        assert shown["flags"] & EPHEMERAL_FLAG
        assert "- Prefers metric units." in shown["content"]
        assert "2 thing(s) you said" in shown["content"]

        # /memory forget: asks first, with buttons that are Ann's alone.
        asked_id = await rig.discord.send_interaction(
            "tok-a",
            guild_id=GUILD,
            channel_id=GENERAL,
            user_id=ANN,
            name="memory",
            subcommand="forget",
        )
        asked = (await callback(rig, seen)).json["data"]
        assert "1 fact(s), and the 2 thing(s) you said" in asked["content"]
        buttons = asked["components"][0]["components"]
        assert [b["label"] for b in buttons] == ["Forget everything", "Keep"]
        message = rig.discord.original_response(asked_id)
        assert message is not None
        await rig.discord.click(
            "tok-a", message=message, custom_id=buttons[0]["custom_id"], user_id=BOB
        )
        assert (await callback(rig, seen)).json["data"]["content"] == "This button is not yours."
        assert len(await rt.memory.of("a").facts(f"discord:{ANN}")) == 1
        await rig.discord.click(
            "tok-a", message=message, custom_id=buttons[0]["custom_id"], user_id=ANN
        )
        done = (await callback(rig, seen)).json
        assert done["type"] == 7 and done["data"]["components"] == []
        assert done["data"]["content"].startswith("🧹 Done: I forgot 1 fact(s) and 4 turn(s)")
        assert await rt.memory.of("a").facts(f"discord:{ANN}") == []
        assert await rt.memory.of("a").about(f"discord:{ANN}") is None
        assert await rt.memory.of("a").about(f"discord:{BOB}") is not None

        await rig.discord.send_interaction(
            "tok-a",
            guild_id=GUILD,
            channel_id=GENERAL,
            user_id=ANN,
            name="memory",
            subcommand="show",
        )
        assert (await callback(rig, seen)).json["data"]["content"] == (
            "I don't remember anything about you."
        )
        # The channel's conversation no longer holds what Ann said.
        await in_general(rig, "hello again", BOB, "Bob")
        await rig.llm.wait_requests(4)
        assert contents(rig.llm.requests[3]) == ["hello again"]
        nursery.cancel_scope.cancel()
