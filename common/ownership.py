"""One owner per run folder: an OS lock on `RUN/.lock`, taken before anything is written there.

    with claim(run_dir, check=refuse_if_it_holds_a_run):
        ...train, writing into run_dir...

`claim` takes `fcntl.flock` on the lock file without waiting. A second process that asks for
the same folder (a second trainer on one --out, two --resume of one run, two compare runs on
one OUT) is refused with one line naming the owner's pid, host and start time. The kernel drops
the lock when the owner exits, however it exits (SIGKILL included), so a killed run can be
resumed at once; the file itself stays (removing a lock file lets two processes lock two
different files). On a filesystem without locks the claim says so once and goes on unprotected.
Data-parallel workers share the main worker's claim: only it calls `claim`.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from common.errors import UserError

LOCK_NAME = ".lock"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_said_no_locks = False


def owner_of(folder: Path) -> str:
    """Who holds `folder`'s lock, as its lock file says ('pid 123 on host, started ...')."""
    for _ in range(50):  # the owner writes its line just after it took the lock
        try:
            owner = json.loads((folder / LOCK_NAME).read_text())
            return f"pid {owner['pid']} on {owner['host']}, started {owner['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.02)
    return "a process that has not said who it is"


def refuse_if_owned(folder: Path) -> None:
    """A UserError if a live process owns `folder` now (a check, not a claim)."""
    with claim(folder, quiet=True):
        pass


@contextlib.contextmanager
def claim(folder: str | os.PathLike, check: Callable[[], None] | None = None, quiet: bool = False) -> Iterator[None]:
    """Own `folder` (created if needed) until the block ends or the process dies. `check` runs
    once the lock is held and before the lock file names this process: a check that raises
    leaves the folder as it was. A folder owned by another process is a UserError."""
    global _said_no_locks
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(f"cannot create the lock file {path}: {error.strerror or error}") from None
    try:
        locked = _lock(fd, path)
        if not locked and not (_said_no_locks or quiet):
            _said_no_locks = True
            print(f"note: the filesystem of {folder} has no file locks; nothing stops a second trainer "
                  "from writing into the same folder", file=sys.stderr)
        if check is not None:
            check()
        if locked and not quiet:
            _write_owner(fd)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock(fd: int, path: Path) -> bool:
    """Take the lock without waiting: True when held, False on a filesystem without locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        folder = path.parent
        raise UserError(f"{folder} is in use by {owner_of(folder)}; wait for that run to end or stop it, "
                        "or choose another folder") from None
    except OSError as error:
        if error.errno in _NO_LOCKS:
            return False
        raise
    return True


def _write_owner(fd: int) -> None:
    """Name this process in the lock file, in place (a new file would be a new lock)."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    line = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started,
                       "command": sys.argv}) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, line.encode(), 0)
