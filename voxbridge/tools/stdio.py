"""An MCP server as a child process: newline-delimited JSON-RPC over its stdin and stdout.

The messages are the SDK's (``mcp_types`` parses and writes them; ``ClientSession`` drives
them); the pipes are handled here rather than by the SDK's ``stdio_client`` for what an
untrusted server could otherwise do to the whole process:

* a line is read into a buffer capped at :data:`MAX_MESSAGE` bytes — the SDK's reader joins
  strings chunk by chunk, so one endless line costs quadratic time and unbounded memory on
  the thread every agent shares;
* the server starts under :mod:`~voxbridge.tools.leash`, which makes its whole process group
  die with voxbridge, even when voxbridge is SIGKILLed;
* it inherits only a few harmless variables (``PATH``, ``HOME``, ``LANG``...) plus its own
  ``env``: voxbridge's environment (a ``VOXBRIDGE_KEY``...) never reaches it;
* its stderr is drained into a short tail (for "why it cannot start"), never logged as is.

Stopping follows MCP's lifecycle: stdin closed, a moment to exit, then the process group gets
SIGTERM and, if anything is left, SIGKILL (the SDK's tree terminator).
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import mcp_types
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

from ..errors import ToolServerError

__all__ = ["INHERITED", "INVALID_LIMIT", "LEASH", "MAX_MESSAGE", "Pipes", "spawn"]

log = logging.getLogger("voxbridge.tools")

MAX_MESSAGE = 4 << 20
"""Bytes in one message from a server, at most (a result is cut to 16 KB for the LLM anyway)."""
INVALID_LIMIT = 100
"""Lines that are not JSON-RPC a server may write before its connection is dropped."""
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR")
"""voxbridge's environment variables a server sees, beside its own ``env``."""
LEASH = Path(__file__).with_name("leash.py")
EXIT_WAIT = 1.0  # seconds a server gets to exit on its own once its stdin is closed
TERM_WAIT = 2.0  # then SIGTERM; SIGKILL for what is left after this
_TAIL = 8  # stderr lines kept
_CHUNK = 65536


class Pipes:
    """A running server's pipes as the SDK's message streams, and why they ended."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.read: MemoryObjectReceiveStream[SessionMessage | Exception]
        self.write: MemoryObjectSendStream[SessionMessage]
        self._to_session, self.read = anyio.create_memory_object_stream[SessionMessage | Exception](
            0
        )
        self.write, self._from_session = anyio.create_memory_object_stream[SessionMessage](0)
        self.stderr: collections.deque[str] = collections.deque(maxlen=_TAIL)
        self.invalid = 0
        """Lines that were not JSON-RPC messages."""

    def close(self) -> None:
        """Close every stream end (whichever the session did not)."""
        for stream in (self.read, self.write, self._to_session, self._from_session):
            stream.close()

    def explain(self) -> str:
        """Why the server stopped talking: its exit status and the last lines of its stderr
        (which may quote anything it knows: redact before showing)."""
        code = self.process.poll()
        why = "the server exited" if code is not None else "the server closed its output"
        if code is not None and code != 0:
            why += f" with status {code}"
        if "cannot start" in " ".join(self.stderr):
            why = "the command cannot be started"
        return f"{why}: {' | '.join(self.stderr)}" if self.stderr else why

    async def pump_out(self) -> None:
        """Server stdout → the session, a line at a time, each at most MAX_MESSAGE bytes.

        Raises:
            ToolServerError: a line over the limit (the connection is dropped).
        """
        stdout = self.process.stdout
        assert stdout is not None
        buffer = bytearray()
        async with self._to_session:
            while chunk := await stdout.receive_some(_CHUNK):
                start = 0
                while (end := chunk.find(b"\n", start)) >= 0:
                    buffer += chunk[start:end]
                    start = end + 1
                    line, buffer = bytes(buffer), bytearray()
                    if line.strip():
                        await self._deliver(line)
                buffer += chunk[start:]
                if len(buffer) > MAX_MESSAGE:
                    raise ToolServerError(
                        f"the server sent a message over {MAX_MESSAGE >> 20} MiB; dropped it"
                    )
            with trio.move_on_after(EXIT_WAIT):  # its exit status, for why it stopped
                await self.process.wait()

    async def _deliver(self, line: bytes) -> None:
        if len(line) > MAX_MESSAGE:
            raise ToolServerError(f"the server sent a message over {MAX_MESSAGE >> 20} MiB")
        try:
            message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
        except ValueError:
            self.invalid += 1  # its content is the server's: not logged (it may hold anything)
            if self.invalid > INVALID_LIMIT:
                raise ToolServerError(
                    f"the server wrote over {INVALID_LIMIT} lines that are not JSON-RPC"
                ) from None
            return
        await self._to_session.send(SessionMessage(message))

    async def pump_in(self) -> None:
        """The session's messages → server stdin."""
        stdin = self.process.stdin
        assert stdin is not None
        async with self._from_session:
            async for item in self._from_session:
                data = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await stdin.send_all(data.encode() + b"\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the server is gone: its stdout's end says so (and why)

    async def pump_err(self) -> None:
        """Server stderr → a short tail (bounded whatever it writes)."""
        stderr = self.process.stderr
        assert stderr is not None
        partial = b""
        while chunk := await stderr.receive_some(_CHUNK):
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()[-300:]
            for line in lines:
                text = line.decode("utf-8", "replace").strip()
                if text:
                    self.stderr.append(text[:300])


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """What a server's environment holds: a few of voxbridge's variables, then its own."""
    inherited = {k: os.environ[k] for k in INHERITED if k in os.environ}
    return {**inherited, "PYTHONUNBUFFERED": "1", **env}


@asynccontextmanager
async def spawn(
    command: Sequence[str], env: Mapping[str, str], cwd: str | None
) -> AsyncIterator[Pipes]:
    """Start ``command`` under the leash and pump its pipes while the block runs; stop it
    (stdin closed, then TERM, then KILL to its group) when the block ends.

    Raises:
        ToolServerError: it cannot be started (no such program, a bad ``cwd``), or its
            output broke the rules (a message over the limit).

    Cancellation: the process is stopped all the same, within a bounded time.
    """
    argv = [sys.executable, "-I", "-S", str(LEASH), str(os.getpid()), "--", *command]
    try:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        if cwd is not None and exc.filename == cwd:
            raise ToolServerError(f"cwd {cwd}: {exc.strerror}") from None
        raise ToolServerError(f"cannot start it ({exc.strerror})") from None
    pipes = Pipes(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipes.pump_err)
            nursery.start_soon(pipes.pump_in)
            nursery.start_soon(pipes.pump_out)
            try:
                yield pipes
            finally:
                nursery.cancel_scope.cancel()
    finally:
        pipes.close()
        with trio.CancelScope(shield=True):
            await stop(process)


async def stop(process: trio.Process) -> None:
    """Close the server's stdin, give it a moment, then TERM and KILL its process group."""
    if process.stdin is not None:
        with trio.move_on_after(0.1):
            await process.stdin.aclose()
    with trio.move_on_after(EXIT_WAIT):
        await process.wait()
    # The leash leads the group: its pid is the group id. Its children (the server, what the
    # server started) may outlive it, so the group is signalled even when it has exited.
    await terminate_posix_process_tree(process, TERM_WAIT)  # type: ignore[arg-type]
    with trio.move_on_after(TERM_WAIT):
        await process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            await pipe.aclose()
