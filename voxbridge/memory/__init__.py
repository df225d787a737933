"""What agents remember: conversations that survive edits, restarts and crashes, and facts
about each person, under that person's control (SPEC §14).

    records       turns, facts, exchanges (frozen values)
    backend       the seam: what a database does (blocking calls)
    sqlite        the embedded store (APSW; sqlite-vec for vectors)
    postgres      one store for a sharded fleet (psycopg; pgvector where installed)
    location      --store / VOXBRIDGE_STORE → a backend
    store         the backend for Trio code: batched writes, degraded mode, catching up
    conversation  one conversation, durable: ask → context → answered
    facts         learning facts off the reply path, recalling them into answers
    embeddings    text to vectors (an OpenAI-compatible /v1/embeddings)
    transfer      JSON Lines export and import
    service       the process's memory, and each agent's view of it (ctx.memory)

Nothing above this package writes SQL.
"""

from .conversation import CUT_MARK, Conversation, Exchange
from .location import STORE_ENV, Location
from .records import Counts, Fact, StoredTurn
from .service import AgentMemory, MemoryService
from .store import Health

__all__ = [
    "CUT_MARK",
    "STORE_ENV",
    "AgentMemory",
    "Conversation",
    "Counts",
    "Exchange",
    "Fact",
    "Health",
    "Location",
    "MemoryService",
    "StoredTurn",
]
