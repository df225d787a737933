"""One restart scope per actor: run it, restart it with backoff, park it, stop it.

Each actor runs in its own task under its own cancel scope, inside the runtime's nursery, so a
crash is caught at the actor's boundary and never reaches its siblings. States and counters go
to the :class:`~voxbridge.runtime.state.StateTable`. There is no cap on how many actors run.

A plugin that declares ``overlap`` is swapped make-before-break when its section changes
(:meth:`Supervisor.swap`): the new actor starts beside the running one as a *candidate*, whose
progress shows in the row's ``swap`` field; once it is ready it takes the row over and the old
one is stopped. A candidate that fails for good leaves the old one serving.
"""

from __future__ import annotations

import enum
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
from .state import ActorKey, ActorState, StateTable, Swap

__all__ = ["ActorSpec", "Supervisor", "redact"]

log = logging.getLogger("voxbridge.supervisor")


@dataclass(frozen=True, eq=False)
class ActorSpec:
    """How to run one actor: the plugin's function (None: the plugin has none to run), a
    factory for its context, where to read its agent's live configuration, the plugin section
    it runs with, and the blob id of the file version that section comes from."""

    key: ActorKey
    actor: Actor | None
    make_context: Callable[[], Context]
    agent: Callable[[], Agent]
    config: object = None
    version: str | None = None


class _Role(enum.Enum):
    PRIMARY = "primary"  # owns the actor's row in the state table
    CANDIDATE = "candidate"  # a newer version starting beside the primary: the row's ``swap``
    RETIRED = "retired"  # stopping or replaced: reports nothing any more


@dataclass(eq=False)
class _Handle:
    spec: ActorSpec
    role: _Role = _Role.PRIMARY
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
    prompt, description, plugin settings and tool servers' secrets."""
    llm = agent.llm
    fields = (llm.base_url, llm.model, llm.api_key) if llm is not None else ()
    for value in (*fields, agent.system_prompt, agent.description):
        yield from _walk(value)
    for plugin in agent.plugins.values():
        yield from _walk(plugin.settings)
    for tool in agent.tools.values():
        yield from _walk((tool.url, tool.n8n, tool.env, tool.headers, tool.command))


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
    """The ``task_status`` an actor reports readiness through, for one attempt.

    Once the attempt is over (the actor raised, returned or was cancelled) it is closed: a
    readiness report that arrives late — a callback a bridge queued from another thread just
    before the actor failed — must not turn a failed or stopped actor back into ``running``.
    """

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self._on_ready = on_ready
        self.ready_at: float | None = None
        self.closed = False

    def started(self, value: object = None) -> None:
        if self.closed:
            return
        if self.ready_at is not None:
            raise RuntimeError("task_status.started() called twice")
        self.ready_at = trio.current_time()
        self._on_ready()


