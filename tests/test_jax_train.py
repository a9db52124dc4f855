"""The JAX trainer: one step moves every weight, padded batches equal PyTorch's gradients and
never recompile, smoke runs on synthetic data, exact resume, and checkpoints both ways.

    python -m pytest -q tests/test_jax_train.py
"""
from __future__ import annotations

import json
import logging

import jax
import numpy as np
from flax import nnx
import pytest
import torch
import torch.nn.functional as F

from common import checkpoint, data
from common.checkpoint import initial_params
from common.config import CELLS, Config, RunOptions
from common.errors import UserError
from jax_impl import train as jax_train
from jax_impl.nn import classifier, named
from jax_impl.train import JaxBackend, padded_batch
from parity.measure import relative_error
from parity.tolerances import GRAD_RTOL, TRAIN_LOSS_ATOL
from torch_impl import train as torch_train
from torch_impl.model import RecurrentClassifier, set_params

SEQ, FEATURES = 5, 20  # synthetic data: class k lights column 2k, so 20 columns keep the classes apart


def tiny(cell="lstm", head="all", **values) -> Config:
    # One layer: stacking is the model tests' job, and each extra layer lengthens every compilation.
    base = dict(cell=cell, head=head, input_size=FEATURES, seq_len=SEQ, hidden_size=8, num_layers=1,
                batch_size=16, epochs=1, lr=0.02)
    return Config(**(base | values))


# Tests that train share this config, so its steps compile once for the whole module.
SHARED = tiny("lstm", "last", epochs=2, schedule="cosine", grad_clip=1.0)


def datasets(n_train=70, n_test=37):
    return {"train_set": data.synthetic(n_train, seed=1, seq_len=SEQ, input_size=FEATURES),
            "test_set": data.synthetic(n_test, seed=2, seq_len=SEQ, input_size=FEATURES)}


def quiet(**values) -> RunOptions:
    return RunOptions(progress=False, log_every=2, eval_batch_size=16, **values)


def batch_of(n, seed=3):
    """(images (n, SEQ, FEATURES), labels (n,)) of synthetic data."""
    dataset = data.synthetic(n, seed=seed, seq_len=SEQ, input_size=FEATURES)
    return dataset.images, dataset.labels


@pytest.mark.parametrize("cell", CELLS)
def test_one_step_changes_every_parameter(cell):
    backend = JaxBackend(tiny(cell, num_layers=2), "cpu")
    before = backend.get_params()
    loss, correct = backend.train_step(*batch_of(16), 0.01)
    assert np.isfinite(loss) and 0 <= correct <= 16
    after = backend.get_params()
    for name in before:
        assert np.all(before[name] != after[name]), f"{name} has entries Adam did not move"


def test_padded_batch_gradients_equal_torch_mean_over_real_rows():
    config = tiny("gru", "last")
    images, labels = batch_of(5)  # 5 real rows padded to 16
    params = initial_params(config, 0)
    batch = padded_batch(images, labels, config.batch_size)
    (loss, correct), grads = nnx.jit(jax_train.loss_and_grads)(classifier(config, params), batch)
    grads = named(grads)

    model = RecurrentClassifier(config)
    set_params(model, params)
    logits = model(torch.from_numpy(images))
    torch_loss = F.cross_entropy(logits, torch.from_numpy(labels))
    torch_loss.backward()
    assert abs(float(loss) - torch_loss.item()) < TRAIN_LOSS_ATOL
    assert int(correct) == int((logits.argmax(1) == torch.from_numpy(labels)).sum())
    for name, param in model.named_parameters():  # the parity suite's measure of a gradient's error
        assert relative_error(param.grad.numpy(), np.asarray(grads[name][...])) <= GRAD_RTOL, name


def compiled_steps(caplog) -> list[str]:
    """Which of the trainer's steps JAX compiled since the log was cleared (jax.log_compiles' records)."""
    names = [record.getMessage().split()[1] for record in caplog.records if record.getMessage().startswith("Compiling ")]
    caplog.clear()
    return sorted(name for name in names if name in ("jit(train_step)", "jit(eval_step)"))


def test_steps_compile_once(caplog):
    backend = JaxBackend(tiny("lstm", "last", hidden_size=7), "cpu")  # a shape no other test compiles
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        backend.train_step(*batch_of(16), 0.01)
        backend.eval_batch(*batch_of(16))
        assert compiled_steps(caplog) == ["jit(eval_step)", "jit(train_step)"]  # the log does see compiles
        backend.train_step(*batch_of(7, seed=4), 0.005)  # a partial batch and a new learning rate
        backend.eval_batch(*batch_of(3))
        assert compiled_steps(caplog) == []


