"""Discord like the best bots (SPEC §16), end to end: the real runtime and disnake against the
fake Discord (attachments over HTTP, replies, roles, threads, DMs) and the fake LLM."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import trio
from PIL import Image as PILImage

from tests.fake_brains import Plan
from tests.fake_discord import Upload
from tests.test_discord_plugin import ANN, GENERAL, GUILD, OTHER, Rig, ready
from voxbridge.plugins.discord.attachments import MAX_SIDE

BOB, CAROL = 880000000000007002, 880000000000007003  # ids a file may list
ROLE = 880000000000000010
THREAD = 880000000000000020


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), "blue").save(out, "PNG")
    return out.getvalue()


def texts(request: dict[str, Any]) -> list[str]:
    """Each message's text (a content-parts message: its text part)."""
    found = []
    for m in request["messages"]:
        if m["role"] == "system":
            continue
        content = m["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content)
        found.append(content)
    return found


def images(request: dict[str, Any]) -> list[PILImage.Image]:
    """The images a request shows, decoded from their data URLs."""
    found = []
    for m in request["messages"]:
        if isinstance(m["content"], list):
            for part in m["content"]:
                if part["type"] == "image_url":
                    data = part["image_url"]["url"].split(",", 1)[1]
                    found.append(PILImage.open(io.BytesIO(base64.b64decode(data))))
    return found


async def answered(rig: Rig, channel: int, *texts: str, token: str = "tok-a") -> None:
    """Until the bot's messages in ``channel`` read ``texts``, every answer complete (a test
    that ends while an answer streams would leave its HTTP stream to the garbage collector)."""
    try:
        await rig.discord.wait_until(lambda: rig.discord.shown(channel, token) == "\n".join(texts))
    except trio.TooSlowError:
        raise AssertionError(rig.discord.shown(channel, token)) from None


async def say(rig: Rig, text: str, author: int, name: str, **kw: Any) -> dict[str, Any]:
    """A message to bot A in a guild channel (GENERAL unless said)."""
    kw.setdefault("guild_id", GUILD)
    kw.setdefault("channel_id", GENERAL)
    return await rig.discord.send_message(
        "tok-a", content=text, author_id=author, author_name=name, **kw
    )


async def test_images_text_files_and_other_attachments(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.discord.add_bot("tok-b", user_id=102, name="BotB")
    notes = "line one\nline two ü"
    files = [
        Upload("big.png", png(3000, 2000), "image/png", 3000, 2000),
        Upload("notes.txt", notes.encode(), "text/plain; charset=utf-8"),
        Upload("report.pdf", b"%PDF-1.7 " + b"x" * 3000, "application/pdf"),
        Upload("huge.log", b"y" * (100 * 1024 + 1), None),
    ]
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a")
        rig.agent("b", "tok-b", extra="history: 4\n").write_text(
            (tmp_path / "agents.d" / "b.yaml")
            .read_text()
            .replace("timeout: 5s}", "timeout: 5s, vision: false}")
        )
        await rig.start(nursery)
        await ready(rig, "a")
        await ready(rig, "b")
        await rig.discord.send_message(
            "tok-a", content="what is this?", author_id=ANN, author_name="ann", attachments=files
        )
        await rig.llm.wait_requests(1)
        (question,) = rig.llm.requests[0]["messages"]
        text = question["content"][0]["text"]
        assert text == (
            "what is this?\n"
            "[image: big.png]\n"
            f"[file: notes.txt]\n{notes}\n[end of notes.txt]\n"
            "[file: report.pdf, 2.9 KB — not read: only images and text files are read]\n"
            "[file: huge.log, 100.0 KB — not read: text files over 100 KB are not read]"
        )
        (shown,) = images(rig.llm.requests[0])
        assert shown.size == (MAX_SIDE, MAX_SIDE * 2 // 3)  # downscaled
        # The next question's history holds the image by reference: its name, no pixels.
        await rig.discord.send_message(
            "tok-a", content="and now?", author_id=ANN, author_name="ann"
        )
        await rig.llm.wait_requests(2)
        history = rig.llm.requests[1]["messages"]
        assert history[0] == {"role": "user", "content": text}
        assert [m["content"] for m in history[1:]] == ["hello from the llm", "and now?"]
        # Each file was downloaded once, from the CDN.
        downloads = [r.path for r in rig.discord.requests if r.path.startswith("/attachments/")]
        assert sorted(p.rsplit("/", 1)[1] for p in downloads) == ["big.png", "notes.txt"]

        # vision: false — the image is named, not downloaded, not shown.
        looked = await rig.discord.send_message(
            "tok-b", content="look", author_id=ANN, author_name="ann", attachments=files[:1]
        )
        await rig.llm.wait_requests(3)
        assert rig.llm.requests[2]["messages"][-1] == {
            "role": "user",
            "content": "look\n[image: big.png — not looked at: this agent does not see images]",
        }
        assert len([r for r in rig.discord.requests if r.path.startswith("/attachments/")]) == 2
        await answered(rig, int(looked["channel_id"]), "hello from the llm", token="tok-b")
        nursery.cancel_scope.cancel()


async def test_a_reply_brings_its_chain_and_continues_the_exchange(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.llm.plan = Plan(
        [
            {"reply": "Paris."},
            {"reply": "ok"},
            {"reply": "ok"},
            {"reply": "About 2 million."},
            {"reply": "Fewer."},
        ]
    )
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", channels=f'["{GENERAL}"]', extra="default: true\nhistory: 5\n")
        rt = await rig.start(nursery)
        await ready(rig, "a")

        def bot_said(text: str) -> dict[str, Any]:
            found = [m for m in rig.discord.messages_in(GENERAL, "tok-a") if m["content"] == text]
            return found[0] if found else {}

        first = await say(rig, "capital of France?", ANN, "Ann")
        await rig.discord.wait_until(lambda: bool(bot_said("Paris.")))
        # The channel moves on: Bob talks about other things, and is answered.
        for n in (1, 2):
            await say(rig, f"unrelated {n}", BOB, "Bob")
            await rig.llm.wait_requests(1 + n)
        second = await say(
            rig, "how many people live there?", ANN, "Ann", reply_to=bot_said("Paris.")
        )
        await rig.llm.wait_requests(4)
        # The chain, not the channel's latest turns: the exchange goes on.
        assert texts(rig.llm.requests[3]) == [
            "capital of France?",
            "Paris.",
            "how many people live there?",
        ]
        # Every answer complete (Bob's too) before the restart: none is cut off by it.
        await answered(rig, GENERAL, "Paris.", "ok", "ok", "About 2 million.")
        # A restart of the bot (an edit of its section) empties disnake's message cache.
        await rig.restart_bot("a", f'["{GENERAL}"]', f'["{GENERAL}", "{OTHER}"]')
        fetched = len(rig.discord.requests)
        await say(rig, "and in 1900?", ANN, "Ann", reply_to=bot_said("About 2 million."))
        await rig.llm.wait_requests(5)
        assert texts(rig.llm.requests[4]) == [
            "capital of France?",
            "Paris.",
            "how many people live there?",
            "About 2 million.",
            "and in 1900?",
        ]
        # Discord sent the answer replied to; the rest was fetched, the question before it
        # bringing the answer it replied to (Discord sends one level of a chain at a time).
        gets = [r.path for r in rig.discord.requests[fetched:] if r.method == "GET"]
        assert gets == [f"/channels/{GENERAL}/messages/{m['id']}" for m in (second, first)]
        # Memory kept each exchange once, in the channel's conversation. (Ann's next message is
        # asked once her last answer is recorded: one person's messages go in order.)
        await say(rig, "thanks", ANN, "Ann")
        await rig.llm.wait_requests(6)
        await answered(rig, GENERAL, "Paris.", "ok", "ok", "About 2 million.", "Fewer.", "Fewer.")
        with trio.fail_after(5):
            await rt.memory.settle()
        conversation = await rt.memory.of("a").conversation(f"discord:{GENERAL}")
        said = [t.content for t in conversation.turns]
        assert said.count("capital of France?") == 1 and said.count("Paris.") == 1
        assert said[-4:] == ["and in 1900?", "Fewer.", "thanks", "Fewer."]
        assert len(said) == 12
        nursery.cancel_scope.cancel()


async def test_a_reply_to_a_deleted_message_falls_back_to_the_channel(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        _, channel = await rig.dm_bot_a(nursery, "first")
        await rig.discord.wait_until(lambda: rig.discord.shown(channel, "tok-a") != "")
        (answer,) = rig.discord.messages_in(channel, "tok-a")
        rig.discord.delete(answer)
        await rig.discord.send_message(
            "tok-a", content="second", author_id=ANN, author_name="ann", reply_to=answer
        )
        await rig.llm.wait_requests(2)
        assert texts(rig.llm.requests[1]) == ["first", "hello from the llm", "second"]
        fetch = [r for r in rig.discord.requests if r.method == "GET" and "/messages/" in r.path]
        assert [r.status for r in fetch] == [404]  # tried, then the chain ended there
        await answered(rig, channel, "hello from the llm")
        nursery.cancel_scope.cancel()


async def test_a_reply_to_someone_elses_image_shows_it_and_names_them(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", extra="default: true\n")
        await rig.start(nursery)
        await ready(rig, "a")
        # Ann posts a picture where the bot does not answer (not a watched channel)...
        cat = Upload("cat.png", png(40, 30), "image/png")
        posted = await say(rig, "my cat", ANN, "Ann", channel_id=OTHER, attachments=[cat])
        # ...Bob replies to it, asking the bot.
        await say(
            rig,
            "<@101> what colour?",
            BOB,
            "Bob",
            channel_id=OTHER,
            reply_to=posted,
            mentions=[101],
        )
        await rig.llm.wait_requests(1)
        request = rig.llm.requests[0]
        assert texts(request) == ["Ann: my cat\n[image: cat.png]", "what colour?"]
        (shown,) = images(request)
        assert shown.size == (40, 30)
        await answered(rig, OTHER, "hello from the llm")
        nursery.cancel_scope.cancel()


async def test_a_thread_is_its_own_conversation(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", channels=f'["{GENERAL}"]', extra="default: true\n")
        await rig.start(nursery)
        await ready(rig, "a")
        await say(rig, "in the channel", ANN, "Ann")
        await rig.llm.wait_requests(1)
        rig.discord.add_thread(GUILD, GENERAL, THREAD, "a thread")
        # The thread of a watched channel is watched too; its conversation starts afresh.
        await say(rig, "in the thread", ANN, "Ann", channel_id=THREAD)
        await rig.llm.wait_requests(2)
        assert texts(rig.llm.requests[1]) == ["in the thread"]
        await rig.discord.wait_until(lambda: rig.discord.shown(THREAD, "tok-a") != "")
        await say(rig, "again in the thread", ANN, "Ann", channel_id=THREAD)
        await rig.llm.wait_requests(3)
        assert texts(rig.llm.requests[2]) == [
            "in the thread",
            "hello from the llm",
            "again in the thread",
        ]
        await answered(rig, THREAD, "hello from the llm", "hello from the llm")
        nursery.cancel_scope.cancel()


async def test_a_busy_channel_answers_people_side_by_side(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    slow = {"chunks": [f"a{n} " for n in range(8)], "chunk_delay": 0.25}  # 1.75 s
    rig.llm.plan = Plan([slow, {"reply": "b0"}, {"reply": "a1"}, {"reply": "b1"}])
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", channels=f'["{GENERAL}"]', extra="default: true\n")
        await rig.start(nursery)
        await ready(rig, "a")
        await say(rig, "ann 0", ANN, "Ann")
        await rig.llm.wait_requests(1)
        await say(rig, "ann 1", ANN, "Ann")  # waits for Ann's first answer
        await say(rig, "bob 0", BOB, "Bob")  # answered at once, beside it
        await rig.llm.wait_requests(2)
        assert texts(rig.llm.requests[1])[-1] == "bob 0"
        await rig.discord.wait_until(lambda: "b0" in rig.discord.shown(GENERAL, "tok-a"))
        assert rig.llm.chunks_sent < 8 + 1  # Ann's answer is still streaming
        await rig.llm.wait_requests(3)
        # Ann's second message went to the LLM once her first answer was complete, and the
        # history reads as whole exchanges in the order they were asked.
        assert texts(rig.llm.requests[2]) == [
            "ann 0",
            "a0 a1 a2 a3 a4 a5 a6 a7",
            "bob 0",
            "b0",
            "ann 1",
        ]
        assert rig.llm.times[2] > rig.llm.first_chunk_at[0] + 1.5
        await answered(rig, GENERAL, "a0 a1 a2 a3 a4 a5 a6 a7", "b0", "a1")
        nursery.cancel_scope.cancel()


async def test_who_may_talk(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    rig.discord.add_role(GUILD, ROLE, "members")
    rig.discord.add_thread(GUILD, GENERAL, THREAD, "a thread")
    access = (
        f"    allow: {{roles: ['{ROLE}'], channels: ['{GENERAL}']}}\n"
        f"    block: {{users: ['{BOB}']}}\n"
        "    dms: false\n"
    )
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        rig.agent("a", "tok-a", channels=f'["{GENERAL}", "{OTHER}"]', extra="default: true\n")
        path = tmp_path / "agents.d" / "a.yaml"
        path.write_text(path.read_text() + access)
        rt = await rig.start(nursery)
        await ready(rig, "a")
        await say(rig, "no role", CAROL, "Carol")
        await say(rig, "blocked", BOB, "Bob", roles=[ROLE])
        await say(rig, "not this channel", ANN, "Ann", roles=[ROLE], channel_id=OTHER)
        await rig.discord.send_message("tok-a", content="a DM", author_id=ANN, author_name="Ann")
        await say(rig, "in the thread", ANN, "Ann", roles=[ROLE], channel_id=THREAD)
        await say(rig, "allowed", ANN, "Ann", roles=[ROLE])
        await rig.llm.wait_requests(2)
        for channel in (GENERAL, THREAD):
            await answered(rig, channel, "hello from the llm")
        assert sorted(texts(r)[-1] for r in rig.llm.requests) == ["allowed", "in the thread"]
        assert rt.table.counters(("a", "discord"))["messages_refused"] == 4
        assert len(rig.replies(GENERAL)) == 1 and len(rig.replies(OTHER)) == 0
        nursery.cancel_scope.cancel()


async def test_limits_per_user_survive_a_restart_of_the_bot(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.discord.add_bot("tok-a", user_id=101, name="BotA")
    async with trio.open_nursery() as nursery:
        await rig.servers(nursery)
        limits = "    limits: {per_user: 2/min}\n"
        path = rig.agent("a", "tok-a")
        path.write_text(path.read_text() + limits)
        rt = await rig.start(nursery, listen="127.0.0.1:0")
        await ready(rig, "a")

        async def dm(text: str, author: int = ANN) -> int:
            message = await rig.discord.send_message(
                "tok-a", content=text, author_id=author, author_name="someone"
            )
            return int(message["channel_id"])

        channel = await dm("one")
        await rig.llm.wait_requests(1)
        await dm("two")
        await rig.llm.wait_requests(2)
        await rig.discord.wait_until(lambda: len(rig.replies(channel)) == 2)
        await dm("three")
        await rig.discord.wait_until(lambda: len(rig.replies(channel)) == 3)
        told = rig.replies(channel)[2].json["content"]
        assert told.startswith(
            "⏳ You've reached my limit of 2 messages a minute. Please come back in"
        )
        await dm("four")  # told once already: no second reply
        bob = await dm("hi", BOB)  # Bob has his own allowance
        await rig.llm.wait_requests(3)
        # (Bob's answer complete before the restart: else it would be cut off, and say so.)
        await answered(rig, bob, "hello from the llm")
        assert len(rig.replies(channel)) == 3

        # An edit of the discord section restarts the bot: Ann's allowance is still spent.
        key = ("a", "discord")
        await rig.restart_bot("a", "channels: []", f"channels: ['{OTHER}']")
        await dm("five")  # refused (and not told again: she was told when to come back)
        await dm("hi again", BOB)  # after Ann's, in the gateway's order: she was seen first
        await rig.discord.wait_until(lambda: len(rig.replies(bob)) == 2)
        assert [texts(r)[-1] for r in rig.llm.requests] == ["one", "two", "hi", "hi again"]
        assert len(rig.replies(channel)) == 3
        assert rt.table.counters(key)["messages_limited"] == 3
        async with httpx.AsyncClient(base_url=str(rt.status_url)) as http:
            metrics = (await http.get("/metrics")).text
        assert (
            'voxbridge_actor_counter_total{agent="a",counter="messages_limited",plugin="discord"} 3.0'
            in metrics
        )
        await answered(rig, bob, "hello from the llm", "hello from the llm")
        nursery.cancel_scope.cancel()
