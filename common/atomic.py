"""Atomic file writes: temp file in the same folder, fsync, rename.

A crash during a write leaves either the old file or the new one, never a truncated one. A full
disk (ENOSPC, or a quota: EDQUOT) is a DiskFullError naming the file: the temp file goes, the
previous file stays as it was.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from common.errors import DiskFullError

T = TypeVar("T")


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # reading the umask means setting it; put it back at once


_FULL = {errno.ENOSPC, errno.EDQUOT}


def _disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an exception it was raised from (a library may wrap the OSError), is a full disk."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _FULL:
            return True
        error = error.__cause__ or error.__context__
    return False


def atomic_replace(path: str | os.PathLike, write: Callable[[Path], T]) -> T:
    """Call `write(tmp)` on a temp file beside `path`, then fsync it and rename it to `path`.

    `write` may also check what it wrote and raise: then the temp file goes and `path` keeps
    what it held. Returns what `write` returned. A full disk raises DiskFullError.
    """
    path = Path(path)
    try:
        return _replace(path, write)
    except Exception as error:
        if _disk_full(error):
            kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
            raise DiskFullError(f"disk full while writing {path.resolve()}: {kept}; free some space "
                                "(or choose another folder) and run again") from None
        raise


def _replace(path: Path, write: Callable[[Path], T]) -> T:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        result = write(tmp)
        with open(tmp, "rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return result


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_replace(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
