"""The rhythm of a streamed Discord reply, on Trio's mock clock: when it is posted, how often
it is edited, where it continues, how a failure shows."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from voxbridge.brain import Answer, ToolUse
from voxbridge.errors import BrainError
from voxbridge.plugins.discord.reply import (
    BROKE_OFF,
    CURSOR,
    LAST_EDIT_WAIT,
    STOPPED,
    Reply,
    stream_to,
)


class Recorder:
    """A sink that remembers every write, with the (mock) time it happened."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str, int, str]] = []  # (time, op, message, text)
        self.messages: list[str] = []

    async def post(self, text: str) -> int:
        self.messages.append(text)
        self.writes.append((trio.current_time(), "post", len(self.messages) - 1, text))
        return len(self.messages) - 1

    async def edit(self, handle: int, text: str) -> None:
        self.messages[handle] = text
        self.writes.append((trio.current_time(), "edit", handle, text))


async def feed(
    send: trio.MemorySendChannel[Any],
    steps: Sequence[tuple[float, str | ToolUse | BrainError]],
) -> None:
    """Send each delta after its delay, then close (the brain's side of an Answer). The last
    one and the close come with no checkpoint between, as n8n's whole answer does."""
    async with send:
        for delay, item in steps:
            await trio.sleep(delay)
            send.send_nowait(item)


async def shown(
    steps: Sequence[tuple[float, str | ToolUse | BrainError]], **kw: int
) -> tuple[Recorder, Reply[int]]:
    """What the sink got for an answer of ``steps``, and the reply (settled)."""
    sink = Recorder()
    send, receive = trio.open_memory_channel[str | ToolUse | BrainError](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed, send, steps)
        reply = await stream_to(sink, Answer(receive), **kw)  # type: ignore[arg-type]
        await reply.settle()
    return sink, reply


async def show(steps: Sequence[tuple[float, str | BrainError]], **kw: int) -> Recorder:
    sink, reply = await shown(steps, **kw)
    assert reply.failure is None
    return sink


async def test_posted_at_the_first_delta_then_edited_once_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    # 30 deltas, one every 0.1 s from t = 0.5 s: three seconds of answer.
    sink = await show([(0.5, "w0 ")] + [(0.1, f"w{n} ") for n in range(1, 30)])
    times = [t - start for t, *_ in sink.writes]
    ops = [op for _, op, _, _ in sink.writes]
    assert ops[0] == "post" and times[0] == pytest.approx(0.5)
    assert sink.writes[0][3] == "w0" + CURSOR
    assert set(ops[1:]) == {"edit"}
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1.0 - 1e-9  # never more than once a second...
    assert len(ops) == 4  # ...and no slower: post at 0.5, edits at 1.5, 2.5, 3.5
    assert all(text.endswith(CURSOR) for *_, text in sink.writes[:-1])
    assert sink.messages == [" ".join(f"w{n}" for n in range(30))]


async def test_an_answer_complete_at_once_is_posted_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = await show([(0.2, "all of it at once")])
    assert [(op, text) for _, op, _, text in sink.writes] == [("post", "all of it at once")]


async def test_past_2000_characters_it_goes_on_in_a_new_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    line = "x" * 99 + "\n"
    sink = await show([(0.05, line)] * 50)  # 5,000 characters over 2.5 s
    assert len(sink.messages) == 3
    assert all(len(m) <= 2000 for m in sink.messages)
    assert "".join(m + "\n" for m in sink.messages) == line * 50
    assert not any(m.endswith(CURSOR) for m in sink.messages)
    # Each message keeps the rhythm on its own.
    for index in range(3):
        times = [t for t, _, i, _ in sink.writes if i == index]
        assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times))


async def test_a_failure_midway_keeps_the_text_and_adds_one_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    steps = [(0.1, "The answer "), (0.3, "is"), (0.3, BrainError("stream broke"))]
    sink, reply = await shown(steps)
    assert sink.messages == [f"The answer is\n{BROKE_OFF}"]
    assert str(reply.failure) == "stream broke"


async def test_a_failure_before_any_text_posts_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Recorder()
    send, receive = trio.open_memory_channel[str | BrainError](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed, send, [(0.1, "  \n"), (0.5, BrainError("down"))])
        with pytest.raises(BrainError, match="down"):
            await stream_to(sink, Answer(receive))
    assert sink.writes == []