def test_smoke_run_writes_the_torch_trainers_files(tmp_path):
    config = SHARED
    summary = jax_train.train(config, quiet(out=str(tmp_path)), **datasets())
    assert {p.name for p in tmp_path.iterdir()} == {".lock", "config.json", "metrics.jsonl", "model.safetensors",
                                                     "train_state.safetensors", "train_state.prev.safetensors",
                                                     "summary.json"}
    assert summary["framework"] == "jax" and summary["parameters"] == checkpoint.count_params(config)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [record for record in metrics if "train_loss" in record]
    assert len(epochs) == 2 and epochs[1]["train_loss"] < epochs[0]["train_loss"]
    params, saved, meta = checkpoint.load_model(tmp_path / "model.safetensors")
    assert saved == config and meta["framework"] == "jax"


def test_resume_is_bit_identical(tmp_path, monkeypatch):
    config = SHARED
    jax_train.train(config, quiet(out=str(tmp_path / "straight")), **datasets())

    calls = {"n": 0}
    real_step = JaxBackend.train_step

    def interrupted_step(self, images, labels, lr):
        calls["n"] += 1
        if calls["n"] == 7:  # mid second epoch (5 steps per epoch)
            raise KeyboardInterrupt
        return real_step(self, images, labels, lr)

    monkeypatch.setattr(JaxBackend, "train_step", interrupted_step)
    with pytest.raises(SystemExit):
        jax_train.train(config, quiet(out=str(tmp_path / "cut")), **datasets())
    monkeypatch.setattr(JaxBackend, "train_step", real_step)
    jax_train.train(config, quiet(resume=str(tmp_path / "cut")), **datasets())

    straight = checkpoint.load_train_state(tmp_path / "straight" / "train_state.safetensors")
    resumed = checkpoint.load_train_state(tmp_path / "cut" / "train_state.safetensors")
    for part in (0, 1):  # weights, then Adam's moments and step
        assert straight[part].keys() == resumed[part].keys()
        for name in straight[part]:
            assert np.array_equal(straight[part][name], resumed[part][name]), name
    assert float(resumed[1]["adam.step"]) == 10


def test_adam_state_round_trips():
    config = SHARED
    first = JaxBackend(config, "cpu")
    first.train_step(*batch_of(16), 0.01)
    second = JaxBackend(config, "cpu")
    second.set_params(first.get_params())
    second.set_adam(first.get_adam())
    for backend in (first, second):
        backend.train_step(*batch_of(16, seed=5), 0.01)
    assert all(np.array_equal(a, b) for a, b in zip(first.get_params().values(), second.get_params().values()))
    assert {k: v.tolist() for k, v in first.get_adam().items()} == {k: v.tolist() for k, v in second.get_adam().items()}


@pytest.mark.parametrize("direction", ["torch->jax", "jax->torch"])
def test_checkpoints_evaluate_the_same_in_both_frameworks(tmp_path, direction):
    config = tiny("rnn", "all")
    writer, reader = (torch_train, jax_train) if direction == "torch->jax" else (jax_train, torch_train)
    trained = writer.train(config, quiet(out=str(tmp_path)), **datasets())
    evaluated = reader.train(config, quiet(init_from=str(tmp_path / "model.safetensors"), eval_only=True),
                             test_set=datasets()["test_set"])
    assert evaluated["test_accuracy"] == trained["test_accuracy"]
    assert abs(evaluated["test_loss"] - trained["test_loss"]) < TRAIN_LOSS_ATOL


def test_mismatched_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "model.safetensors"
    lstm = tiny("lstm")
    checkpoint.save_model(path, JaxBackend(lstm, "cpu").get_params(), lstm)
    with pytest.raises(UserError, match="different model"):
        jax_train.train(tiny("gru"), quiet(init_from=str(path), eval_only=True), test_set=datasets()["test_set"])
    with pytest.raises(UserError, match="rnn.weight_ih_l0 has shape"):
        JaxBackend(tiny("gru"), "cpu").set_params(checkpoint.load_model(path)[0])


def test_cuda_without_gpu_is_a_user_error():
    try:
        jax.devices("gpu")
        pytest.skip("a GPU is present")
    except RuntimeError:
        pass
    with pytest.raises(UserError, match="no GPU"):
        jax_train.select_device("cuda")
    assert jax_train.select_device("auto").platform == "cpu"


def test_cli_rejects_unknown_flags():
    with pytest.raises(UserError, match="unrecognized"):
        jax_train.main(["--hidden-sise", "8"])


@pytest.mark.parametrize("cell", CELLS)
def test_one_seed_is_one_set_of_initial_weights(cell):
    """The two trainers start from the same weights for a seed (common.checkpoint.initial_params),
    bit for bit; another seed gives other weights."""
    config = tiny(cell, num_layers=2, seed=3)
    torch_params = torch_train.TorchBackend(config, "cpu").get_params()
    jax_params = JaxBackend(config, "cpu").get_params()
    assert sorted(torch_params) == sorted(jax_params)
    for name, value in torch_params.items():
        assert np.array_equal(value.view(np.uint32), jax_params[name].view(np.uint32)), name
    other = JaxBackend(tiny(cell, num_layers=2, seed=4), "cpu").get_params()
    assert not any(np.array_equal(other[name], jax_params[name]) for name in other)
