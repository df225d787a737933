"""What a stopping bot leaves for the next bot of its agent (the end-to-end restarts are in
test_discord_plugin)."""

from __future__ import annotations

from dataclasses import dataclass

from voxbridge.plugins.discord.handover import MAX_AGE, Handover, fresh


@dataclass(frozen=True)
class Msg:
    text: str
    heard_at: float = 0.0


def test_what_is_left_waits_for_the_next_bot_in_order() -> None:
    handover: Handover[Msg] = Handover()
    handover.leave([Msg("a"), Msg("b")], print)
    handover.leave([Msg("c")], print)
    taken: list[Msg] = []
    handover.attach(taken.extend)
    assert [m.text for m in taken] == ["a", "b", "c"]
    other: list[Msg] = []
    handover.attach(other.extend)  # taken once only
    assert other == []


def test_with_make_before_break_the_running_bot_takes_it_at_once() -> None:
    handover: Handover[Msg] = Handover()
    old: list[Msg] = []
    new: list[Msg] = []
    handover.attach(old.extend)
    handover.attach(new.extend)  # the bot with the new token is up first...
    handover.detach(old.extend)  # ...so the old one's leaving does not unhook it
    handover.leave([Msg("a")], print)
    assert (old, [m.text for m in new]) == ([], ["a"])
    handover.detach(new.extend)
    handover.leave([Msg("b")], print)  # no bot running: kept
    later: list[Msg] = []
    handover.attach(later.extend)
    assert [m.text for m in later] == ["b"]


def test_messages_heard_too_long_ago_are_not_answered() -> None:
    items = [Msg("old", 0.0), Msg("edge", 10.0), Msg("new", 50.0)]
    young, old = fresh(items, 10.0 + MAX_AGE)
    assert ([m.text for m in young], old) == (["edge", "new"], 1)
    assert 60 <= MAX_AGE <= 600  # a restart takes seconds; a late answer confuses


def test_what_no_bot_takes_is_reported_lost_when_the_agent_goes() -> None:
    handover: Handover[Msg] = Handover()
    lost: list[int] = []
    handover.leave([Msg("a"), Msg("b")], lost.append)
    handover.dropped()
    handover.dropped()  # once
    assert lost == [2]
    taken: list[Msg] = []
    handover.attach(taken.extend)
    handover.dropped()  # nothing left: nothing lost
    assert (taken, lost) == ([], [2])
