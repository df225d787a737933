"""Which version of each agent file is live: its git blob id, its commit, and a rejected one.

The blob id is git's own content hash (``sha1(b"blob <size>\\0" + content)``), computed here so
it is there with or without git and matches ``git hash-object`` / ``git ls-files -s``. The commit
is asked of ``git`` itself, only when ``agents.d`` is inside a work tree, only for a file whose
live content is the one committed at ``HEAD`` (a clean file), and once per applied change — the
status server reads the answer from the state table, never runs git per request (except for a
``--wait-for`` question naming a commit, which has to look inside that commit).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .state import StateTable

__all__ = ["CommitTracker", "FileVersion", "Git", "Rejected", "blob_id", "is_version"]

log = logging.getLogger("voxbridge.version")

_HEX = re.compile(r"^[0-9a-f]{4,40}$")
_GIT_TIMEOUT = 10.0
HEAD_POLL = 10.0  # seconds between looks at HEAD: a commit of an unchanged file shows this late


def blob_id(data: bytes) -> str:
    """Git's blob id of ``data`` (what ``git hash-object`` prints for a file holding it)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Rejected:
    """A newer version of the file that did not load; the live one keeps running."""

    blob: str | None  # None: the file could not even be read (a broken symlink, say)
    errors: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class FileVersion:
    """The live version of one agent's file. Times are wall-clock seconds since the epoch.

    ``previous`` is the version still serving while an actor swaps to this one
    make-before-break: if the swap fails for good, the agent goes back to it (with this one
    as ``rejected``), because that is what runs.
    """

    file: str
    blob: str
    applied_at: float
    commit: str | None = None  # set once git has answered, for a clean file in a work tree
    rejected: Rejected | None = None
    previous: FileVersion | None = None

    def as_dict(self) -> dict[str, Any]:
        rejected = self.rejected
        return {
            "blob": self.blob,
            "commit": self.commit,
            "applied_at": self.applied_at,
            "rejected": None
            if rejected is None
            else {"blob": rejected.blob, "errors": list(rejected.errors), "at": rejected.at},
        }


def is_version(text: str) -> bool:
    """Whether ``text`` can name a blob or a commit (4 to 40 hex digits)."""
    return bool(_HEX.match(text))


class Git:
    """``git`` asked about one directory. Every method blocks: run it in a worker thread.

    Nothing here raises: without git, outside a work tree, or on any git error the answer is
    None (the blob id alone is still known).
    """

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._exe = shutil.which("git")
        self._in_work_tree: bool | None = None

    def _git(self, *args: str) -> str | None:
        if self._exe is None:
            return None
        # GIT_* from the environment (GIT_DIR, GIT_INDEX_FILE) would point elsewhere.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env["GIT_OPTIONAL_LOCKS"] = "0"  # a status query must not take the index lock
        try:
            done = subprocess.run(
                [self._exe, "-C", str(self._dir), *args],
                capture_output=True,
                env=env,
                timeout=_GIT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("git %s: %s", args[0], exc)
            return None
        if done.returncode != 0:
            return None
        return done.stdout.decode("utf-8", "replace")

    def refresh(self) -> None:
        """Ask again whether the directory is in a work tree (after a ``git init``, say)."""
        self._in_work_tree = None

    def head(self) -> str | None:
        """The commit checked out, if any."""
        if not self.in_work_tree():
            return None
        return (self._git("rev-parse", "--verify", "-q", "HEAD") or "").strip() or None

    def in_work_tree(self) -> bool:
        if self._in_work_tree is None:
            answer = self._git("rev-parse", "--is-inside-work-tree") or ""
            self._in_work_tree = answer.strip() == "true"
        return self._in_work_tree

    def commit_of(self, path: Path, blob: str) -> str | None:
        """The last commit that changed ``path``, if the content ``blob`` is what ``HEAD``
        holds for it (a clean file); else None."""
        if not self.in_work_tree():
            return None
        at_head = (self._git("rev-parse", "--verify", "-q", f"HEAD:./{path.name}") or "").strip()
        if at_head != blob:
            return None  # modified, untracked or ignored: no commit holds this content
        commit = (self._git("log", "-1", "--format=%H", "--", path.name) or "").strip()
        return commit or None

    def resolve_commit(self, rev: str) -> str | None:
        """The full id of the commit ``rev`` names (a hex prefix), or None."""
        if not is_version(rev) or not self.in_work_tree():
            return None
        found = (self._git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}") or "").strip()
        return found or None

    def blobs_at(self, commit: str, names: list[str]) -> dict[str, str]:
        """The blob id of each file of this directory named in ``names`` at ``commit``."""
        out = self._git("ls-tree", "-z", commit, "--", *(f"./{n}" for n in names))
        blobs: dict[str, str] = {}
        for entry in (out or "").split("\0"):
            meta, _, name = entry.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "blob":
                blobs[Path(name).name] = parts[2]
        return blobs


class CommitTracker:
    """Fills in the commit of each live version, off the reload path: the reconciler hands it
    every newly applied version (:meth:`request`), and :meth:`run` asks git in a worker thread.
    It also looks at ``HEAD`` every ``head_poll`` seconds and asks again for every agent
    when it moved: committing a file changes its commit without changing its content."""

    def __init__(self, git: Git, table: StateTable, *, head_poll: float = HEAD_POLL) -> None:
        self.git = git
        self._table = table
        self._head_poll = head_poll
        self._send, self._receive = trio.open_memory_channel[tuple[str, Path, str]](math.inf)

    def request(self, agent_id: str, path: Path, blob: str) -> None:
        self._send.send_nowait((agent_id, path, blob))

    async def run(self) -> None:
        """Answer requests until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_head)
            async for agent_id, path, blob in self._receive:
                commit = await trio.to_thread.run_sync(self.git.commit_of, path, blob)
                live = self._table.version(agent_id)
                if live is not None and live.blob == blob and live.commit != commit:
                    found = replace(live, commit=commit)
                    self._table.set_version(agent_id, found)
                    self._table.publish("agent.version", {"agent": agent_id, **found.as_dict()})

    async def _watch_head(self) -> None:
        seen: object = object()  # the first look asks for whatever is live already
        while True:
            head = await trio.to_thread.run_sync(self.git.head)
            if head != seen:
                seen = head
                for agent_id, live in list(self._table.versions().items()):
                    self.request(agent_id, Path(live.file), live.blob)
            await trio.sleep(self._head_poll)
