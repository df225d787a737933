"""``voxbridge edit``: change an encrypted agent file in your editor, as if it were plaintext.

The decrypted copy lives in a private directory (0700, in RAM under /dev/shm where there is one)
and is removed whatever happens: a clean exit, an editor crash, Ctrl-C or SIGTERM. Values the
editor left alone keep their ciphertext, so the git diff shows only what was edited. The result
is validated before it is written; an invalid one is offered back for fixing, never written.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import TextIO

from .atomicfile import write_atomic
from .config.load import parse_agent, read_agent_text
from .errors import ConfigError, UsageError, VoxbridgeError
from .secrets.inplace import reseal_text, reveal_text
from .secrets.keys import current_public_key, load_keyring

__all__ = ["edit_file"]


class _Interrupted(VoxbridgeError):
    """The edit was interrupted by a signal; nothing was written."""

    exit_code = 130


def _private_dir() -> str:
    # RAM-backed first: the plaintext copy should never reach a disk. mkdtemp makes it 0700.
    for base in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):  # noqa: S108
        if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            return tempfile.mkdtemp(prefix="voxbridge-edit-", dir=base)
    return tempfile.mkdtemp(prefix="voxbridge-edit-")


def _editor_command(environ: Mapping[str, str], file: str) -> list[str]:
    editor = environ.get("VISUAL") or environ.get("EDITOR") or "vi"
    return [*shlex.split(editor), file]


def _run_editor(cmd: list[str]) -> int:
    """Run the editor; a Ctrl-C meant for it must not kill us before we clean up."""
    got: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    # A Python handler (unlike SIG_IGN) is reset to the default in the child on exec.
    previous = signal.signal(signal.SIGINT, note)
    try:
        proc = subprocess.Popen(cmd)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    except FileNotFoundError:
        raise UsageError(f"editor not found: {cmd[0]} (set $VISUAL or $EDITOR)") from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if got:
        raise _Interrupted("interrupted: nothing written")
    return code


def edit_file(
    path: Path,
    keys_dir: Path,
    *,
    environ: Mapping[str, str] | None = None,
    ask: Callable[[str], str] = input,
    out: TextIO | None = None,
) -> int:
    """Edit ``path`` decrypted; returns the process exit code.

    Raises:
        UsageError: the file is missing or the editor cannot be started.
        KeysError: no key to decrypt or encrypt with.
        ConfigError: the file's secrets do not open.
    """
    out = out or sys.stderr
    env = os.environ if environ is None else environ
    shown = str(path)
    if not path.is_file():
        raise UsageError(f"{shown}: no such file")
    keyring = load_keyring(keys_dir)
    public = current_public_key(keys_dir)
    original = read_agent_text(path, shown)
    before = reveal_text(original, shown, keyring)
    workdir = _private_dir()

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(f"stopped by signal {signum}: nothing written")

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        copy = Path(workdir) / path.name
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(before.text)
        while True:
            code = _run_editor(_editor_command(env, str(copy)))
            if code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                print(f"voxbridge: the editor {how}; {shown} unchanged", file=out)
                return 1
            edited = copy.read_text("utf-8")
            if edited == before.text:
                print(f"{shown}: no changes", file=out)
                return 0
            try:
                parse_agent(edited, shown, path.stem, keyring, allow_plaintext_secrets=True)
                result, fresh = reseal_text(edited, shown, public, before)
            except ConfigError as exc:
                for problem in exc.problems:
                    print(problem, file=out)
                try:
                    answer = ask(f"✗ {shown} not saved. Edit again (e) or discard (d)? [e] ")
                except EOFError:
                    answer = "d"
                if answer.strip().lower() in ("d", "discard", "q", "n"):
                    print(f"{shown} unchanged", file=out)
                    return exc.exit_code
                continue
            write_atomic(path, result)
            print(f"✓ {shown} saved ({fresh} value(s) encrypted afresh)", file=out)
            return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
