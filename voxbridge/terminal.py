"""``voxbridge chat AGENT``: talk to an agent from the terminal, in-process (no ``run`` needed).

It loads and decrypts the agent's file, streams each answer to stdout as it arrives and goes
on with a stored conversation (``--conversation NAME``, default ``default``: the same memory a
running instance uses, in ``--state-dir`` or ``--store``). Ctrl-D leaves; Ctrl-C stops the
answer in flight (at the prompt, a second Ctrl-C leaves). ``--once TEXT`` answers one message
and exits (scripts, CI). With stdin not a terminal, every line read is a message and only the
answers are printed. The exit code is 1 when any message went unanswered (the brain failed, or
the text was not UTF-8), so scripts can tell.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx
import trio

from .brain import Answer, Message, N8nClient, Ready, Think, Toolbox, ToolUse, Turn, think
from .brain.text import invalid_unicode
from .config.load import agent_files, load_agent_file
from .config.model import Agent
from .errors import BrainError, UsageError
from .memory import AgentMemory, Conversation, Location, MemoryService
from .secrets.keys import load_keyring
from .tools.local import open_toolbox

__all__ = ["find_agent", "local_memory", "local_think", "n8n_of", "run_chat"]

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


def local_memory(agent: Agent, location: Location | None, http: httpx.AsyncClient) -> MemoryService:
    """Memory for a command that talks to one agent in-process (chat, talk): the same store a
    running instance uses. Run it (``nursery.start``) and ``settle`` it before leaving."""
    return MemoryService(location, agents=lambda: {agent.id: agent}, http=lambda: http)


def local_think(
    agent: Agent,
    http: httpx.AsyncClient,
    memory: AgentMemory,
    tools: Callable[[], Toolbox | None] = lambda: None,
) -> Think:
    """The agent's brain for an in-process command: what a runtime's ``ctx.think`` does (what
    is remembered of the person recalled into the answer; ``tools`` gives each answer the
    agent's tools, see :func:`voxbridge.tools.local.open_toolbox`), without a runtime."""

    @contextlib.asynccontextmanager
    async def answer(
        message: Message, history: Sequence[Turn], *, stored: Ready | None = None
    ) -> AsyncIterator[Answer]:
        facts = await memory.recall(message.person, message.text)
        async with think(
            agent,
            message,
            history,
            http=http,
            n8n=n8n_of(agent, http),
            logger=log,
            facts=facts,
            before_first=stored,
            tools=tools(),
        ) as stream:
            yield stream

    return answer


@dataclass
class _Terminal:
    agent: Agent
    http: httpx.AsyncClient
    out: TextIO
    tty: bool
    memory: AgentMemory
    conversation: Conversation
    tools: Callable[[], Toolbox | None] = lambda: None
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
        user = getpass.getuser()
        person = f"terminal:{user}"
        exchange = self.conversation.ask(text, person=person, name=user)
        message = Message(self.conversation.place, user, user, text, person=person)
        turns = exchange.context(self.agent.history)
        if self.tty:
            self.write(f"{self.agent.name} › ")
        said, complete, failure = "", False, None
        with trio.CancelScope() as scope:
            self.answering = scope
            try:
                think = local_think(self.agent, self.http, self.memory, self.tools)
                async with think(message, turns, stored=exchange.stored) as answer:
                    held = ""  # whitespace at the end waits for more text: none trails
                    try:
                        async for delta in answer.events():
                            if isinstance(delta, ToolUse):
                                self.show_tool(delta)
                                continue
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
                cut = not complete and bool(said.strip() or scope.cancel_called)
                exchange.answered(said, cut=cut)
        if scope.cancelled_caught:
            self.write(" [stopped]\n" if said else "[stopped]\n")
            return True
        if said:
            self.write("\n")
        if failure is not None:
            print(f"❌ {failure}", file=sys.stderr, flush=True)
            return False
        return True

    def show_tool(self, use: ToolUse) -> None:
        """A tool at work: inline before the answer at a terminal, a line on stderr else
        (stdout keeps only answers, for scripts)."""
        if use.state == "done":
            return
        what = f"🔧 {use.name}{'…' if use.state == 'start' else ' failed'}"
        if self.tty:
            self.write(f"[{what}] ")
        else:
            print(what, file=sys.stderr, flush=True)

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


CONVERSATION_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SETTLE = 30.0  # seconds, at most, for learning and writes to finish before leaving


async def _main(agent: Agent, once: str | None, name: str, location: Location | None) -> int:
    tty = sys.stdin.isatty() and sys.stdout.isatty() and once is None
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as http,
        open_toolbox(agent, http) as tools,
    ):
        memory = local_memory(agent, location, http)
        ok = True
        async with trio.open_nursery() as nursery:
            await nursery.start(memory.run)
            await memory.ready()
            own = memory.of(agent.id)
            conversation = await own.conversation(f"terminal:{name}")
            term = _Terminal(agent, http, sys.stdout, tty, own, conversation, tools)
            nursery.start_soon(term.watch_signals, nursery.cancel_scope)
            if once is not None:
                ok = await term.answer(once)
            else:
                if tty:
                    earlier = len(conversation.turns)
                    going_on = f", going on after {earlier} turns" if earlier else ""
                    term.write(
                        f"💬 {agent.name} — conversation '{name}'{going_on} "
                        "(--conversation NAME for another); Ctrl-D leaves, Ctrl-C stops an "
                        "answer\n"
                    )
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
            with trio.move_on_after(SETTLE):
                await memory.settle()
            nursery.cancel_scope.cancel()
    return 0 if ok else 1


def run_chat(
    agents_dir: Path,
    keys_dir: Path,
    wanted: str,
    once: str | None,
    *,
    conversation: str = "default",
    location: Location | None = None,
) -> int:
    """Load the agent, then chat until stdin ends; returns the exit code (1: a message went
    unanswered).

    Raises:
        UsageError, ConfigError: the agent cannot be found or loaded, or ``conversation`` is
            not a name (1 to 64 of letters, digits and ``_.@-``).
    """
    if not CONVERSATION_NAME.match(conversation):
        raise UsageError(
            f"--conversation {conversation!r}: use 1 to 64 letters, digits and _ . @ -"
        )
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
    return trio.run(_main, agent, once, conversation, location)
