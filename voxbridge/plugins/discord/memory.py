"""``/memory show`` and ``/memory forget``: what this agent remembers about you, in your hands.

Both answer only the person who asked (ephemeral messages). Forgetting asks first, with two
buttons; the buttons name the person they belong to, so nobody else's click counts.
"""

from __future__ import annotations

from ...errors import VoxbridgeError
from ...memory.backend import StoreFault
from ..api import Context
from .reply import LIMIT

__all__ = ["FORGET", "KEEP", "MemoryCommands", "button_owner"]

FORGET = "vb-memory-forget"
KEEP = "vb-memory-keep"
UNREACHABLE = "I can't reach my memory right now: please try again in a while."


def button_owner(custom_id: str) -> tuple[str, int] | None:
    """The action (FORGET or KEEP) and the user a memory button belongs to; None for another
    button."""
    action, _, user = custom_id.partition(":")
    if action not in (FORGET, KEEP) or not user.isdigit():
        return None
    return action, int(user)


class MemoryCommands:
    """The texts of the ``/memory`` commands, worked out on the Trio side."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    @staticmethod
    def person(user_id: int) -> str:
        return f"discord:{user_id}"

    async def show(self, user_id: int) -> str:
        ctx = self._ctx
        name = ctx.agent.name
        memory = ctx.memory
        facts = await memory.facts(self.person(user_id))
        about = await memory.about(self.person(user_id))
        turns = about.turns if about else 0
        learns = ctx.agent.memory.facts
        if not facts and not turns:
            note = (
                "" if learns else " (I keep conversations, but I don't learn facts about people.)"
            )
            return f"I don't remember anything about you.{note}"
        lines = [f"**{name}** remembers about you:"] if facts else []
        lines += [f"- {fact.text}" for fact in facts]
        if turns:
            lines.append(f"…and {turns} thing(s) you said in our conversations, with my answers.")
        if not learns:
            lines.append("(I don't learn facts about people: only conversations are kept.)")
        lines.append("`/memory forget` erases all of it.")
        text = "\n".join(lines)
        return text if len(text) <= LIMIT else text[: LIMIT - 2].rstrip() + " …"

    async def ask_forget(self, user_id: int) -> tuple[str, bool]:
        """What forgetting would erase, and whether there is anything to."""
        about = await self._ctx.memory.about(self.person(user_id))
        if about is None or not (about.facts or about.turns):
            return "I don't remember anything about you: there is nothing to forget.", False
        return (
            f"This erases everything **{self._ctx.agent.name}** remembers about you: "
            f"{about.facts} fact(s), and the {about.turns} thing(s) you said in conversations "
            "with my answers to them. It cannot be undone.",
            True,
        )

    async def forget(self, user_id: int) -> str:
        try:
            counts = await self._ctx.memory.forget(self.person(user_id))
        except (StoreFault, VoxbridgeError) as exc:
            self._ctx.log.error("❌ /memory forget failed: %s", exc)
            return UNREACHABLE
        self._ctx.count("memory_forgotten")
        return (
            f"🧹 Done: I forgot {counts.facts} fact(s) and {counts.turns} turn(s) of our "
            "conversations."
        )
