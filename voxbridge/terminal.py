"""``voxbridge chat AGENT``: talk to an agent from the terminal, in-process (no ``run`` needed).

It loads and decrypts the agent's file, streams each answer to stdout as it arrives and keeps
the conversation's history. Ctrl-D leaves; Ctrl-C stops the answer in flight (at the prompt, a
second Ctrl-C leaves). ``--once TEXT`` answers one message and exits (scripts, CI). With stdin
not a terminal, every line read is a message and only the answers are printed. The exit code is
1 when any message went unanswered (the brain failed, or the text was not UTF-8), so scripts can
tell.
"""

from __future__ import annotations

import getpass
import io
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx
import trio

from .brain import Conversation, Message, N8nClient, think
from .brain.text import invalid_unicode
from .config.load import agent_files, load_agent_file
from .config.model import Agent
from .errors import BrainError, UsageError
from .secrets.keys import load_keyring

__all__ = ["find_agent", "n8n_of", "run_chat"]

log = logging.getLogger("voxbridge.chat")


def find_agent(agents_dir: Path, keys_dir: Path, wanted: str) -> Agent:
    """The agent called ``wanted`` (its id, or its name ignoring case), loaded and decrypted.

    Raises:
        UsageError: no such agent.
        ConfigError: its file does not load (every problem, located).
    """
    files = agent_files(agents_dir) if agents_dir.is_dir() else []
    by_id = {p.stem: p for p in files}
    keyring = load_keyring(keys_dir)
    if wanted in by_id:
        return load_agent_file(by_id[wanted], keyring)
    for path in files:  # a name: only files that load can be asked for theirs
        try:
            agent = load_agent_file(path, keyring)
        except Exception:  # noqa: S112 - a broken other file is not this command's business
            continue
        if agent.name.casefold() == wanted.casefold():
            return agent
    known = ", ".join(sorted(by_id)) or f"none: is {agents_dir} the right --agents-dir?"
    raise UsageError(f"no agent '{wanted}' in {agents_dir}/ (agents: {known})")


def n8n_of(agent: Agent, http: httpx.AsyncClient) -> N8nClient | None:
    """A client for the agent's n8n workflow, when it has one (without a runtime, nothing
    provides it)."""
    section = agent.plugins.get("n8n")
    if section is None or not section.enabled:
        return None
    return N8nClient.from_settings(http, section.settings)


@dataclass
class _Terminal:
    agent: Agent
    http: httpx.AsyncClient
    out: TextIO
    tty: bool
    conversation: Conversation = field(default_factory=Conversation)
    answering: trio.CancelScope | None = None
    interrupted_at_prompt: bool = False

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    async def answer(self, text: str) -> bool:
        """Stream the answer to ``text``; False if the brain failed or ``text`` is not text."""
        problem = invalid_unicode(text)
        if problem is not None:
            print(
                f"❌ not sent: {problem} (is the terminal's or the file's encoding UTF-8?)",
                file=sys.stderr,
                flush=True,
            )
            return False
        message = Message(f"terminal:{os.getpid()}", getpass.getuser(), getpass.getuser(), text)
        turns = self.conversation.context(self.agent.history, text)
        if self.tty:
            self.write(f"{self.agent.name} › ")
        said, complete, failure = "", False, None
        with trio.CancelScope() as scope:
            self.answering = scope
            try:
                async with think(
                    self.agent,
                    message,
                    turns,
                    http=self.http,
                    n8n=n8n_of(self.agent, self.http),
                    logger=log,
                ) as answer:
                    held = ""  # whitespace at the end waits for more text: none trails
                    try:
                        async for delta in answer:
                            piece = held + (delta if said else delta.lstrip())
                            shown = piece.rstrip()
                            self.write(shown)
                            held = piece[len(shown) :]
                            said = answer.text
                        complete = True
                    except BrainError as exc:
                        failure = exc
            finally:
                self.answering = None
        if said.strip() or scope.cancelled_caught:
            self.conversation.record(text, said, cut=not complete)
        if scope.cancelled_caught:
            self.write(" [stopped]\n" if said else "[stopped]\n")
            return True
        if said:
            self.write("\n")
        if failure is not None:
            print(f"❌ {failure}", file=sys.stderr, flush=True)
            return False
        return True

    async def watch_signals(self, done: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if signum == signal.SIGTERM:
                    done.cancel()
                elif self.answering is not None:
                    self.answering.cancel()
                elif self.interrupted_at_prompt or not self.tty:
                    done.cancel()
                else:
                    self.interrupted_at_prompt = True
                    self.write("\n(Ctrl-C again or Ctrl-D to leave)\n")


def _read_line(prompt: str | None) -> str | None:
    if prompt is not None:
        try:
            return input(prompt)
        except EOFError:
            return None
    line = sys.stdin.readline()
    return line.rstrip("\n") if line else None


async def _main(agent: Agent, once: str | None) -> int:
    tty = sys.stdin.isatty() and sys.stdout.isatty() and once is None
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as http:
        term = _Terminal(agent, http, sys.stdout, tty)
        ok = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(term.watch_signals, nursery.cancel_scope)
            if once is not None:
                ok = await term.answer(once)
                nursery.cancel_scope.cancel()
                return 0 if ok else 1
            if tty:
                term.write(f"💬 {agent.name} — Ctrl-D leaves, Ctrl-C stops an answer\n")
            while True:
                line = await trio.to_thread.run_sync(
                    _read_line, "you › " if tty else None, abandon_on_cancel=True
                )
                if line is None:
                    break
                term.interrupted_at_prompt = False
                if line.strip():
                    ok = await term.answer(line.strip()) and ok
            if tty:
                term.write("\n")
            nursery.cancel_scope.cancel()
    return 0 if ok else 1


def run_chat(agents_dir: Path, keys_dir: Path, wanted: str, once: str | None) -> int:
    """Load the agent, then chat until stdin ends; returns the exit code (1: a message went
    unanswered).

    Raises:
        UsageError, ConfigError: the agent cannot be found or loaded.
    """
    agent = find_agent(agents_dir, keys_dir, wanted)
    if agent.llm is None and "n8n" not in agent.enabled_plugins:
        raise UsageError(
            f"agent '{agent.id}' has no brain to chat with: give {agent.file} an llm section "
            "or an enabled n8n plugin"
        )
    # Bytes that are not UTF-8 must reach answer()'s check, not kill the reading thread;
    # an answer must not die on a terminal that cannot show a character either.
    for stream, errors in ((sys.stdin, "surrogateescape"), (sys.stdout, "replace")):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors=errors)
    return trio.run(_main, agent, once)
