"""Shared fixtures: tiny idx files, tiny configs, the real MNIST folder."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from common import data
from common.config import Config, RunOptions

TINY = dict(hidden_size=8, num_layers=2, epochs=1, batch_size=16)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode uint8 images (N, 28, 28) or labels (N,) in the idx format."""
    magic = data.IMAGE_MAGIC if array.ndim == 3 else data.LABEL_MAGIC
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dir(folder: Path, n_train: int = 64, n_test: int = 32, *, gz: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for name, array in zip(data.FILES[split], (images, labels)):
            payload = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
    return folder


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    return write_idx_dir(tmp_path / "mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files; `make test` fetches them first."""
    folder = data.resolve_data_dir()
    problems = data.verify(folder)
    assert not problems, f"real MNIST needed in {folder}: {problems}; run `python -m common.data fetch`"
    return folder


def tiny_config(**overrides) -> Config:
    return Config(**{**TINY, **overrides})


def options(tmp_path: Path, **overrides) -> RunOptions:
    return RunOptions(**{"out": str(tmp_path / "run"), "progress": False, "log_every": 2, **overrides})
