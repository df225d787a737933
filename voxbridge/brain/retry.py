"""Retrying a brain request: 429 and 5xx honouring Retry-After, timeouts, unreachable hosts."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import httpx
import trio

from ..errors import BrainError

__all__ = ["JITTER", "MAX_TRIES", "RETRY_STATUS", "Retry", "retry_after", "with_retries"]

MAX_TRIES = 3
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
JITTER = random.Random()  # noqa: S311 - jitter, not cryptography; one for all (seeding costs)


class Retry(Exception):
    """Raised inside an attempt for a failure worth another try."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.after = reason, after


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a ``Retry-After`` header asks for (its seconds form), if any."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _unreachable(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return type(exc).__name__


async def with_retries(
    what: str,
    attempt: Callable[[trio.CancelScope], Awaitable[None]],
    rng: random.Random,
    per_try_s: float,
    base_delay: float,
    *,
    unreachable_hint: str = "",
) -> None:
    """Run ``attempt(scope)`` up to MAX_TRIES times, waiting ``base_delay``, twice that … (with
    jitter), or what Retry-After says, in between.

    Each attempt runs in a scope with a ``per_try_s`` deadline, handed to it: an attempt that
    has started delivering (a streamed answer) lifts the deadline, and a failure after that is
    its own to report, never retried (what was delivered cannot be taken back).

    Raises:
        BrainError: every try failed, or an attempt raised one (not retried).
    """
    last = "no attempt"
    hint = ""
    for n in range(MAX_TRIES):
        wait: float | None = None
        try:
            with trio.fail_after(per_try_s) as scope:
                await attempt(scope)
            return
        except Retry as exc:
            last, wait = exc.reason, exc.after
        except trio.TooSlowError:
            last = f"no answer within {per_try_s:g}s"
        except httpx.TransportError as exc:
            last, hint = f"cannot reach it: {_unreachable(exc)}", unreachable_hint
        if n + 1 < MAX_TRIES:
            await trio.sleep(wait if wait is not None else base_delay * 2**n * (1 + rng.random()))
    raise BrainError(f"{what}: {last} (after {MAX_TRIES} tries){hint}")
