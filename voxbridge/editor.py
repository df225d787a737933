"""``voxbridge edit``: change an encrypted agent file in your editor, as if it were plaintext.

The decrypted copy lives in a private directory (0700, in RAM under /dev/shm where there is one)
and is removed whatever happens: a clean exit, an editor crash, Ctrl-C or SIGTERM. Only SIGKILL
(or a power cut of a disk-backed temp dir) leaves it behind; the directory's name carries the
process id, so the next ``edit`` or ``check`` finds copies whose process is gone and removes
them (:func:`remove_stale_copies`). Values the
editor left alone keep their ciphertext, so the git diff shows only what was edited. The result
is validated before it is written; an invalid one is offered back for fixing, never written.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import stat
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

__all__ = ["edit_file", "remove_stale_copies", "report_stale_copies"]

_PREFIX = "voxbridge-edit-"


class _Interrupted(VoxbridgeError):
    """The edit was interrupted by a signal; nothing was written."""

    exit_code = 130


def _ram_bases() -> list[str]:
    # RAM-backed first: the plaintext copy should never reach a disk.
    bases = (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm")  # noqa: S108
    return [b for b in bases if b and os.path.isdir(b) and os.access(b, os.W_OK | os.X_OK)]


def _private_dir() -> str:
    # mkdtemp makes it 0700; the pid in the name is how a later run knows it is orphaned.
    prefix = f"{_PREFIX}{os.getpid()}-"
    for base in _ram_bases():
        return tempfile.mkdtemp(prefix=prefix, dir=base)
    return tempfile.mkdtemp(prefix=prefix)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_copies() -> list[Path]:
    """Remove the decrypted copies left by ``edit`` runs that were killed (SIGKILL), i.e. our
    own ``voxbridge-edit-<pid>-*`` directories whose process is gone; returns them.

    A directory whose process still runs is an edit in progress and is left alone; a reused
    pid errs on that side too.
    """
    removed: list[Path] = []
    for base in dict.fromkeys([*_ram_bases(), tempfile.gettempdir()]):
        try:
            entries = list(os.scandir(base))
        except OSError:
            continue
        for entry in entries:
            pid_text = entry.name.removeprefix(_PREFIX).partition("-")[0]
            if not entry.name.startswith(_PREFIX) or not pid_text.isdigit():
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or _alive(int(pid_text)):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.lexists(entry.path):
                removed.append(Path(entry.path))
    return removed


def report_stale_copies(out: TextIO | None = None) -> None:
    """:func:`remove_stale_copies`, saying what was removed (on stderr by default)."""
    for path in remove_stale_copies():
        print(
            f"voxbridge: removed {path}: a decrypted copy left by a `voxbridge edit` that was "
            "killed (its process is gone)",
            file=out or sys.stderr,
        )


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
    report_stale_copies(out)
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
