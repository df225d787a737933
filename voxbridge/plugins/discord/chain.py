"""Reply chains: a message that replies to another brings the chain it answers into the context.

A reply points at the message it answers, which may itself be a reply, and so on up. The
chain is walked from what disnake already holds — the replied-to message Discord sends with
every reply, the client's message cache — and fetched from Discord where it holds nothing, up
to the agent's ``history`` messages. Whoever wrote them: the bot's own become ``assistant``
turns (a long answer's pages joined again), other people's ``user`` turns with their name.

The chain *is* the context of such a reply, in place of the channel's latest turns: a reply
to the bot continues that exchange however much was said in the channel since, and nothing of
it is stored again — the chain is read from Discord, and memory keeps just the new exchange,
in the channel's conversation, like any other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import disnake

from ...brain import Image, Turn
from .attachments import MAX_IMAGES, Attachment, read_attachments
from .reply import BROKE_OFF, CURSOR

__all__ = ["Said", "attachments_of", "clean", "said_by", "turns_of", "walk"]

_MENTION = re.compile(r"<@!?(\d+)>")


@dataclass(frozen=True, slots=True)
class Said:
    """One message of a chain, as the Trio side needs it (read on the asyncio loop)."""

    author_id: int
    author_name: str
    mine: bool
    text: str
    attachments: tuple[Attachment, ...] = ()


def clean(content: str, me: int) -> str:
    """A message's text without the mentions of the bot, without the reply's cursor and its
    broke-off line."""
    text = _MENTION.sub(lambda m: "" if int(m.group(1)) == me else m.group(0), content)
    return text.replace(BROKE_OFF, "").removesuffix(CURSOR).strip()


def attachments_of(message: disnake.Message) -> tuple[Attachment, ...]:
    """(On the asyncio loop.) A message's attachments, readable from the Trio side."""
    return tuple(
        Attachment(a.filename, a.size, a.content_type, a.read) for a in message.attachments
    )


def said_by(message: disnake.Message, me: int) -> Said:
    """(On the asyncio loop.)"""
    author = message.author
    return Said(
        author.id,
        author.display_name,
        author.id == me,
        clean(message.content, me),
        attachments_of(message),
    )


async def walk(client: disnake.Client, message: disnake.Message, limit: int) -> list[Said]:
    """(On the asyncio loop.) The messages ``message`` replies to, oldest first, at most
    ``limit``: from what Discord sent and the cache, fetched where neither has it. A message
    that cannot be fetched (deleted, no access) ends the chain there."""
    me = client.user.id if client.user else 0
    chain: list[Said] = []
    current = message
    while len(chain) < limit:
        ref = current.reference
        if ref is None or ref.message_id is None:
            break
        if ref.type != disnake.MessageReferenceType.default:  # a forward is not a reply
            break
        parent = ref.resolved if isinstance(ref.resolved, disnake.Message) else None
        parent = parent or ref.cached_message or client.get_message(ref.message_id)
        if parent is None:
            channel = client.get_channel(ref.channel_id) or current.channel
            if not isinstance(channel, disnake.abc.Messageable):
                break
            try:
                parent = await channel.fetch_message(ref.message_id)
            except disnake.HTTPException:
                break
        chain.append(said_by(parent, me))
        current = parent
    chain.reverse()
    return chain


async def turns_of(
    chain: Sequence[Said], asker: int, *, vision: bool, images: int = MAX_IMAGES
) -> tuple[list[Turn], int]:
    """The chain as turns (its attachments read, at most ``images`` images, the newest
    messages' first); and how many images they carry."""
    read: list[tuple[str, tuple[Image, ...]]] = [("", ())] * len(chain)
    left = images
    for i in reversed(range(len(chain))):  # the nearest images matter most
        said = chain[i]
        if said.attachments and not said.mine:
            notes, shown = await read_attachments(said.attachments, vision=vision, images=left)
            left -= len(shown)
            read[i] = (notes, shown)
    turns: list[Turn] = []
    for said, (notes, shown) in zip(chain, read, strict=True):
        text = f"{said.text}\n{notes}".strip()
        if said.mine:
            if turns and turns[-1].role == "assistant":  # the next page of one answer
                turns[-1] = replace(turns[-1], content=f"{turns[-1].content}\n{text}")
                continue
            turns.append(Turn("assistant", text))
            continue
        if said.author_id != asker:
            text = f"{said.author_name}: {text}"
        turns.append(Turn("user", text, shown))
    return turns, images - left
