"""The asyncio side: one event loop in a background thread, serving every asyncio library.

disnake is asyncio; voxbridge is Trio. Rather than run a second framework's policy machinery
(trio-asyncio rests on the asyncio policy system Python is deprecating), one plain asyncio loop
runs in a daemon thread, shared by every bot, and coroutines hop across with
:func:`run_on_loop`: a hop Trio → asyncio → Trio costs about 0.1 ms.

Cancellation crosses too: cancelling the Trio side cancels the asyncio task and waits (shielded)
up to a grace period for it to finish its own clean-up (a bot closing its gateway and HTTP
session), then abandons it. An exception on the asyncio side is raised on the Trio side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

__all__ = ["loop", "run_on_loop", "to_trio"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def loop() -> asyncio.AbstractEventLoop:
    """The shared asyncio loop, started on first use in a daemon thread."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            new = asyncio.new_event_loop()
            started = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(new)
                new.call_soon(started.set)
                new.run_forever()

            threading.Thread(target=serve, name="voxbridge-asyncio", daemon=True).start()
            started.wait()
            _loop = new
        return _loop


async def run_on_loop(fn: Callable[[], Awaitable[T]], *, grace: float = 5.0) -> T:
    """Run ``fn()`` as a task on the asyncio loop and wait for it from Trio.

    Returns its result or raises its exception.

    Cancellation: the asyncio task is cancelled; this waits up to ``grace`` seconds (shielded)
    for it to finish, then abandons it and lets the cancellation through.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    async def wrapper() -> T:
        return await fn()

    future = asyncio.run_coroutine_threadsafe(wrapper(), loop())

    def wake(_: concurrent.futures.Future[T]) -> None:
        to_trio(token, done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        future.cancel()
        with trio.move_on_after(grace) as scope:
            scope.shield = True
            await done.wait()
        raise
    try:
        return future.result()
    except concurrent.futures.CancelledError as exc:
        # Cancelled on the asyncio side by someone else (the loop shutting down).
        raise RuntimeError("the asyncio task was cancelled") from exc


def to_trio(token: trio.lowlevel.TrioToken, fn: Callable[[], object]) -> None:
    """From the asyncio thread, run ``fn()`` soon in the Trio thread (fire and forget)."""
    with contextlib.suppress(trio.RunFinishedError):  # the Trio side is gone: nobody to tell
        token.run_sync_soon(fn)
