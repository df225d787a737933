"""The ``discord`` plugin type: a Discord bot answering as the agent."""

from __future__ import annotations

from ...config.model import PluginConfig
from ..api import Plugin


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
