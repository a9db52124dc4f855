"""Slow, opt-in: one epoch of full MNIST in each framework, from the same initial weights, reaches
the same test accuracy within MNIST_ACCURACY_GAP.

    python -m pytest -q -m slow parity/test_mnist_epoch.py            # the four tutorial variants
    python -m pytest -q -m slow parity/test_mnist_epoch.py -k lstm-last

Both trainers run the tutorial hyperparameters (seed 0) with one change, `schedule="cosine"`; the
JAX run starts from torch's initial weights through --init-from, so any gap is the float32 drift
of 938 Adam steps, not a different initialisation. Cosine decay (lr 0.005 -> 0) lets both runs
settle: at a constant 0.005 the end-of-epoch accuracy is a snapshot of a noisy trajectory, and
rounding-level perturbations of torch alone moved it by 0.35 points (see parity.tolerances).
Needs the MNIST files (`python -m common.data fetch`).
"""
from __future__ import annotations

import pytest

from common import checkpoint, data
from common.config import VARIANTS, Config, RunOptions
from jax_impl import train as jax_train
from parity.tolerances import MNIST_ACCURACY_GAP
from torch_impl import train as torch_train


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_epoch_reaches_the_same_accuracy(variant, tmp_path):
    problems = data.verify(data.resolve_data_dir())
    assert not problems, f"full MNIST needed: {problems}; run `python -m common.data fetch`"
    cell, head = VARIANTS[variant]
    config = Config(cell=cell, head=head, epochs=1, schedule="cosine")
    init = tmp_path / "init.safetensors"
    checkpoint.save_model(init, torch_train.TorchBackend(config).get_params(), config)
    accuracy = {}
    for name, trainer in (("torch", torch_train), ("jax", jax_train)):
        options = RunOptions(out=str(tmp_path / name), init_from=str(init), progress=False)
        accuracy[name] = trainer.train(config, options)["test_accuracy"]
    gap = abs(accuracy["torch"] - accuracy["jax"])
    assert gap <= MNIST_ACCURACY_GAP, f"{variant}: test accuracies {accuracy} differ by {100 * gap:.2f} points"
