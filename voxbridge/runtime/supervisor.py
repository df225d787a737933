"""One restart scope per actor: run it, restart it with backoff, park it, stop it.

Each actor runs in its own task under its own cancel scope, inside the runtime's nursery, so a
crash is caught at the actor's boundary and never reaches its siblings. States and counters go
to the :class:`~voxbridge.runtime.state.StateTable`. There is no cap on how many actors run.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from ..config.model import Agent, RestartPolicy
from ..errors import PermanentFailure
from ..plugins.api import Actor, Context
from ..secrets.crypto import Secret
from .backoff import Backoff
from .state import ActorKey, ActorState, StateTable

__all__ = ["ActorSpec", "Supervisor", "redact"]

log = logging.getLogger("voxbridge.supervisor")


@dataclass(frozen=True, eq=False)
class ActorSpec:
    """How to run one actor: the plugin's function (None: the plugin has none to run), a
    factory for its context, and where to read its agent's live configuration."""

    key: ActorKey
    actor: Actor | None
    make_context: Callable[[], Context]
    agent: Callable[[], Agent]


@dataclass(eq=False)
class _Handle:
    spec: ActorSpec
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    first_attempt: trio.Event = field(default_factory=trio.Event)


def redact(text: str, agent: Agent) -> str:
    """``text`` with every secret value of ``agent`` replaced by ``[secret]``.

    Defence in depth: a library's exception may quote a URL or header that holds a secret.
    """
    for value in _secrets(agent):
        if value:
            text = text.replace(value, "[secret]")
    return text


def _walk(value: Any) -> Iterable[str]:
    if isinstance(value, Secret):
        yield value.reveal()
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _walk(item)


def _secrets(agent: Agent) -> Iterable[str]:
    """Every decrypted value of ``agent``: its llm (key, and any field encrypted on request),
    prompt, description and plugin settings."""
    llm = agent.llm
    fields = (llm.base_url, llm.model, llm.api_key) if llm is not None else ()
    for value in (*fields, agent.system_prompt, agent.description):
        yield from _walk(value)
    for plugin in agent.plugins.values():
        yield from _walk(plugin.settings)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _permanent(exc: BaseException) -> PermanentFailure | None:
    if isinstance(exc, PermanentFailure):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _permanent(inner)
            if found is not None:
                return found
    return None


class _Readiness:
    """The ``task_status`` an actor reports readiness through."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self._on_ready = on_ready
        self.ready_at: float | None = None

    def started(self, value: object = None) -> None:
        if self.ready_at is not None:
            raise RuntimeError("task_status.started() called twice")
        self.ready_at = trio.current_time()
        self._on_ready()


class Supervisor:
    """Starts, restarts and stops actors inside ``nursery``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        table: StateTable,
        *,
        grace: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self._nursery = nursery
        self._table = table
        self._grace = grace
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._handles: dict[ActorKey, _Handle] = {}

    def __contains__(self, key: ActorKey) -> bool:
        return key in self._handles

    def keys(self) -> list[ActorKey]:
        return list(self._handles)

    def start(self, spec: ActorSpec) -> None:
        """Run ``spec`` under supervision from now on.

        Raises:
            RuntimeError: an actor with that key is running already.
        """
        if spec.key in self._handles:
            raise RuntimeError(f"actor {spec.key} is running already")
        handle = _Handle(spec)
        self._handles[spec.key] = handle
        self._table.set_state(spec.key, ActorState.STARTING, next_retry=None, last_error=None)
        self._nursery.start_soon(self._supervise, handle, name=f"actor {spec.key}")

    async def wait_first_attempts(self, keys: Iterable[ActorKey] | None = None) -> None:
        """Wait until each actor is ready or has failed once."""
        for key in list(self._handles) if keys is None else keys:
            handle = self._handles.get(key)
            if handle is not None:
                await handle.first_attempt.wait()

    async def stop(self, key: ActorKey) -> None:
        """Cancel an actor, give it the grace period to clean up, then let it go.

        Cancellation: if this task is cancelled while waiting, the actor is still cancelled.
        """
        handle = self._handles.pop(key, None)
        if handle is None:
            return
        self._table.set_state(key, ActorState.STOPPING, next_retry=None)
        handle.scope.cancel()
        with trio.move_on_after(self._grace) as waited:
            await handle.done.wait()
        if waited.cancelled_caught:
            log.warning(
                "⚠️ %s/%s did not stop within %.1fs; abandoned",
                *key,
                self._grace,
                extra={"agent": key[0], "plugin": key[1]},
            )
        self._table.set_state(key, ActorState.STOPPED)
        log.info("🛑 %s/%s stopped", *key, extra={"agent": key[0], "plugin": key[1]})

    async def stop_many(self, keys: Iterable[ActorKey]) -> None:
        """Stop several actors at once (their grace periods overlap)."""
        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(self.stop, key)

    async def restart(self, key: ActorKey) -> bool:
        """Stop and start one actor again with a fresh backoff; False if it is not known."""
        handle = self._handles.get(key)
        if handle is None:
            return False
        await self.stop(key)
        self.start(handle.spec)
        return True

    async def _supervise(self, handle: _Handle) -> None:
        spec, table = handle.spec, self._table
        key = spec.key
        fields = {"agent": key[0], "plugin": key[1]}
        backoff = Backoff(RestartPolicy(), self._rng)
        try:
            with handle.scope:
                while True:
                    if spec.actor is None:
                        table.set_state(
                            key,
                            ActorState.FAILED,
                            last_error=f"the {key[1]} plugin has no actor in this version",
                        )
                        handle.first_attempt.set()
                        return

                    def ready() -> None:
                        table.set_state(key, ActorState.RUNNING, next_retry=None)
                        handle.first_attempt.set()
                        log.info("✅ %s/%s ready", *key, extra=fields)

                    readiness = _Readiness(ready)
                    try:
                        await spec.actor(spec.make_context(), task_status=readiness)
                        error = "the actor returned (actors must run until cancelled)"
                    except Exception as exc:
                        permanent = _permanent(exc)
                        if permanent is not None:
                            message = redact(_describe(permanent), spec.agent())
                            table.set_state(key, ActorState.FAILED, last_error=message)
                            handle.first_attempt.set()
                            log.error(
                                "❌ %s/%s failed for good: %s (fix %s; it is retried when the "
                                "file changes)",
                                *key,
                                message,
                                spec.agent().file,
                                extra=fields,
                            )
                            return
                        error = redact(_describe(exc), spec.agent())
                    if readiness.ready_at is not None:
                        backoff.healthy_for(trio.current_time() - readiness.ready_at)
                    backoff.policy = spec.agent().restart  # edits apply from the next failure
                    delay = backoff.next_delay()
                    status = table.get(key)
                    restarts = (status.restarts if status else 0) + 1
                    table.set_state(
                        key,
                        ActorState.BACKOFF,
                        restarts=restarts,
                        last_error=error,
                        next_retry=table.clock() + delay,
                    )
                    handle.first_attempt.set()
                    log.warning(
                        "🔄 %s/%s crashed (%s); retry %d in %.1fs",
                        *key,
                        error,
                        restarts,
                        delay,
                        extra=fields,
                    )
                    await trio.sleep(delay)
                    table.set_state(key, ActorState.STARTING, next_retry=None)
        except Exception as exc:  # raised by the actor's clean-up while it was being cancelled
            log.warning(
                "⚠️ %s/%s raised while stopping: %s",
                *key,
                redact(_describe(exc), spec.agent()),
                extra=fields,
            )
        finally:
            handle.done.set()
            handle.first_attempt.set()
