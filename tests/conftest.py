"""Shared fixtures: tiny idx files, tiny configs, the real MNIST folder, tiny exported models."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from common import checkpoint, data
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
    return folder.resolve()  # absolute: tests may chdir


def tiny_config(**overrides) -> Config:
    return Config(**{**TINY, **overrides})


def options(tmp_path: Path, **overrides) -> RunOptions:
    return RunOptions(**{"out": str(tmp_path / "run"), "progress": False, "log_every": 2, **overrides})


# Tiny shapes, still 28x28 input; layer counts vary so one- and two-layer graphs are both covered,
# and one model normalises its input so the preprocessing metadata is not always the default.
EXPORT_TINY = {"rnn": dict(num_layers=1), "gru": dict(num_layers=2), "lstm": dict(num_layers=1),
               "lstm-last": dict(num_layers=2, normalize=True)}
EXPORT_VERIFY_LIMIT = 2000  # enough test images to compare predictions, fast at hidden 8


def make_checkpoint(path: Path, variant: str, *, hidden_size: int = 8, seed: int = 0, **overrides) -> Path:
    """A randomly initialised model saved in the checkpoint format (no training needed)."""
    import torch
    from torch_impl.model import RecurrentClassifier, get_params

    cell, _, last = variant.partition("-")
    config = Config(cell=cell, head="last" if last else "all", hidden_size=hidden_size, seed=seed, **overrides)
    torch.manual_seed(seed)
    checkpoint.save_model(path, get_params(RecurrentClassifier(config)), config, framework="torch",
                          test_accuracy=repr(0.1234))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, mnist_dir):
    """`tiny_onnx(variant)` -> (checkpoint, onnx path, export report) of the tiny `variant` (EXPORT_TINY),
    exported once per pytest run, for test_export and test_predict."""
    from export import onnx as export_onnx

    exported: dict[str, tuple[Path, Path, dict]] = {}

    def export(variant: str) -> tuple[Path, Path, dict]:
        if variant not in exported:
            folder = tmp_path_factory.mktemp(variant)
            ckpt = make_checkpoint(folder / "model.safetensors", variant, **EXPORT_TINY[variant])
            report = export_onnx.export_checkpoint(ckpt, folder / "model.onnx", verify_limit=EXPORT_VERIFY_LIMIT,
                                                   data_dir=mnist_dir, log=lambda line: None)
            exported[variant] = (ckpt, folder / "model.onnx", report)
        return exported[variant]
    return export
