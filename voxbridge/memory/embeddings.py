"""Text to vectors through an OpenAI-compatible ``POST {base_url}/embeddings`` (Ollama, vLLM,
llama.cpp, OpenAI...), retried like the brain's requests."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import httpx
import numpy as np
import trio

from ..brain.llm import shown_url
from ..brain.retry import JITTER, RETRY_STATUS, Retry, retry_after, with_retries
from ..config.model import EmbeddingsConfig, reveal
from ..errors import BrainError
from .backend import Vector

__all__ = ["EmbeddingError", "embed"]


class EmbeddingError(Exception):
    """The endpoint did not give vectors (its message names the URL, never the key)."""


@functools.lru_cache(maxsize=64)
def _endpoint(base_url: str) -> httpx.URL:
    return httpx.URL(base_url.rstrip("/") + "/embeddings")


async def embed(
    http: httpx.AsyncClient, config: EmbeddingsConfig, texts: Sequence[str]
) -> list[Vector]:
    """One vector per text, in order.

    Raises:
        EmbeddingError: the endpoint failed after its retries, or answered in a shape that is
            not OpenAI's.
    """
    model = reveal(config.model)
    shown = shown_url(config.base_url, "memory.embeddings.base_url")
    headers = {"Authorization": f"Bearer {config.api_key.reveal()}"} if config.api_key else {}
    body = {"model": model, "input": list(texts)}
    found: list[Vector] = []

    async def attempt(scope: trio.CancelScope) -> None:
        response = await http.post(
            _endpoint(reveal(config.base_url)), json=body, headers=headers, timeout=config.timeout
        )
        if response.status_code in RETRY_STATUS:
            raise Retry(f"HTTP {response.status_code}", retry_after(response))
        if response.status_code >= 400:
            raise BrainError(
                f"the embeddings endpoint at {shown} refused: HTTP {response.status_code}"
            )
        try:
            items = sorted(response.json()["data"], key=lambda item: item.get("index", 0))
            arrays = [np.asarray(item["embedding"], dtype="<f4") for item in items]
        except (ValueError, KeyError, TypeError) as exc:
            raise BrainError(
                f"the embeddings endpoint at {shown} answered in an unknown shape ({exc!r})"
            ) from None
        if len(arrays) != len(texts) or any(a.ndim != 1 or not a.size for a in arrays):
            raise BrainError(f"the embeddings endpoint at {shown} gave {len(arrays)} vectors")
        found.extend(Vector(model, int(a.size), a.tobytes()) for a in arrays)

    try:
        await with_retries(
            f"the embeddings endpoint at {shown}", attempt, JITTER, config.timeout, 0.5
        )
    except BrainError as exc:
        raise EmbeddingError(str(exc)) from None
    return found
