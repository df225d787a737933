"""One voxbridge per state directory: two would write one memory and one set of selections.

``voxbridge run`` holds an exclusive ``flock`` on ``<state dir>/voxbridge.pid`` while it runs
(the kernel drops it when the process ends, however it ends: no stale lock after a crash); the
file says which process holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import StateDirBusy, StoreError

__all__ = ["LOCK_FILE", "hold_state_dir"]

LOCK_FILE = "voxbridge.pid"


@contextlib.contextmanager
def hold_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold the state directory (made, owner only, if missing) while the block runs.

    Raises:
        StateDirBusy: another process holds it.
        StoreError: it cannot be made or written.
    """
    path = state_dir / LOCK_FILE
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"--state-dir {state_dir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            raise StateDirBusy(
                f"another voxbridge (pid {holder}) is running on the state directory "
                f"{state_dir}: stop it first, or give this one its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock
