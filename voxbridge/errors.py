"""The exceptions voxbridge raises, one flat tree under a single root.

    VoxbridgeError                  exit 1 unless said otherwise
    ├── UsageError                  exit 2   a command was called wrongly
    ├── ConfigError                 exit 78  one or more problems in agent files (see Problem)
    ├── KeysError                   exit 78  a key is missing, unreadable or malformed
    │   └── KeyPermissionError      exit 77  a private key is readable by group or others
    ├── DecryptError                exit 78  an ENC value does not open (altered, moved, wrong key)
    ├── WriteError                  exit 1   a file could not be replaced (disk full...): unchanged
    ├── ListenError                 exit 69  the status server cannot listen on its address
    ├── StoreError                  exit 1   the memory store cannot be opened or reached
    │   └── StateDirBusy            exit 75  another voxbridge runs on the same state directory
    ├── PermanentFailure            (actors) retrying cannot fix it: parked until the file changes
    ├── BrainError                  (actors) the LLM or n8n could not answer one message
    └── ToolServerError             (actors) a tool server cannot start, or broke its protocol

Exit codes follow sysexits(3), as the command line promises (SPEC §5). Messages are meant for
people: they name the file (and line and column where there is one), what was found, and what to
do. They never contain a secret value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "BrainError",
    "ConfigError",
    "DecryptError",
    "KeyPermissionError",
    "KeysError",
    "ListenError",
    "PermanentFailure",
    "Problem",
    "StateDirBusy",
    "StoreError",
    "ToolServerError",
    "UsageError",
    "VoxbridgeError",
    "WriteError",
]

EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class VoxbridgeError(Exception):
    """Root of every error voxbridge raises on purpose."""

    exit_code = 1


class UsageError(VoxbridgeError):
    """Raised when a command is called with arguments that cannot work (a missing file, say)."""

    exit_code = EX_USAGE


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one agent file, located as precisely as the file allows.

    ``line`` and ``column`` are 1-based; 0 means "the file as a whole". ``path`` is the dotted
    field path (``plugins.discord.bot_token``), empty for problems of the whole document.
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ConfigError(VoxbridgeError):
    """Raised when agent files do not load; carries every problem found, not just the first."""

    exit_code = EX_CONFIG

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class KeysError(VoxbridgeError):
    """Raised when a key file or key variable is missing, unreadable or not an X25519 key."""

    exit_code = EX_CONFIG


class KeyPermissionError(KeysError):
    """Raised when a private key file can be read by group or others (refused, like ssh does)."""

    exit_code = EX_NOPERM


class DecryptError(VoxbridgeError):
    """Raised when an ENC value cannot be opened: altered, truncated, moved to another field,
    or sealed for a key this host does not hold. The message never includes the value."""

    exit_code = EX_CONFIG


class WriteError(VoxbridgeError):
    """Raised when a file cannot be replaced (disk full, read-only directory); the original
    file is left exactly as it was."""


class ListenError(VoxbridgeError):
    """Raised when ``voxbridge run`` cannot listen on its status server's address: the port is
    taken (a second ``voxbridge run``?), the address is not one of this host's, or the port
    needs privileges. Nothing has started; the message names the address and ``--listen``."""

    exit_code = EX_UNAVAILABLE


class StoreError(VoxbridgeError):
    """Raised when the memory store cannot be opened or reached (a database URL that does not
    parse, a state directory that cannot be written, a driver that is missing). Once the
    runtime runs, a store that fails is not an error but *degraded*: agents keep answering."""


class StateDirBusy(StoreError):
    """Raised when another voxbridge process already runs on the same ``--state-dir``: two
    would write one memory and one set of selections. Try again once it has stopped."""

    exit_code = EX_TEMPFAIL


class PermanentFailure(VoxbridgeError):
    """Raised by a plugin actor for a failure that retrying cannot fix (an invalid token, a
    configuration the service refuses). The supervisor parks the actor in ``failed`` without
    retrying until the agent's file changes. The message is shown to operators: no secrets."""


class BrainError(VoxbridgeError):
    """Raised when an agent's brain (its LLM endpoint or n8n workflow) cannot answer a message
    after its retries. The user gets a short apology; the operator gets this message (which
    never quotes a secret: no keys, no webhook URLs)."""


class ToolServerError(VoxbridgeError):
    """A tool server (an MCP server, an n8n workflow) cannot be started or reached, or broke
    the protocol (a message over the size limit, a flood of invalid lines). Its actor is
    restarted with backoff; the agent answers on without that server's tools."""
