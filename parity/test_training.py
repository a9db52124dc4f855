"""Training parity: the real trainers (TorchBackend, JaxBackend train_step) from the same weights on
the same batches take the same Adam steps, and the loop feeds both the same batches.

    python -m pytest -q parity/test_training.py

Float32 rounding differs between the frameworks, and every step starts from the last one's
slightly different weights, so the gap grows with steps: the tests record it after steps 1, 5,
10 and 20, bound the first step, and bound how fast it grows after that (see parity.tolerances).
Adam alone is checked against exact float64 Adam, in each framework.
"""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from common import checkpoint, data, training
from common.config import RunOptions
from jax_impl.nn import classifier
from jax_impl.train import JaxBackend, masked_loss, padded_batch
from parity.measure import COMBO_IDS, COMBOS, adam_errors, backends, config_for, max_param_diff, training_gaps
from parity.tolerances import (ADAM_RTOL, FORWARD_ATOL, FORWARD_ATOL_CPU, TRAIN_LOSS_ATOL, TRAIN_PARAMS_ATOL_FIRST,
                               TRAIN_PARAMS_GROWTH, TRAIN_STEPS)
from torch_impl.train import TorchBackend

BATCH = 16
RECORD_AT = (1, 5, 10, 20)
# One config per cell x head for every test here, so that JAX compiles each train step once.
CONFIGS = {combo: config_for(*combo, hidden_size=8, num_layers=2, batch_size=BATCH, epochs=2) for combo in COMBOS}
# 19 full batches and one of 5: the 20 steps end on the partial batch JAX pads and masks.
DATASET = data.synthetic(BATCH * (TRAIN_STEPS - 1) + 5, seed=1)


@pytest.mark.parametrize("cell,head", COMBOS, ids=COMBO_IDS)
def test_adam_steps_agree_and_the_gap_grows_slowly(cell, head, record_property):
    gaps = training_gaps(CONFIGS[cell, head], DATASET, TRAIN_STEPS)
    growth = {step: gaps["params"][step - 1] for step in RECORD_AT}
    record_property("max_param_diff_at_step", growth)  # in --junitxml; parity.report tabulates it
    message = f"max param diff at steps {growth}; max loss diff {max(gaps['loss']):.1e}"
    first = gaps["params"][0]
    assert first <= TRAIN_PARAMS_ATOL_FIRST, message
    for step, gap in enumerate(gaps["params"], start=1):
        assert gap <= first + (step - 1) * TRAIN_PARAMS_GROWTH, f"step {step}: {gap:.1e}; {message}"
    assert max(gaps["loss"]) <= TRAIN_LOSS_ATOL, message


def test_torch_adam_matches_exact_adam():
    """The yardstick for the JAX test below: torch.optim.Adam is float32-close to float64 Adam."""
    errors = adam_errors()["torch"]
    assert max(errors) <= ADAM_RTOL, [f"{e:.1e}" for e in errors]


def test_jax_adam_matches_exact_adam():
    """jax_impl's scale_by_adam_exact; optax.adam's float32 bias correction was 8.1e-6 off."""
    errors = adam_errors()["jax"]
    assert max(errors) <= ADAM_RTOL, [f"{e:.1e}" for e in errors]


@pytest.mark.parametrize("cell,head", COMBOS, ids=COMBO_IDS)
def test_padded_last_batch_gives_torchs_loss(cell, head):
    """JaxBackend pads a partial batch to the batch size and masks the padding out: loss and step
    equal torch's on the real rows alone."""
    config = CONFIGS[cell, head]
    images, labels = list(data.batches(DATASET, BATCH))[-1]
    assert len(labels) == 5
    torch_backend, jax_backend = backends(config)
    weights = torch_backend.get_params()
    torch_loss, torch_correct = torch_backend.train_step(images, labels, config.lr)
    jax_loss, jax_correct = jax_backend.train_step(images, labels, config.lr)
    assert abs(torch_loss - jax_loss) <= FORWARD_ATOL and torch_correct == jax_correct
    assert max_param_diff(torch_backend.get_params(), jax_backend.get_params()) <= TRAIN_PARAMS_ATOL_FIRST
    # Without the mask the 11 zero rows (label 0) would count: a visibly different loss.
    unmasked, _ = masked_loss(classifier(config, weights),
                              {**padded_batch(images, labels, BATCH), "mask": np.ones(BATCH, np.float32)})
    assert abs(float(unmasked) - torch_loss) > 1e3 * FORWARD_ATOL_CPU  # 0.027 on the H200: 900x FORWARD_ATOL there


