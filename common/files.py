"""Reading files the same way everywhere: sha256 digests, and gzip detected by content.

Standard library only: the torch-free predict tool imports it.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes as stored, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_maybe_gzip(path: str | os.PathLike) -> bytes:
    """The file's bytes, decompressed when they are gzip: decided by the content (the magic
    number), not the name, so a `.gz` saved without its suffix (or the reverse) still reads.

    Raises OSError, EOFError or zlib.error for unreadable or corrupt files; callers say what to do.
    """
    raw = Path(path).read_bytes()
    return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
