"""The baseline for streamed Discord replies: a plain single-file asyncio bot in the style of
llmcord (the popular discord.py LLM bot), on disnake: it streams the LLM's answer and posts its
reply at the first chunk, then edits it at most once a second.

    VB_TOKEN=… VB_API=http://127.0.0.1:PORT/api/v10 VB_LLM=http://127.0.0.1:PORT/v1 \\
        python bench/plain_bot.py

Only the bench runs it (bench/streaming.py), against the same fake servers as voxbridge.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import disnake
import httpx

EDIT_DELAY_SECONDS = 1.0


async def main() -> None:
    disnake.http.Route.BASE = os.environ["VB_API"]
    llm = os.environ["VB_LLM"]
    intents = disnake.Intents(guilds=True, guild_messages=True, dm_messages=True)
    intents.message_content = True
    bot = disnake.Client(intents=intents)
    http = httpx.AsyncClient(timeout=60)

    @bot.event
    async def on_message(message: disnake.Message) -> None:
        if message.author.bot or bot.user is None:
            return
        if message.guild is not None and bot.user not in message.mentions:
            return
        body = {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": message.content}],
        }
        reply: disnake.Message | None = None
        text, last_edit = "", 0.0
        async with http.stream("POST", f"{llm}/chat/completions", json=body) as response:
            if "event-stream" not in response.headers.get("content-type", ""):
                data = json.loads(await response.aread())  # answered whole
                await message.reply(data["choices"][0]["message"]["content"], mention_author=False)
                return
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                choices = json.loads(line[5:]).get("choices") or [{}]
                text += (choices[0].get("delta") or {}).get("content") or ""
                if not text.strip():
                    continue
                if reply is None:
                    reply = await message.reply(text + " ⚪", mention_author=False)
                    last_edit = time.monotonic()
                elif time.monotonic() - last_edit >= EDIT_DELAY_SECONDS:
                    await reply.edit(content=text + " ⚪")
                    last_edit = time.monotonic()
        if reply is not None:
            await reply.edit(content=text)

    await bot.start(os.environ["VB_TOKEN"])


if __name__ == "__main__":
    asyncio.run(main())
