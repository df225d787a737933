"""Benchmark: streamed answers (issue 10) — how soon the first words of an answer show.

* web chat: the fake LLM's first event sent → the first ``delta`` at a WebSocket client of the
  chat socket (``chat_first_delta_overhead_*``);
* Discord: the fake LLM's first event sent → the reply's POST at the Discord-compatible server
  (``discord_first_post_overhead_*``);
* time to first visible text for a 3 s streamed answer (30 events, 0.1 s apart), side by side
  with a plain asyncio bot in llmcord's style (bench/plain_bot.py) and, with ``--before REV``,
  voxbridge as it was at REV (before streaming): all online at once on the same fake servers,
  asked in turn.

``voxbridge run`` (and the baseline bot) run as subprocesses; the fake LLM, the fake Discord and
the clients live in this process, so every timestamp comes from one clock.

    python bench/streaming.py [--messages 200] [--runs 5] [--before 898db05]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, free_port, pct, voxbridge, wait_ready

from tests.fake_brains import FakeLLM, Plan, start_fake
from tests.fake_discord import FakeDiscord
from voxbridge.secrets.crypto import seal
from voxbridge.secrets.keys import generate_key_pair

USER = 7001
MS = 1000.0


async def chat_first_delta(messages: int) -> dict[str, float]:
    """Web chat: first LLM event → first delta at the WebSocket client."""
    llm = FakeLLM(Plan([{"chunks": ["Hello ", "there."], "chunk_delay": 0.005}]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_key_pair(root / "keys", "bench")
        (root / "agents.d").mkdir()
        port = free_port()
        async with trio.open_nursery() as nursery:
            await start_fake(nursery, llm)
            (root / "agents.d" / "helper.yaml").write_text(
                f"llm: {{base_url: '{llm.base_url}/v1', model: m}}\nplugins:\n  web: {{}}\n"
            )
            async with voxbridge(root, "--listen", f"127.0.0.1:{port}"):
                await wait_ready(f"http://127.0.0.1:{port}")
                url = f"ws://127.0.0.1:{port}/api/agents/helper/chat"
                overhead = []
                async with open_websocket_url(url) as ws:
                    for n in range(messages + 20):  # the first 20 warm up
                        await ws.send_message(json.dumps({"type": "message", "text": f"m{n}"}))
                        first = json.loads(await ws.get_message())
                        arrived = time.perf_counter()
                        assert first["type"] == "delta", first
                        while json.loads(await ws.get_message())["type"] != "done":
                            pass
                        if n >= 20:
                            overhead.append(arrived - llm.first_chunk_at[n])
            nursery.cancel_scope.cancel()
    return {
        "chat_first_delta_overhead_p50_ms": MS * statistics.median(overhead),
        "chat_first_delta_overhead_p95_ms": MS * pct(overhead, 95),
    }


def _discord_agent(root: Path, llm: FakeLLM, token: str) -> None:
    """``root``'s agents.d: one agent answering on Discord as the bot ``token``."""
    public = generate_key_pair(root / "keys", "bench")
    (root / "agents.d").mkdir()
    sealed = seal(token, public.key, "plugins.discord.bot_token")
    (root / "agents.d" / "agent.yaml").write_text(
        f"llm: {{base_url: '{llm.base_url}/v1', model: m}}\n"
        f"plugins:\n  discord:\n    bot_token: {sealed}\n"
    )


async def _first_posts(
    discord: FakeDiscord, llm: FakeLLM, tokens: list[str], messages: int, settle: float
) -> dict[str, tuple[list[float], list[float]]]:
    """Send DMs one by one (each from its own user: its own channel), to each bot of ``tokens``
    in turn; per bot, for each message, the reply's first POST after the LLM's first event,
    and after the dispatch."""
    seen: dict[str, tuple[list[float], list[float]]] = {t: ([], []) for t in tokens}
    for n in range(messages):
        for token in tokens:
            after_chunk, after_dispatch = seen[token]
            start = len(discord.requests)
            t0 = time.perf_counter()
            author = USER + len(after_chunk) + 1000 * tokens.index(token)
            await discord.send_message(token, content=f"m{n}", author_id=author, author_name="ann")

            def posted(start: int = start) -> bool:
                return any(
                    r.method == "POST" and r.path.endswith("/messages")
                    for r in discord.requests[start:]
                )

            await discord.wait_until(posted, limit_s=30)
            post = next(
                r
                for r in discord.requests[start:]
                if r.method == "POST" and r.path.endswith("/messages")
            )
            after_chunk.append(post.at - llm.first_chunk_at[-1])
            after_dispatch.append(post.at - t0)
            await trio.sleep(settle)
    return seen