class Supervisor:
    """Starts, restarts, swaps and stops actors inside ``nursery``."""

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
        self._candidates: dict[ActorKey, _Handle] = {}

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
        self._table.set_state(
            spec.key, ActorState.STARTING, next_retry=None, last_error=None, swap=None
        )
        self._nursery.start_soon(self._supervise, handle, name=f"actor {spec.key}")

    def serving(self, key: ActorKey) -> ActorSpec | None:
        """The spec of the actor that owns ``key`` now (not a newer one starting beside it)."""
        handle = self._handles.get(key)
        return handle.spec if handle is not None else None

    def can_swap(self, key: ActorKey) -> bool:
        """Whether the actor is running, so a newer version could start beside it."""
        status = self._table.get(key)
        return key in self._handles and status is not None and status.state == ActorState.RUNNING

    def swap(self, spec: ActorSpec) -> bool:
        """Replace a running actor make-before-break: ``spec`` starts beside it and takes over
        once ready. False (nothing done) if the actor is not running: then there is nothing to
        keep serving, and a plain restart is the way.

        A swap replaces any earlier one still under way (or parked); a ``spec`` whose section is
        the one already running just ends the swap (the file went back to it).
        """
        key = spec.key
        primary = self._handles.get(key)
        if primary is None or not self.can_swap(key):
            return False
        self._retire(self._candidates.pop(key, None))
        if spec.config == primary.spec.config:
            primary.spec = spec
            self._table.set_swap(key, None)
            return True
        candidate = _Handle(spec, role=_Role.CANDIDATE)
        self._candidates[key] = candidate
        self._table.set_swap(key, Swap(spec.version, ActorState.STARTING))
        log.info(
            "🔁 %s/%s: starting the new version beside the running one",
            *key,
            extra={"agent": key[0], "plugin": key[1]},
        )
        self._nursery.start_soon(self._supervise, candidate, name=f"actor {key} (new version)")
        return True

    async def wait_first_attempts(self) -> None:
        """Wait until every actor is ready or has failed once — those started meanwhile too
        (a file changed while the first ones were starting)."""
        while pending := self.first_attempts_pending():
            await self._handles[pending[0]].first_attempt.wait()

    def first_attempts_pending(self) -> list[ActorKey]:
        """The actors that have not yet become ready nor failed once."""
        return [k for k, h in self._handles.items() if not h.first_attempt.is_set()]

    async def stop(self, key: ActorKey) -> None:
        """Cancel an actor (and a newer version starting beside it), give it the grace period
        to clean up, then let it go.

        Cancellation: if this task is cancelled while waiting, the actor is still cancelled.
        """
        handle = self._handles.pop(key, None)
        candidate = self._candidates.pop(key, None)
        if handle is None:
            self._retire(candidate)
            return
        self._table.set_state(key, ActorState.STOPPING, next_retry=None, swap=None)
        for h in (handle, candidate):
            if h is not None:
                h.role = _Role.RETIRED
                h.scope.cancel()
        if not await self._wait_done(handle, candidate):
            log.warning(
                "⚠️ %s/%s did not stop within %.1fs; abandoned",
                *key,
                self._grace,
                extra={"agent": key[0], "plugin": key[1]},
            )
        self._table.set_state(key, ActorState.STOPPED)
        log.info("🛑 %s/%s stopped", *key, extra={"agent": key[0], "plugin": key[1]})

    async def _wait_done(self, *handles: _Handle | None) -> bool:
        """Wait up to the grace period for ``handles`` to finish; whether they all did."""
        with trio.move_on_after(self._grace):
            for h in handles:
                if h is not None:
                    await h.done.wait()
            return True
        return False

    def _retire(self, handle: _Handle | None) -> None:
        """Stop ``handle`` in the background: its row belongs to someone else now."""
        if handle is None:
            return
        handle.role = _Role.RETIRED
        handle.scope.cancel()

        async def wait() -> None:
            if not await self._wait_done(handle):
                key = handle.spec.key
                log.warning(
                    "⚠️ %s/%s (replaced version) did not stop within %.1fs; abandoned",
                    *key,
                    self._grace,
                    extra={"agent": key[0], "plugin": key[1]},
                )

        self._nursery.start_soon(wait)

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

    def _report(self, handle: _Handle, state: ActorState, **changes: object) -> None:
        """Write an attempt's state where its role says: the row, the row's swap, or nowhere."""
        key = handle.spec.key
        if handle.role is _Role.PRIMARY:
            self._table.set_state(key, state, **changes)
        elif handle.role is _Role.CANDIDATE:
            error = changes.get("last_error")
            retry = changes.get("next_retry")
            self._table.set_swap(
                key,
                Swap(
                    handle.spec.version,
                    state,
                    error if isinstance(error, str) else None,
                    retry if isinstance(retry, float) else None,
                ),
            )

    def _promote(self, candidate: _Handle) -> None:
        """The new version is ready: it takes the row over, the old one stops (after, not
        before: make-before-break)."""
        key = candidate.spec.key
        old = self._handles.get(key)
        self._candidates.pop(key, None)
        candidate.role = _Role.PRIMARY
        self._handles[key] = candidate
        self._table.set_state(
            key, ActorState.RUNNING, restarts=0, last_error=None, next_retry=None, swap=None
        )
        log.info(
            "🔁 %s/%s: the new version is ready; the previous one stops",
            *key,
            extra={"agent": key[0], "plugin": key[1]},
        )
        if old is not None and old is not candidate:
            self._retire(old)

    async def _supervise(self, handle: _Handle) -> None:
        key = handle.spec.key
        fields = {"agent": key[0], "plugin": key[1]}
        backoff = Backoff(RestartPolicy(), self._rng)
        try:
            with handle.scope:
                while True:
                    spec = handle.spec  # swapped back to an equal section: the newer spec
                    if spec.actor is None:
                        self._report(
                            handle,
                            ActorState.FAILED,
                            last_error=f"the {key[1]} plugin has no actor in this version",
                        )
                        handle.first_attempt.set()
                        return

                    def ready() -> None:
                        if handle.role is _Role.CANDIDATE:
                            self._promote(handle)
                        elif handle.role is _Role.PRIMARY:
                            self._table.set_state(key, ActorState.RUNNING, next_retry=None)
                            log.info("✅ %s/%s ready", *key, extra=fields)
                        handle.first_attempt.set()

                    readiness = _Readiness(ready)
                    try:
                        await spec.actor(spec.make_context(), task_status=readiness)
                        error = "the actor returned (actors must run until cancelled)"
                    except Exception as exc:
                        permanent = _permanent(exc)
                        if permanent is not None:
                            message = redact(_describe(permanent), spec.agent())
                            self._report(handle, ActorState.FAILED, last_error=message)
                            handle.first_attempt.set()
                            self._log_permanent(handle, message)
                            return
                        error = redact(_describe(exc), spec.agent())
                    finally:
                        readiness.closed = True
                    if readiness.ready_at is not None:
                        backoff.healthy_for(trio.current_time() - readiness.ready_at)
                    backoff.policy = spec.agent().restart  # edits apply from the next failure
                    delay = backoff.next_delay()
                    status = self._table.get(key)
                    restarts = (status.restarts if status else 0) + 1
                    self._report(
                        handle,
                        ActorState.BACKOFF,
                        restarts=restarts,
                        last_error=error,
                        next_retry=self._table.clock() + delay,
                    )
                    handle.first_attempt.set()
                    log.warning(
                        "🔄 %s/%s%s crashed (%s); retry %d in %.1fs",
                        *key,
                        " (new version)" if handle.role is _Role.CANDIDATE else "",
                        error,
                        restarts,
                        delay,
                        extra=fields,
                    )
                    await trio.sleep(delay)
                    self._report(handle, ActorState.STARTING, next_retry=None)
        except Exception as exc:  # raised by the actor's clean-up while it was being cancelled
            log.warning(
                "⚠️ %s/%s raised while stopping: %s",
                *key,
                redact(_describe(exc), handle.spec.agent()),
                extra=fields,
            )
        finally:
            handle.done.set()
            handle.first_attempt.set()

    def _log_permanent(self, handle: _Handle, message: str) -> None:
        key = handle.spec.key
        fields = {"agent": key[0], "plugin": key[1]}
        file = handle.spec.agent().file
        if handle.role is _Role.CANDIDATE:
            log.error(
                "❌ %s/%s: the new version failed for good: %s; kept the previous version "
                "running (fix %s to complete the swap)",
                *key,
                message,
                file,
                extra=fields,
            )
        else:
            log.error(
                "❌ %s/%s failed for good: %s (fix %s; it is retried when the file changes)",
                *key,
                message,
                file,
                extra=fields,
            )
