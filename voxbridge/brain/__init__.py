"""How an agent thinks: a stream of text from its LLM or its n8n workflow.

Every channel that answers — Discord text, the web chat, the terminal, voice — consumes the same
stream::

    exchange = conversation.ask(message.text, person=..., name=...)   # voxbridge.memory
    async with think(agent, message, exchange.context(agent.history), http=http, n8n=n8n,
                     facts=recalled, before_first=exchange.stored) as answer:
        async for delta in answer:
            ...                       # show it as it comes
    exchange.answered(answer.text, cut=not answer.done)

Leaving the block (or being cancelled) closes the HTTP request at once.
"""

from .answer import Answer, Ready, Think, think
from .llm import LLMClient
from .messages import Image, Message, Turn
from .n8n import N8nClient, parse_n8n
from .retry import MAX_TRIES
from .tools import Toolbox, ToolCall, ToolResult, ToolUse

__all__ = [
    "MAX_TRIES",
    "Answer",
    "Image",
    "LLMClient",
    "Message",
    "N8nClient",
    "Ready",
    "Think",
    "ToolCall",
    "ToolResult",
    "ToolUse",
    "Toolbox",
    "Turn",
    "parse_n8n",
    "think",
]
