"""Benchmark: a busy channel (issue 19) — a second person's question, sent while another
person's answer streams, until their first reply text is posted.

In each trial, in a channel of its own, Ann asks (the LLM streams her answer slowly); as soon as
the LLM sends her answer's first chunk, Bob asks, and the fake Discord records when his reply
is posted; the next trial starts once Ann's answer is complete (one other answer streams at a
time, not a pile of them). ``busy_channel_second_post_overhead_*`` is that time less the LLM's
own time to Bob's first chunk: what voxbridge adds, waiting for Ann included. The baseline is
voxbridge as it was before this issue (BASELINE_REV: one answer at a time per channel, so Bob
waits for Ann's whole answer), on the same fakes in the same run, as a second bot.

``voxbridge run`` runs as subprocesses; the fakes and the clock live in this process.

    python bench/busy_channel.py [--trials 100] [--answer 1] [--baseline-trials 5]
                                 [--baseline-answer 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, pct, voxbridge
from streaming import checkout

from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.fake_discord import FakeDiscord
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair

BASELINE_REV = "40d8b1c"
"""main before issue 19: a channel's messages answered one at a time."""
GUILD = 880000000000000001
ANN, BOB = 7001, 7002
MS = 1000.0
CHUNKS = 20  # in Ann's answer


def _agent(root: Path, llm: FakeLLM, token: str) -> None:
    public = generate_key_pair(root / "keys", "bench")
    (root / "agents.d").mkdir(parents=True)
    sealed = seal(token, public.key, "plugins.discord.bot_token")
    (root / "agents.d" / "agent.yaml").write_text(
        f"llm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
        f"plugins:\n  discord:\n    bot_token: {sealed}\n"
    )


async def _trial(
    discord: FakeDiscord, llm: FakeLLM, token: str, bot_id: int, channel: int
) -> float:
    """One trial in ``channel``; Bob's first post less the LLM's time to his first chunk (s)."""
    asked, chunks_before = len(llm.requests), llm.chunks_sent

    async def ask(author: int, name: str, text: str) -> dict[str, Any]:
        return await discord.send_message(
            token,
            content=f"<@{bot_id}> {text}",
            author_id=author,
            author_name=name,
            guild_id=GUILD,
            channel_id=channel,
            mentions=[bot_id],
        )

    await ask(ANN, "ann", "tell me a long story")
    await discord.wait_until(lambda: len(llm.first_chunk_at) > asked, limit_s=30)
    sent = time.perf_counter()
    bob = await ask(BOB, "bob", "quick question")

    def answered() -> bool:
        return any(_replies_to(r.json, bob["id"]) for r in discord.requests if r.method == "POST")

    await discord.wait_until(answered, limit_s=60)
    post = next(
        r for r in discord.requests if r.method == "POST" and _replies_to(r.json, bob["id"])
    )
    mine = asked + 1  # Bob's request is the one after Ann's
    llm_own = llm.first_chunk_at[mine] - llm.times[mine]
    await llm.wait_chunks(chunks_before + CHUNKS + 2, limit_s=60)  # Ann's answer, and Bob's
    return (post.at - sent) - llm_own


def _replies_to(body: Any, message_id: str) -> bool:
    reference = (body or {}).get("message_reference") or {}
    return str(reference.get("message_id")) == message_id


async def measure(
    trials: int, answer: float, baseline_trials: int, baseline_answer: float, before: Path | None
) -> dict[str, float]:
    """Trials of voxbridge (and of BASELINE_REV, when checked out), each bot its own process,
    both online on one fake Discord, asked in turn; Ann's answers take ``answer`` seconds
    (``baseline_answer`` for the baseline, whose figure is about that long)."""
    discord = FakeDiscord()
    runs = {"voxbridge": (trials, answer)}
    if before:
        runs["baseline"] = (baseline_trials, baseline_answer)
    quick = {"chunks": ["Sure: ", "42."], "chunk_delay": 0.001}
    steps = []
    for count, seconds in runs.values():
        slow = {"chunks": [f"w{n} " for n in range(CHUNKS)], "chunk_delay": seconds / CHUNKS}
        steps += [slow, quick] * count
    llm = FakeLLM(Plan(steps))
    ids = list(range(GUILD + 1000, GUILD + 1000 + trials + baseline_trials))
    discord.add_guild(GUILD, "Bench", ids)
    channels = iter(ids)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as bots:
            await nursery.start(discord.serve)
            await start_fake(nursery, llm)
            args = ("--listen", "none", "--discord-api-base", discord.base_url)
            for n, token in enumerate(runs):
                root = Path(tmp) / token
                discord.add_bot(token, user_id=100 + n, name=token)
                _agent(root, llm, token)
                source = before if token == "baseline" and before else ROOT
                await bots.enter_async_context(voxbridge(root, *args, source=source))
            await discord.wait_until(lambda: all(discord.connected(t) for t in runs), limit_s=60)
            await trio.sleep(2.5)  # past guild_ready_timeout: READY for real
            for n, (token, (count, seconds)) in enumerate(runs.items()):
                overhead = [
                    await _trial(discord, llm, token, 100 + n, next(channels)) for _ in range(count)
                ]
                key = "busy_channel_second_post_overhead" + ("_baseline" if n else "")
                results[f"{key}_p50_ms"] = MS * statistics.median(overhead)
                results[f"{key}_p95_ms"] = MS * pct(overhead, 95)
                results[f"busy_channel{'_baseline' if n else ''}_answer_s"] = seconds
            nursery.cancel_scope.cancel()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--answer", type=float, default=1.0, help="seconds of Ann's answer")
    ap.add_argument("--baseline-trials", type=int, default=5)
    ap.add_argument("--baseline-answer", type=float, default=3.0)
    args = ap.parse_args()
    how = (args.trials, args.answer, args.baseline_trials, args.baseline_answer)
    with checkout(BASELINE_REV) as before:
        r = trio.run(measure, *how, before)
    print(json.dumps({k: round(v, 3) for k, v in r.items()}))


if __name__ == "__main__":
    main()