async def discord_replies(
    messages: int, runs: int, settle: float, before: Path | None
) -> dict[str, float]:
    """On one Discord-compatible server, at once: voxbridge, the plain asyncio bot and (with
    ``before``) voxbridge at that revision, each its own bot. First LLM event → voxbridge's
    reply POST over ``messages`` DMs; then the first text of a 3 s streamed answer (30 events,
    0.1 s apart) for each bot in turn, ``runs`` times, ``settle`` seconds apart."""
    discord = FakeDiscord()
    llm = FakeLLM(Plan([{"chunks": ["Hello ", "there."], "chunk_delay": 0.005}]))
    tokens = ["voxbridge", "plain", *(("before",) if before else ())]
    with tempfile.TemporaryDirectory() as tmp:
        roots = {t: Path(tmp) / t for t in tokens}
        async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as bots:
            await nursery.start(discord.serve)
            await start_fake(nursery, llm)
            args = ("--listen", "none", "--discord-api-base", discord.base_url)
            for n, token in enumerate(tokens):
                roots[token].mkdir()
                discord.add_bot(token, user_id=100 + n, name=token)
                if token == "plain":
                    command = [
                        "env",
                        f"VB_TOKEN={token}",
                        f"VB_API={discord.base_url}",
                        f"VB_LLM={llm.base_url}/v1",
                        sys.executable,
                        str(ROOT / "bench" / "plain_bot.py"),
                    ]
                    await bots.enter_async_context(voxbridge(roots[token], command=command))
                else:
                    _discord_agent(roots[token], llm, token)
                    source = before if token == "before" and before else ROOT
                    await bots.enter_async_context(voxbridge(roots[token], *args, source=source))
            await discord.wait_until(lambda: all(discord.connected(t) for t in tokens), limit_s=60)
            await trio.sleep(2.5)  # past guild_ready_timeout: READY for real
            await _first_posts(discord, llm, ["voxbridge"], 20, 0.0)  # warm-up
            posts = await _first_posts(discord, llm, ["voxbridge"], messages, 0.0)
            after_chunk = posts["voxbridge"][0]
            results = {
                "discord_first_post_overhead_p50_ms": MS * statistics.median(after_chunk),
                "discord_first_post_overhead_p95_ms": MS * pct(after_chunk, 95),
            }
            llm.plan = Plan([{"chunks": [f"word{n} " for n in range(30)], "chunk_delay": 0.1}])
            for token, (chunk, dispatch) in (
                await _first_posts(discord, llm, tokens, runs, settle)
            ).items():
                results[f"ttfv_{token}_after_first_chunk_ms"] = MS * statistics.median(chunk)
                results[f"ttfv_{token}_after_message_ms"] = MS * statistics.median(dispatch)
            nursery.cancel_scope.cancel()
    return results


@contextlib.contextmanager
def checkout(rev: str | None) -> Iterator[Path | None]:
    """A temporary work tree of this repository at ``rev`` (None: nothing to check out)."""
    if rev is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        into = Path(tmp) / "before"
        git = ["git", "-C", str(ROOT), "worktree"]
        made = subprocess.run([*git, "add", "--detach", str(into), rev], capture_output=True)
        try:
            yield into if made.returncode == 0 else None
        finally:
            subprocess.run([*git, "remove", "--force", str(into)], capture_output=True)


async def measure(
    messages: int, runs: int, before: Path | None, settle: float = 1.5
) -> dict[str, float]:
    r: dict[str, float] = {}
    r.update(await chat_first_delta(messages))
    r.update(await discord_replies(messages, runs, settle, before))
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--before", metavar="REV", help="also measure voxbridge at this git revision")
    args = ap.parse_args()
    with checkout(args.before) as before:
        r = trio.run(measure, args.messages, args.runs, before)
    print("| measure | p50 (ms) | p95 (ms) | goal |")
    print("| --- | ---: | ---: | --- |")
    for key, goal in (("chat_first_delta", "p95 ≤ 5"), ("discord_first_post", "p95 ≤ 10")):
        print(
            f"| {key.replace('_', ' ')} overhead | {r[key + '_overhead_p50_ms']:.2f} | "
            f"{r[key + '_overhead_p95_ms']:.2f} | {goal} |"
        )
    print(
        "\n| 3 s streamed answer: first text shown | after the first chunk (ms) | "
        "after the message (ms) |"
    )
    print("| --- | ---: | ---: |")
    for which in ("voxbridge", "plain", "before"):
        if f"ttfv_{which}_after_first_chunk_ms" in r:
            print(
                f"| {which} | {r[f'ttfv_{which}_after_first_chunk_ms']:.1f} | "
                f"{r[f'ttfv_{which}_after_message_ms']:.1f} |"
            )
    print(json.dumps({k: round(v, 3) for k, v in r.items()}))


if __name__ == "__main__":
    main()
