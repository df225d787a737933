"""The ``discord`` plugin type: a Discord bot answering as the agent."""

from __future__ import annotations

from ...config.model import PluginConfig
from ..api import Plugin
from .limits import RATE_PATTERN

_IDS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        name: {
            "description": f"{what} ids.",
            "type": "array",
            "items": {"$ref": "#/$defs/snowflake"},
            "uniqueItems": True,
        }
        for name, what in (("users", "User"), ("roles", "Role"), ("channels", "Channel"))
    },
}


def _new_token(old: PluginConfig, new: PluginConfig) -> bool:
    """A changed token: the new bot is online before the old one leaves, and a token Discord
    refuses leaves the old one serving. Any other change restarts the bot in place: two sessions
    of one bot would fight over its voice connection."""
    return bool(old.settings.get("bot_token") != new.settings.get("bot_token"))


__all__ = ["PLUGIN"]

PLUGIN = Plugin(
    name="discord",
    summary="A Discord bot that answers as this agent",
    schema={
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "bot_token": {
                "description": "The bot's token (Developer Portal → Bot → Reset Token).",
                "type": "string",
                "x-secret": True,
            },
            "channels": {
                "description": "Channel ids where every message is answered while this agent is "
                "the guild's active one; mentions and DMs are always answered.",
                "type": "array",
                "items": {"$ref": "#/$defs/snowflake"},
                "uniqueItems": True,
            },
            "allow": {
                "description": "Who may talk to the bot, by id: when users or roles are listed, "
                "only those users and members with one of those roles are answered; when "
                "channels are listed, only those channels (and their threads, and the channels "
                "of those categories). DMs are governed by dms. Others get no answer and cost "
                "no LLM call (counted as messages_refused).",
                **_IDS,
                "examples": [{"roles": ["880000000000000010"], "channels": ["880000000000000002"]}],
            },
            "block": {
                "description": "Who may not talk to the bot, by id (users, roles, channels, "
                "as in allow): a block wins over an allow.",
                **_IDS,
                "examples": [{"users": ["880000000000000099"]}],
            },
            "dms": {
                "description": "Whether the bot answers direct messages. Default true.",
                "type": "boolean",
                "default": True,
                "examples": [False],
            },
            "limits": {
                "description": "How much one person may ask: past it, one short reply says when "
                "to come back and the LLM is not called (counted as messages_limited). Kept by "
                "the runtime, so an edit that restarts the bot does not reset it.",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "per_user": {
                        "description": "Messages per person in a period: N/s, N/min, N/h or "
                        "N/day (10/min: ten a minute, and a burst of ten at most).",
                        "type": "string",
                        "pattern": RATE_PATTERN,
                        "x-expected": "a rate: N/s, N/min, N/h or N/day (10/min)",
                        "examples": ["10/min", "100/day"],
                    },
                },
            },
            "voice": {
                "description": "Voice channels: the bot listens to each speaker and answers "
                "aloud (needs the agent's voice section).",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "channels": {
                        "description": "Voice channel ids the bot joins while a person is in "
                        "them (it leaves when only bots remain).",
                        "type": "array",
                        "items": {"$ref": "#/$defs/snowflake"},
                        "uniqueItems": True,
                    },
                    "follow": {
                        "description": "Whether /voice join (the caller's channel) and "
                        "/voice leave work.",
                        "type": "boolean",
                        "default": True,
                    },
                },
            },
        },
        "required": ["bot_token"],
    },
    actor="voxbridge.plugins.discord.bot:run",
    needs={"voice": "voice"},
    overlap=_new_token,
)
