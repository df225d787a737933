"""Long-term memory of people: facts learned after an exchange, recalled into each answer.

Learning runs off the reply path: an answered exchange is *offered* to its agent's
:class:`Learner`, which asks the agent's LLM for short facts about the person, one exchange at a
time; when it falls behind, the oldest offers are dropped (and counted) — an answer never
waits for it. Recall ranks a person's facts by full-text relevance to the question and, with
``memory.embeddings``, by vector distance too (the two rankings fused by reciprocal rank), then
tops up with the newest facts, so a person with few facts has them all at hand.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
import trio

from ..brain import LLMClient, Turn
from ..config.model import Agent, reveal
from ..errors import BrainError
from .backend import AddFact, AddVector, Vector
from .embeddings import EmbeddingError, embed
from .records import Fact, normalized
from .store import Store

__all__ = [
    "MAX_FACT",
    "Learner",
    "Lesson",
    "fuse",
    "keywords",
    "parse_facts",
]

log = logging.getLogger("voxbridge.memory")

MAX_FACT = 300  # characters of one fact
_PER_EXCHANGE = 5  # facts learned from one exchange, at most
_KNOWN = 30  # facts shown to the extractor, so it does not repeat them
_OFFERS = 16  # exchanges waiting to be learned from, per agent
_BACKFILL = 64  # facts embedded in one request

EXTRACT = """\
You keep notes about the people an assistant talks with, so that it remembers them next time.
From the exchange below, note what is worth remembering about {name}: what they say about
themselves — their name, preferences, circumstances, plans, and anything they ask to be
remembered. Not what the assistant said, not small talk, nothing already in the notes.
Answer with a JSON array of short sentences in the third person, such as
["Prefers metric units.", "Has a dog called Rex."], or [] when there is nothing new.
{known}"""

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    """a about an and are as at be but by can could did do does for from had has have he her
    him his how i if in is it its me my of on or our she so that the their them then there
    they this to was we were what when where which who why will with would you your
    yours""".split()  # noqa: SIM905 - a paragraph of words reads better than a list
)


def keywords(text: str, limit: int = 24) -> list[str]:
    """The words of ``text`` worth searching facts for: no stop words, each once."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.casefold()):
        if len(word) > 1 and word not in _STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)[:limit]


def fuse(rankings: Sequence[Sequence[Fact]], limit: int, k: int = 60) -> list[Fact]:
    """Reciprocal rank fusion of several rankings of facts: best first."""
    scores: dict[int, float] = {}
    facts: dict[int, Fact] = {}
    for ranking in rankings:
        for rank, fact in enumerate(ranking):
            scores[fact.id] = scores.get(fact.id, 0.0) + 1.0 / (k + rank + 1)
            facts[fact.id] = fact
    best = sorted(scores, key=lambda fid: -scores[fid])
    return [facts[fid] for fid in best[:limit]]


def parse_facts(text: str) -> list[str]:
    """The facts in an extractor's answer: a JSON array of strings, maybe in a code fence or
    after some words; anything else gives none."""
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return []
    try:
        items = json.loads(text[start : end + 1])
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    facts = [" ".join(i.split())[:MAX_FACT] for i in items if isinstance(i, str) and i.strip()]
    return facts[:_PER_EXCHANGE]


@dataclass(frozen=True, slots=True)
class Lesson:
    """An answered exchange to learn from."""

    person: str
    name: str
    question: str
    answer: str