def test_batch_order_is_a_pure_function_of_seed_and_epoch():
    def epoch(seed, number):
        return [(images.copy(), labels.copy()) for images, labels in
                data.batches(DATASET, BATCH, shuffle=True, seed=seed, epoch=number)]

    def same(a, b):
        return len(a) == len(b) and all(np.array_equal(x, y) and np.array_equal(u, v) for (x, u), (y, v) in zip(a, b))

    first = epoch(0, 0)
    assert same(first, epoch(0, 0))  # no hidden RNG state: asking again gives the same batches
    assert not same(first, epoch(0, 1)) and not same(first, epoch(1, 0))  # reshuffled per epoch and seed
    assert [len(labels) for _, labels in first] == [BATCH] * (TRAIN_STEPS - 1) + [5]
    seen = np.concatenate([images for images, _ in first])  # each image exactly once per epoch
    assert np.array_equal(np.sort(seen.reshape(len(seen), -1), axis=0),
                          np.sort(DATASET.images.reshape(len(DATASET), -1), axis=0))
    resumed = list(data.batches(DATASET, BATCH, shuffle=True, seed=0, epoch=0, start=7))
    assert same(first[7:], resumed)  # resuming mid-epoch continues the same order


class Recording:
    """A backend that remembers every batch and learning rate the loop hands it."""

    def __init__(self, backend, seen: list):
        self.backend, self.seen = backend, seen

    def train_step(self, images, labels, lr):
        self.seen.append((images.copy(), labels.copy(), lr))
        return self.backend.train_step(images, labels, lr)

    def __getattr__(self, name):
        return getattr(self.backend, name)


def test_the_loop_feeds_both_trainers_the_same_batches(tmp_path):
    """common.training.train with each real backend, from torch's initial weights (--init-from):
    identical batch sequences (the loader's, both epochs), and the same losses and accuracy."""
    config = CONFIGS["lstm", "last"]
    train_set, test_set = data.synthetic(37, seed=2), data.synthetic(11, seed=3)
    init = tmp_path / "init.safetensors"
    checkpoint.save_model(init, TorchBackend(config).get_params(), config)
    seen, summaries = {}, {}
    for name, backend_class in (("torch", TorchBackend), ("jax", JaxBackend)):
        seen[name] = []
        options = RunOptions(out=str(tmp_path / name), init_from=str(init), progress=False, log_every=1)
        summaries[name] = training.train(lambda c, d, cls=backend_class, log=seen[name]: Recording(cls(c, d), log),
                                         config, options, name, train_set=train_set, test_set=test_set)
    expected = [(images, labels) for epoch in range(config.epochs)
                for images, labels in data.batches(train_set, BATCH, shuffle=True, seed=config.seed, epoch=epoch)]
    assert len(seen["torch"]) == len(seen["jax"]) == len(expected) == 6
    for (t_images, t_labels, t_lr), (j_images, j_labels, j_lr), (images, labels) in zip(seen["torch"], seen["jax"],
                                                                                       expected):
        assert np.array_equal(t_images, j_images) and np.array_equal(t_images, images)
        assert np.array_equal(t_labels, j_labels) and np.array_equal(t_labels, labels)
        assert t_lr == j_lr
    metrics = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
               for name in seen}
    assert [sorted(record) for record in metrics["torch"]] == [sorted(record) for record in metrics["jax"]]
    for torch_record, jax_record in zip(metrics["torch"], metrics["jax"]):  # per step and per epoch
        for key in ("loss", "train_loss", "test_loss"):
            if key in torch_record:
                assert abs(torch_record[key] - jax_record[key]) <= TRAIN_LOSS_ATOL, (key, torch_record, jax_record)
    assert summaries["torch"]["test_accuracy"] == summaries["jax"]["test_accuracy"]
