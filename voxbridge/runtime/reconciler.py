"""Files on disk (desired) against actors running (actual): the only writer of the agent index.

For each changed path the reconciler looks at what is on disk *now* — the watcher's event type
is not trusted, atomic saves arrive as add/delete pairs — and then:

* unchanged content: nothing;
* a file that does not load: its last good version keeps running, the error is reported;
* a good file: per-plugin diff — unchanged sections keep running (they see the new prompt, llm
  and history through ``ctx.agent``), changed ones restart, removed or disabled ones stop, new
  ones start, parked (failed) ones get another chance;
* a missing file: its actors stop.

A changed section of a plugin that declares ``overlap`` is swapped make-before-break (the
supervisor starts the new actor beside the old one) rather than restarted. Every applied change
clears the default-agent cache and records the file's live version (its git blob id) in the
state table; a rejected one is recorded beside it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from ..config.load import (
    AgentIndex,
    agent_files,
    decode_agent_text,
    is_agent_file,
    parse_agent,
    read_agent_bytes,
)
from ..config.model import Agent, PluginConfig
from ..errors import ConfigError, Problem
from ..plugins.api import TOOL_ACTOR, Plugin, installed_plugins
from ..secrets.keys import Keyring
from .default_agent import DefaultAgent
from .state import ActorState, StateTable
from .supervisor import ActorSpec, Supervisor
from .version import FileVersion, Rejected, blob_id

__all__ = ["Outcome", "Reconciler"]

log = logging.getLogger("voxbridge.reconciler")

Outcome = str  # "ignored" | "unchanged" | "loaded" | "updated" | "error" | "removed" | "absent"


@dataclass(frozen=True, slots=True)
class _File:
    digest: str
    agent_id: str | None  # the agent this file provides (None while it never loaded)
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class _Read:
    digest: str  # the git blob id of the content (or, if unreadable, of the problem)
    agent: Agent | None
    problems: tuple[Problem, ...]
    vanished: bool = False
    blob: str | None = None  # None: not even the bytes could be read


class Reconciler:
    """Applies file changes in ``agents_dir`` to the index and the supervisor, one at a time."""

    def __init__(
        self,
        agents_dir: Path,
        keyring: Callable[[], Keyring],
        index: AgentIndex,
        supervisor: Supervisor,
        table: StateTable,
        default_agent: DefaultAgent,
        spec_for: Callable[[Agent, str], ActorSpec],
        *,
        owns: Callable[[str], bool] = lambda _id: True,
        plugins: Mapping[str, Plugin] | None = None,
        on_change: Callable[[str], None] = lambda _id: None,
        on_removed: Callable[[str], None] = lambda _id: None,
        on_version: Callable[[str, Path, str], None] = lambda _id, _path, _blob: None,
    ) -> None:
        self.agents_dir = agents_dir
        self._keyring = keyring
        self._index = index
        self._supervisor = supervisor
        self._table = table
        self._default = default_agent
        self._spec_for = spec_for
        self._owns = owns
        self._plugins = plugins
        self._on_change = on_change
        self._on_removed = on_removed
        self._on_version = on_version
        self._files: dict[Path, _File] = {}
        self._path_of: dict[str, Path] = {}
        self._conflicted: set[Path] = set()
        self._lock = trio.Lock()
        self._closed = False
        self.applied = 0  # changes applied (loads, updates, removals)

    def close(self) -> None:
        """Apply nothing more: the runtime is shutting down."""
        self._closed = True

    # --- entry points --------------------------------------------------------------------------

    async def rescan(self, *, force: bool = False) -> None:
        """Apply every file on disk and every file known (so deletions are seen too).

        ``force`` re-reads files whose content did not change (SIGHUP: keys may have changed).
        Files are read and decrypted in a worker thread; actors all start at once.
        """
        paths = sorted(set(agent_files(self.agents_dir)) | set(self._files))
        reads = await trio.to_thread.run_sync(lambda: [self._read(p) for p in paths])
        async with self._lock:
            applied = self.applied
            for path, read in zip(paths, reads, strict=True):
                await self._apply(path, read, force=force)
            await self._retry_conflicts(applied)

    async def apply_paths(self, paths: Iterable[Path]) -> list[Outcome]:
        """Apply the current content of each path (a watcher batch)."""
        outcomes: list[Outcome] = []
        async with self._lock:
            applied = self.applied
            for path in paths:
                if self._closed:
                    break
                if path.parent != self.agents_dir or not is_agent_file(path.name):
                    outcomes.append("ignored")
                    continue
                started = trio.current_time()
                outcome = await self._apply(path, self._read(path))
                if outcome in ("loaded", "updated", "removed"):
                    self._table.observe("reload", trio.current_time() - started)
                outcomes.append(outcome)
            await self._retry_conflicts(applied)
        return outcomes

    def file_of(self, agent_id: str) -> Path | None:
        return self._path_of.get(agent_id)

    def is_current(self, path: Path) -> bool:
        """Whether what was last applied for ``path`` is what the disk holds now."""
        known = self._files.get(path)
        on_disk = self._read(path)
        if on_disk.vanished:
            return known is None
        return known is not None and known.digest == on_disk.digest

    # --- reading -------------------------------------------------------------------------------

    def _read(self, path: Path) -> _Read:
        if not os.path.lexists(path):
            return _Read("", None, (), vanished=True)
        try:
            data = read_agent_bytes(path)
        except ConfigError as exc:
            if not os.path.lexists(path):  # removed while we read it
                return _Read("", None, (), vanished=True)
            digest = hashlib.blake2b(repr(exc.problems).encode()).hexdigest()
            return _Read(digest, None, exc.problems)
        blob = blob_id(data)
        try:
            text = decode_agent_text(data, str(path))
            agent = parse_agent(text, str(path), path.stem, self._keyring(), plugins=self._plugins)
        except ConfigError as exc:
            return _Read(blob, None, exc.problems, blob=blob)
        return _Read(blob, agent, (), blob=blob)

    # --- applying ------------------------------------------------------------------------------

    async def _apply(self, path: Path, read: _Read, *, force: bool = False) -> Outcome:
        if read.vanished:
            return await self._unload(path)
        known = self._files.get(path)
        if known is not None and known.digest == read.digest and not force:
            return "unchanged"
        if read.agent is None:
            return self._reject(path, read, read.problems)
        agent = read.agent
        owner = self._path_of.get(agent.id)
        if owner is not None and owner != path:
            problem = Problem(
                str(path),
                0,
                0,
                "",
                f"agent id '{agent.id}' is also defined by {owner}; keep one file",
            )
            return self._reject(path, read, (problem,), conflict=True)
        conflicts = self._index.conflicts(agent)
        if conflicts:
            return self._reject(path, read, tuple(conflicts), conflict=True)
        old = self._index.get(agent.id)
        if old == agent and known is not None and not known.problems:
            self._index.add(agent)  # same configuration (a comment or layout changed)
            self._files[path] = _File(read.digest, agent.id)
            await self._retry_parked(agent, read.blob)
            self._live(agent.id, path, read.blob)  # after: it sees the swaps this started
            return "unchanged"
        await self._switch(old, agent, read.blob)
        self._files[path] = _File(read.digest, agent.id)
        self._live(agent.id, path, read.blob)
        self._path_of[agent.id] = path
        self._conflicted.discard(path)
        self._table.set_problems(str(path), ())
        self._table.publish(
            "agent.loaded", {"agent": agent.id, "file": str(path), "blob": read.blob}
        )
        self._changed()
        return "updated" if old is not None else "loaded"

    def _live(self, agent_id: str, path: Path, blob: str | None) -> None:
        """Record that the file's content ``blob`` is what runs now (and ask for its commit);
        while an actor swaps to it make-before-break, the version still serving is kept
        beside it (the state table goes back to it if the swap fails for good)."""
        if blob is None:
            return
        live = self._table.version(agent_id)
        if live is not None and live.blob == blob and live.rejected is None:
            return
        previous = None
        if live is not None and self._swapping_to(agent_id, blob):
            previous = replace(live.previous or live, rejected=None, previous=None)
        version = FileVersion(str(path), blob, self._table.clock(), previous=previous)
        self._table.set_version(agent_id, version)
        self._on_version(agent_id, path, blob)

    def _swapping_to(self, agent_id: str, blob: str) -> bool:
        return any(
            a == agent_id and s.swap is not None and s.swap.version == blob
            for (a, _), s in self._table.actors().items()
        )

    def _reject(
        self, path: Path, read: _Read, problems: tuple[Problem, ...], *, conflict: bool = False
    ) -> Outcome:
        known = self._files.get(path)
        agent_id = known.agent_id if known else None
        self._files[path] = _File(read.digest, agent_id, problems)
        live = self._table.version(agent_id) if agent_id is not None else None
        if agent_id is not None and live is not None and live.file == str(path):
            rejected = Rejected(read.blob, tuple(str(p) for p in problems), self._table.clock())
            self._table.set_version(agent_id, replace(live, rejected=rejected))
        if conflict:
            self._conflicted.add(path)
        self._table.set_problems(str(path), problems)
        fields = {"agent": agent_id or path.stem}
        for problem in problems:
            log.error("❌ %s", problem, extra=fields)
        if agent_id is not None and self._path_of.get(agent_id) == path:
            log.warning(
                "⚠️ %s: keeping the last good version of '%s' running", path, agent_id, extra=fields
            )
        self._table.publish(
            "agent.error",
            {
                "agent": agent_id or path.stem,
                "file": str(path),
                "blob": read.blob,
                "problems": [str(p) for p in problems],
            },
        )
        return "error"

    async def _unload(self, path: Path) -> Outcome:
        known = self._files.pop(path, None)
        self._conflicted.discard(path)
        self._table.set_problems(str(path), ())
        if known is None:
            return "absent"
        agent_id = known.agent_id
        if agent_id is None or self._path_of.get(agent_id) != path:
            self._table.publish(
                "agent.removed", {"agent": agent_id or path.stem, "file": str(path)}
            )
            return "removed"
        old = self._index.get(agent_id)
        await self._switch(old, None, None)
        self._index.remove(agent_id)
        self._on_removed(agent_id)
        del self._path_of[agent_id]
        self._table.set_version(agent_id, None)
        log.info("🛑 Removed agent '%s' (%s deleted)", agent_id, path, extra={"agent": agent_id})
        self._table.publish("agent.removed", {"agent": agent_id, "file": str(path)})
        self._changed()
        return "removed"

    def _running_plugins(self, agent: Agent | None) -> dict[str, object]:
        """The actors ``agent`` runs, by name, with the section each runs: its enabled
        plugins, and its MCP servers (``tools.<name>``; an n8n tool needs no actor)."""
        if agent is None or not self._owns(agent.id):
            return {}
        actors: dict[str, object] = {t: agent.plugins[t] for t in agent.enabled_plugins}
        for name, tool in agent.tools.items():
            if tool.kind != "n8n":
                actors[f"{TOOL_ACTOR}{name}"] = tool
        return actors

    def _spec(self, agent: Agent, plugin: str, version: str | None) -> ActorSpec:
        return replace(self._spec_for(agent, plugin), version=version)

    def _overlaps(self, agent: Agent, plugin: str) -> bool:
        """Whether the running actor may stay until one with ``agent``'s section is ready."""
        found = (self._plugins or installed_plugins()).get(plugin)
        serving = self._supervisor.serving((agent.id, plugin))
        if found is None or serving is None or not isinstance(serving.config, PluginConfig):
            return False
        return found.overlaps(serving.config, agent.plugins[plugin])

    async def _replace(self, agent: Agent, plugin: str, version: str | None) -> None:
        """Run the actor ``(agent, plugin)`` with ``agent``'s section from now on:
        make-before-break where its plugin allows it and it is running, else stop and start."""
        spec = self._spec(agent, plugin, version)
        if self._overlaps(agent, plugin) and self._supervisor.swap(spec):
            return
        await self._supervisor.stop(spec.key)
        self._supervisor.start(spec)

    async def _switch(self, old: Agent | None, new: Agent | None, version: str | None) -> None:
        """Move the actors of one agent from ``old`` to ``new`` (either may be None)."""
        agent_id = (new or old).id  # type: ignore[union-attr]
        before, after = self._running_plugins(old), self._running_plugins(new)
        stop = [t for t in before if t not in after]
        restart = [
            t
            for t in before
            if t in after and (before[t] != after[t] or self._is_parked((agent_id, t)))
        ]
        start = [t for t in after if t not in before]
        swap = [
            t
            for t in restart
            if new is not None
            and self._overlaps(new, t)
            and self._supervisor.can_swap((agent_id, t))
        ]
        plain = [t for t in restart if t not in swap]
        await self._supervisor.stop_many((agent_id, t) for t in (*stop, *plain))
        for t in stop:
            self._table.forget((agent_id, t))
        if new is not None:
            self._index.add(new)  # before starting: new actors read the new configuration
            self._on_change(agent_id)
            for t in swap:
                await self._replace(new, t, version)
            for t in (*plain, *start):
                self._supervisor.start(self._spec(new, t, version))
            kept = [t for t in after if t not in restart and t not in start]
            fields = {"agent": agent_id}
            if old is None:
                log.info(
                    "✅ Loaded agent '%s' (%s) from %s%s",
                    agent_id,
                    new.name,
                    new.file,
                    f": starting {', '.join(start)}" if start else "",
                    extra=fields,
                )
            else:
                parts = [
                    f"{verb} {', '.join(ts)}"
                    for verb, ts in (
                        ("swapping (make-before-break)", swap),
                        ("restarting", plain),
                        ("starting", start),
                        ("stopped", stop),
                        ("kept", kept),
                    )
                    if ts
                ]
                log.info(
                    "🔄 Updated agent '%s'%s",
                    agent_id,
                    f": {'; '.join(parts)}" if parts else "",
                    extra=fields,
                )

    def _is_parked(self, key: tuple[str, str]) -> bool:
        """Failed for good: the actor, or the newer version that was to replace it."""
        status = self._table.get(key)
        if status is None:
            return False
        swap = status.swap
        return status.state == ActorState.FAILED or (
            swap is not None and swap.state == ActorState.FAILED
        )

    async def _retry_parked(self, agent: Agent, version: str | None) -> None:
        """A changed file gives its parked actors another chance, even if their section is
        unchanged (the fix may have been elsewhere, a key in keys/, say)."""
        parked = [t for t in self._running_plugins(agent) if self._is_parked((agent.id, t))]
        for t in parked:
            await self._replace(agent, t, version)

    async def _retry_conflicts(self, applied_before: int) -> None:
        """Files refused for a clash with another file may load once something changed."""
        if self.applied == applied_before:
            return
        for path in sorted(self._conflicted):
            self._conflicted.discard(path)
            await self._apply(path, self._read(path), force=True)

    def _changed(self) -> None:
        self.applied += 1
        self._default.invalidate()
