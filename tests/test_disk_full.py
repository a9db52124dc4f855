"""A full disk while writing any file (through common.atomic): one line naming the file, a
non-zero exit, no temp file left, the previous good file intact.

Tested on a real full filesystem (a tiny tmpfs; mounting needs root, else those tests skip and
say why) and, always, with an injected ENOSPC.

    python -m pytest -q tests/test_disk_full.py
"""
from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from common import checkpoint
from common.atomic import atomic_replace, atomic_write_bytes
from common.errors import EXIT_FAULT, DiskFullError
from tests.conftest import write_idx_dir

# torch, hidden 16, 2 layers: train_state.safetensors is 67 KB. On a 96 KB disk the first
# checkpoint fits; the second needs room for the new copy beside the old one, and does not.
DISK_KB, HIDDEN = 96, 16


@pytest.fixture
def tiny_disk(tmp_path) -> Path:
    """A real, nearly empty 96 KB filesystem (tmpfs), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_KB}k", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); "
                    "the injected-ENOSPC test still runs")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def assert_kept(path: Path, content: bytes) -> None:
    assert path.read_bytes() == content
    assert [p.name for p in path.parent.iterdir()] == [path.name], "a temp file was left behind"


def test_full_disk_keeps_the_previous_file(tiny_disk):
    path, good = tiny_disk / "model.bin", b"g" * 40_000
    atomic_write_bytes(path, good)
    with pytest.raises(DiskFullError, match=rf"disk full while writing {path}: the previous model.bin is unchanged"):
        atomic_write_bytes(path, b"n" * 60_000)  # fits alone, not beside the old file
    assert_kept(path, good)


@pytest.mark.parametrize("wrapped", [False, True], ids=["OSError", "raised from OSError"])
def test_injected_enospc_keeps_the_previous_file(tmp_path, wrapped):
    path, good = tmp_path / "metrics.jsonl", b"good\n"
    atomic_write_bytes(path, good)

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        full = OSError(errno.ENOSPC, "No space left on device")
        if not wrapped:
            raise full
        raise RuntimeError("the library's own error") from full  # e.g. an exporter wrapping the write

    with pytest.raises(DiskFullError, match="disk full while writing .*metrics.jsonl: the previous metrics.jsonl"):
        atomic_replace(path, write)
    assert_kept(path, good)


def test_other_write_errors_keep_their_type(tmp_path):
    def write(tmp: Path) -> None:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError, match="I/O error"):
        atomic_replace(tmp_path / "x", write)
    assert list(tmp_path.iterdir()) == []


def test_trainer_on_a_full_disk_says_so_in_one_line(tiny_disk, tmp_path):
    idx = write_idx_dir(tmp_path / "idx", n_train=64, n_test=16)
    run = tiny_disk / "run"
    command = [sys.executable, "-m", "torch_impl.train", "--data-dir", str(idx), "--hidden-size", str(HIDDEN),
               "--batch-size", "16", "--epochs", "1", "--checkpoint-every", "1", "--no-progress", "--out", str(run)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_FAULT, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: disk full while writing {run / 'train_state.safetensors'}: "
                                    "the previous train_state.safetensors is unchanged")
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    params, adam, config, state = checkpoint.load_train_state(run / "train_state.safetensors")
    assert state["step"] == 1 and config.hidden_size == HIDDEN  # the first checkpoint, whole
