"""The leash: a stdio tool server's first process, which makes it die with voxbridge.

Run as ``python -I -S leash.py VOXBRIDGE_PID -- COMMAND...`` (standard library only, so it
starts in milliseconds without site-packages). voxbridge starts it in a new session, so the
leash leads the server's process group; the leash starts the server as its child (stdin,
stdout and stderr passed through untouched) and waits for either of two things:

* the server exits: the rest of the group (whatever the server started) gets SIGTERM, then
  SIGKILL, and the leash exits with the server's status;
* voxbridge is gone — even SIGKILLed, when nothing of it runs any more: the whole group gets
  SIGKILL at once.

Why not ``PR_SET_PDEATHSIG`` alone: that signal follows the *thread* that forked the child, and
Trio starts processes from worker threads that exit after 10 s idle, so it would kill healthy
servers; and it reaches the direct child only, not the ``npx``/``uvx`` grandchildren a server
command often is. A pidfd on voxbridge sees the process end, whatever thread started us.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time

GRACE = 2.0  # seconds the group gets between SIGTERM and SIGKILL once the server exited


def _kill_group(sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(0, sig)


def _others() -> bool:
    """Whether any live process but this one is in our group (read from /proc)."""
    me, group = os.getpid(), os.getpgid(0)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == group:
            return True
    return False


def _watch(parent: int, child: int) -> int:
    """Wait for the server or voxbridge to end; the server's exit status (or 137)."""
    try:
        parent_fd: int | None = os.pidfd_open(parent)
    except (AttributeError, OSError):
        parent_fd = None  # an old kernel: poll our parent id instead
    child_fd = os.pidfd_open(child) if hasattr(os, "pidfd_open") else None
    poller = select.poll()
    for fd in (parent_fd, child_fd):
        if fd is not None:
            poller.register(fd, select.POLLIN)
    while True:
        if os.getppid() != parent:
            break  # voxbridge is gone (we were handed to init or a subreaper)
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        ready = {fd for fd, _ in poller.poll(1000 if parent_fd is None or child_fd is None else -1)}
        if parent_fd is not None and parent_fd in ready:
            break
    _kill_group(signal.SIGKILL)
    return 137


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: leash.py VOXBRIDGE_PID -- COMMAND...", file=sys.stderr)
        return 2
    parent = int(argv[0])
    if os.getppid() != parent:
        return 137  # voxbridge died before we started: start nothing
    # SIGTERM is for the server (the whole group gets it): we wait for it to act on it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        child = os.fork()
    except OSError as exc:
        print(f"cannot start {argv[2]}: {exc}", file=sys.stderr)
        return 127
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            os.execvp(argv[2], argv[2:])  # noqa: S606 - the agent file's command, no shell
        except OSError as exc:
            print(f"cannot start {argv[2]}: {exc.strerror}", file=sys.stderr)
        os._exit(127)
    # The server alone holds the pipes now: its exit is voxbridge's end of file.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    code = _watch(parent, child)
    if _others():  # what the server started lives on without it: not for long
        _kill_group(signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        while _others() and time.monotonic() < deadline:
            time.sleep(0.02)
        if _others():
            _kill_group(signal.SIGKILL)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