async def test_tools_at_work_show_as_a_line_until_the_text_replaces_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink, reply = await shown(
        [
            (0.2, ToolUse("time.get_current_time", "start", "c1")),
            (2.0, ToolUse("time.get_current_time", "done", "c1")),
            (0.1, "It is noon."),
        ]
    )
    assert sink.writes[0][1:] == ("post", 0, f"🔧 time.get_current_time…{CURSOR}")
    assert sink.messages == ["It is noon."]  # the line is gone once the text is there
    assert reply.failure is None


async def test_a_failure_after_a_tool_line_says_so_in_that_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink, reply = await shown(
        [(0.2, ToolUse("lab.hang", "start", "c1")), (5.0, BrainError("the LLM at x refused"))]
    )
    assert sink.messages == [BROKE_OFF]
    assert isinstance(reply.failure, BrainError)


async def stopped_at(
    seconds: float, steps: Sequence[tuple[float, str | ToolUse | BrainError]], sink: Recorder
) -> None:
    """Stream an answer of ``steps`` to ``sink`` and stop it all (the bot stopping) after
    ``seconds``; assert that the cancellation went through."""
    send, receive = trio.open_memory_channel[str | ToolUse | BrainError](100)
    with trio.move_on_after(seconds) as stop:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed, send, steps)
            await stream_to(sink, Answer(receive))  # type: ignore[arg-type]
            raise AssertionError("the answer went on after the stop")
    assert stop.cancelled_caught


async def test_a_stop_midway_shows_the_text_so_far_and_says_so_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    sink = Recorder()
    # A delta every 0.1 s from t = 0.5 s; the bot stops at 2.25 s (last edit: 1.5 s).
    await stopped_at(2.25, [(0.5, "w0 ")] + [(0.1, f"w{n} ") for n in range(1, 30)], sink)
    assert sink.messages == [" ".join(f"w{n}" for n in range(18)) + f"\n{STOPPED}"]
    *streamed, (at, op, _, _) = sink.writes
    assert all(text.endswith(CURSOR) for *_, text in streamed)
    assert (op, at - start) == ("edit", pytest.approx(2.25))  # not held back by the rhythm
    assert trio.current_time() - start == pytest.approx(2.25)


async def test_a_stop_past_the_limit_goes_on_in_a_new_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Recorder()
    await stopped_at(0.35, [(0.1, "x" * 1990), (0.1, " y"), (1.0, " z")], sink)
    assert sink.messages == ["x" * 1990 + " y", STOPPED]


async def test_a_stop_before_any_text_posts_nothing_and_after_a_tool_line_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Recorder()
    await stopped_at(1.0, [(2.0, "late")], sink)
    assert sink.writes == []
    await stopped_at(1.0, [(0.2, ToolUse("lab.hang", "start", "c1")), (5.0, "late")], sink)
    assert sink.messages == [STOPPED]


async def test_a_stop_makes_the_edits_held_back_for_a_complete_answer_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = trio.current_time()
    sink = Recorder()
    send, receive = trio.open_memory_channel[str | ToolUse | BrainError](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed, send, [(0.5, "The answer "), (0.1, "is complete.")])
        reply = await stream_to(sink, Answer(receive))  # type: ignore[arg-type]
    assert sink.messages == [f"The answer{CURSOR}"]  # the last edit is held back until 1.5 s
    with trio.move_on_after(0.2) as stop:
        await reply.settle()
    assert stop.cancelled_caught
    assert sink.messages == ["The answer is complete."]  # complete: nothing to say about it
    assert sink.writes[-1][0] - start == pytest.approx(0.8)


class Dead(Recorder):
    """A Discord that stops answering edits (``hang``) or refuses them (``fail``) once
    ``broken`` is set."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.broken = False

    async def edit(self, handle: int, text: str) -> None:
        if self.broken and self.how == "hang":
            await trio.sleep_forever()
        if self.broken:
            raise RuntimeError("Session is closed")
        await super().edit(handle, text)


@pytest.mark.parametrize("how", ["hang", "fail"])
async def test_a_stop_waits_for_a_dead_discord_so_long_only(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    start = trio.current_time()
    sink = Dead(how)

    async def breaks() -> None:
        await trio.sleep(2.0)
        sink.broken = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(breaks)
        await stopped_at(2.25, [(0.5, "w0 ")] + [(0.1, f"w{n} ") for n in range(1, 30)], sink)
    took = trio.current_time() - start
    assert took == pytest.approx(2.25 + (LAST_EDIT_WAIT if how == "hang" else 0))
    assert sink.messages[0].endswith(CURSOR)  # the last edit did not get through...
    assert "a reply kept its cursor as the bot stopped" in caplog.text  # ...and it says so