class Learner:
    """One agent's learning: a task taking one exchange at a time (see the module)."""

    def __init__(
        self,
        agent_id: str,
        agent: Callable[[], Agent | None],
        store: Store,
        http: Callable[[], httpx.AsyncClient],
        *,
        count: Callable[[str, int], None] = lambda _name, _n: None,
    ) -> None:
        self.agent_id = agent_id
        self._agent = agent
        self._store = store
        self._http = http
        self._count = count
        self._send, self._receive = trio.open_memory_channel[Lesson](_OFFERS)
        self._outstanding = 0  # offered and not learned from yet
        self._quiet = trio.Event()
        self._quiet.set()

    async def idle(self) -> None:
        """Wait until every offered exchange has been learned from (or failed)."""
        await self._quiet.wait()

    def offer(self, lesson: Lesson) -> None:
        """Learn from ``lesson`` when there is time; never waits."""
        if self._quiet.is_set():
            self._quiet = trio.Event()
        try:
            self._send.send_nowait(lesson)
            self._outstanding += 1
        except trio.WouldBlock:
            # Behind: the newest exchanges are worth more than the oldest.
            self._receive.receive_nowait()
            self._send.send_nowait(lesson)
            self._count("facts_dropped", 1)

    async def run(self) -> None:
        """Learn from each offered exchange, one at a time, until cancelled."""
        await self.backfill()
        async for lesson in self._receive:
            agent = self._agent()
            try:
                if agent is not None and agent.llm is not None and agent.memory.facts:
                    await self._learn(agent, lesson)
            except (BrainError, EmbeddingError) as exc:
                self._count("facts_errors", 1)
                log.warning("⚠️ %s: could not learn from an exchange: %s", self.agent_id, exc)
            finally:
                self._outstanding -= 1
                if self._outstanding <= 0:
                    self._outstanding = 0
                    self._quiet.set()

    async def _learn(self, agent: Agent, lesson: Lesson) -> None:
        assert agent.llm is not None
        store = self._store
        known: list[Fact] = await store.read(
            lambda b: b.facts(self.agent_id, lesson.person, _KNOWN), default=[]
        )
        listed = "\n".join(f"- {f.text}" for f in known)
        system = EXTRACT.format(
            name=lesson.name, known=f"\nNotes so far:\n{listed}" if listed else ""
        )
        said = f"{lesson.name}: {lesson.question}\nAssistant: {lesson.answer}"
        parts: list[str] = []

        async def keep(delta: str) -> None:
            parts.append(delta)

        llm = dataclasses.replace(agent.llm, temperature=0.0, max_tokens=400)
        whole = await LLMClient(self._http()).stream(llm, system, [Turn("user", said)], keep)
        seen = {normalized(f.text) for f in known}
        new = []
        for fact in parse_facts(whole if whole is not None else "".join(parts)):
            if normalized(fact) not in seen:
                seen.add(normalized(fact))
                new.append(fact)
        if not new:
            return
        vectors: list[Vector | None] = [None] * len(new)
        config = agent.memory.embeddings
        if config is not None and store.backend is not None and store.backend.vectors:
            try:
                vectors = list(await embed(self._http(), config, new))
            except EmbeddingError as exc:  # stored without: embedded later (backfill)
                log.warning("⚠️ %s: facts stored without vectors: %s", self.agent_id, exc)
        now = time.time()
        for fact, vector in zip(new, vectors, strict=True):
            store.put(AddFact(Fact(self.agent_id, lesson.person, fact, now), vector))
        self._count("facts_learned", len(new))
        log.debug("🧠 %s: %d fact(s) learned about %s", self.agent_id, len(new), lesson.person)

    async def backfill(self) -> None:
        """Embed the agent's facts that have no vector of its model (learned before
        embeddings were set up, imported, or of another model)."""
        agent = self._agent()
        store = self._store
        config = agent.memory.embeddings if agent is not None else None
        if config is None or store.backend is None or not store.backend.vectors:
            return
        model = reveal(config.model)
        while True:
            facts: list[Fact] = await store.read(
                lambda b: b.unembedded(self.agent_id, model, _BACKFILL), default=[]
            )
            if not facts:
                return
            try:
                vectors = await embed(self._http(), config, [f.text for f in facts])
            except EmbeddingError as exc:
                log.warning("⚠️ %s: facts not embedded: %s", self.agent_id, exc)
                return
            for fact, vector in zip(facts, vectors, strict=True):
                store.put(AddVector(fact.id, vector))
            if len(facts) < _BACKFILL:
                return
