"""Loaded by ``voxbridge run`` when bench/message_path.py --stages puts this directory on
PYTHONPATH: marks the moment a message reaches each stage of voxbridge's path (time.perf_counter,
the same monotonic clock as the benchmark's process) and writes them out at exit."""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

_marks: list[tuple[str, float]] = []


def _mark(name: str) -> None:
    _marks.append((name, time.perf_counter()))


def _install() -> None:
    import voxbridge.brain.answer as answer
    import voxbridge.brain.llm as llm
    import voxbridge.plugins.discord.bot as bot

    handed = bot.to_trio

    def to_trio(token: Any, fn: Any) -> None:
        _mark("handler")  # the bot's message handler, on the asyncio loop, hands over
        handed(token, fn)

    bot.to_trio = to_trio
    answering = bot._answer

    async def _answer(*args: Any, **kwargs: Any) -> None:
        _mark("trio")  # the message is being answered on the Trio side
        await answering(*args, **kwargs)

    bot._answer = _answer
    streaming = llm.LLMClient.stream

    async def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        _mark("llm_call")
        result = await streaming(self, *args, **kwargs)
        _mark("llm_done")
        return result

    llm.LLMClient.stream = stream  # type: ignore[method-assign]
    taking = answer.Answer._take

    def _take(self: Any, item: Any) -> Any:
        if not self.text:
            _mark("first_text")
        return taking(self, item)

    answer.Answer._take = _take  # type: ignore[method-assign]
    posting = bot._ReplySink.post

    async def post(self: Any, text: str) -> Any:
        _mark("post")
        return await posting(self, text)

    bot._ReplySink.post = post  # type: ignore[method-assign]


def _dump() -> None:
    with open(os.environ["VOXBRIDGE_STAGES_OUT"], "w") as out:
        json.dump(_marks, out)


if os.environ.get("VOXBRIDGE_STAGES_OUT"):
    _install()
    atexit.register(_dump)
