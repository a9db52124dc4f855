"""The Flax models: shapes, parameter names and counts, initialisation, equality with the PyTorch
models given the same weights (every step's hidden state, final states, logits), and the layers
used as a Flax user would: inside their own nnx.Module, trained with nnx.Optimizer under nnx.jit.

    python -m pytest -q tests/test_jax_model.py
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from common.checkpoint import count_params, param_shapes
from common.config import CELLS, HEADS, VARIANTS, Config
from common.errors import UserError
from jax_impl import nn
from parity.tolerances import FORWARD_ATOL
from torch_impl.model import RecurrentClassifier, get_params

COMBOS = [(cell, head) for cell in CELLS for head in HEADS]
DEFAULT_COUNTS = {"rnn": 276_490, "gru": 686_090, "lstm": 890_890, "lstm-last": 821_770}


def tiny(cell="lstm", head="all", **sizes) -> Config:
    """B=2, T=5, H=8 unit-test model (F=3, two layers) unless `sizes` says otherwise."""
    values = dict(cell=cell, head=head, input_size=3, seq_len=5, hidden_size=8, num_layers=2) | sizes
    return Config(**values)


def inputs(config: Config, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, config.seq_len, config.input_size), np.float32)


def flax_model(config: Config, seed: int = 0) -> nn.RecurrentClassifier:
    return nn.RecurrentClassifier(config, rngs=nnx.Rngs(seed))


def torch_twin(config: Config, seed: int = 0):
    """A torch model with its own (torch) random weights, and the Flax classifier holding them."""
    torch.manual_seed(seed)
    model = RecurrentClassifier(config).eval()
    return model, nn.classifier(config, get_params(model))


@pytest.mark.parametrize("cell,head", COMBOS)
def test_shapes(cell, head):
    config = tiny(cell, head)
    model, x = flax_model(config), inputs(config)
    out, state = model.recurrent(x)  # torch's structure: h_n, or (h_n, c_n)
    assert out.shape == (2, 5, 8)
    if cell == "lstm":
        assert isinstance(state, tuple) and [s.shape for s in state] == [(2, 2, 8)] * 2
    else:
        assert state.shape == (2, 2, 8)
    logits = model(x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


@pytest.mark.parametrize("cell,head", COMBOS)
def test_names_shapes_and_init_bounds(cell, head):
    config = tiny(cell, head)
    params = nn.state_dict(flax_model(config))
    shapes = param_shapes(config)
    assert sorted(params) == sorted(shapes)  # PyTorch's names
    for name, value in params.items():
        assert value.shape == shapes[name] and value.dtype == np.float32, name
        fan_in = shapes["fc.weight"][1] if name.startswith("fc.") else config.hidden_size
        bound = 1 / math.sqrt(fan_in)
        assert float(np.max(np.abs(value))) <= bound, name
        assert float(np.std(value)) > bound / 4, name  # spread over the range, not constant


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("hidden,layers", [(1, 1), (3, 2), (7, 3)])
def test_state_paths_are_torchs_state_dict_keys(cell, head, hidden, layers):
    config = tiny(cell, head, hidden_size=hidden, num_layers=layers)
    flax_shapes = {".".join(map(str, path)): tuple(variable.shape)
                   for path, variable in nnx.to_flat_state(nnx.state(flax_model(config), nnx.Param))}
    torch_shapes = {name: tuple(value.shape) for name, value in RecurrentClassifier(config).state_dict().items()}
    assert flax_shapes == torch_shapes


def test_init_is_seeded():
    config = tiny()
    a, b, c = (nn.state_dict(flax_model(config, seed)) for seed in (0, 0, 1))
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert not any(np.array_equal(a[name], c[name]) for name in a)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_equal_torch(variant):
    cell, head = VARIANTS[variant]
    config = Config(cell=cell, head=head)
    params = nn.state_dict(flax_model(config))
    torch_count = sum(p.numel() for p in RecurrentClassifier(config).parameters())
    assert sum(v.size for v in params.values()) == count_params(config) == torch_count == DEFAULT_COUNTS[variant]


def assert_matches_torch(config: Config, batch: int):
    model, flax = torch_twin(config)
    x = inputs(config, batch)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x)).numpy()
        torch_out, torch_state = model.recurrent(torch.from_numpy(x))
    torch_h, torch_c = torch_state if config.cell == "lstm" else (torch_state, None)
    out, state = flax.recurrent(x)
    h_n, c_n = state if config.cell == "lstm" else (state, None)
    np.testing.assert_allclose(np.asarray(out), torch_out.numpy(), rtol=0, atol=FORWARD_ATOL)  # every step
    np.testing.assert_allclose(np.asarray(h_n), torch_h.numpy(), rtol=0, atol=FORWARD_ATOL)
    if config.cell == "lstm":
        np.testing.assert_allclose(np.asarray(c_n), torch_c.numpy(), rtol=0, atol=FORWARD_ATOL)
    np.testing.assert_allclose(np.asarray(flax(x)), torch_logits, rtol=0, atol=FORWARD_ATOL)


@pytest.mark.parametrize("cell,head", COMBOS)
def test_forward_matches_torch(cell, head):
    assert_matches_torch(tiny(cell, head), batch=2)


@pytest.mark.parametrize("hidden,layers,steps,batch", [(1, 1, 1, 1), (3, 3, 7, 33), (17, 2, 28, 2)])
@pytest.mark.parametrize("cell", CELLS)
def test_odd_sizes_match_torch(cell, hidden, layers, steps, batch):
    config = tiny(cell, "all", hidden_size=hidden, num_layers=layers, seq_len=steps, input_size=28)
    assert_matches_torch(config, batch)


@pytest.mark.parametrize("cell", CELLS)
def test_layers_match_torch_time_major_with_initial_state(cell):
    """A layer alone, as torch.nn's: time-major input and given initial states (h0, or (h0, c0))."""
    torch.manual_seed(1)
    layer = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](3, 7, 2)
    ours = nn.RECURRENT[cell](3, 7, 2, rngs=nnx.Rngs(0))
    nn.load_state_dict(ours, {name: value.numpy() for name, value in layer.state_dict().items()})
    rng = np.random.default_rng(2)
    x, h0 = rng.standard_normal((5, 4, 3), np.float32), rng.standard_normal((2, 4, 7), np.float32)
    hx = (h0, 0.5 * h0) if cell == "lstm" else h0
    with torch.no_grad():
        torch_hx = tuple(map(torch.from_numpy, hx)) if cell == "lstm" else torch.from_numpy(h0)
        torch_out, torch_final = layer(torch.from_numpy(x), torch_hx)
    out, final = ours(x, hx)
    np.testing.assert_allclose(np.asarray(out), torch_out.numpy(), rtol=0, atol=FORWARD_ATOL)
    for a, b in zip(final if cell == "lstm" else (final,), torch_final if cell == "lstm" else (torch_final,)):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=0, atol=FORWARD_ATOL)


def test_weight_conversion_is_a_copy():
    config = tiny("gru", "last")
    model, flax = torch_twin(config)
    back = nn.state_dict(flax)
    for name, value in get_params(model).items():
        assert back[name].dtype == np.float32 and np.array_equal(back[name], value), name


def test_a_mismatched_state_dict_is_one_line():
    flax = flax_model(tiny("gru", "last"))
    torch_state = get_params(RecurrentClassifier(tiny("gru", "last", hidden_size=9)))
    with pytest.raises(UserError, match=r"weights: \S+ has shape \(\d+, 9\), the module.s is \(\d+, 8\)"):
        nn.load_state_dict(flax, torch_state)
    with pytest.raises(UserError, match=r"missing \['fc.bias'\]"):
        nn.load_state_dict(flax, {k: v for k, v in nn.state_dict(flax).items() if k != "fc.bias"})


class Tagger(nnx.Module):
    """A user's own model around our LSTM: a per-step tag from each output."""

    def __init__(self, rngs: nnx.Rngs):
        self.encoder = nn.LSTM(4, 6, num_layers=2, batch_first=True, rngs=rngs)
        self.readout = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        out, _ = self.encoder(x)  # (B, T, 4) -> (B, T, 6)
        return self.readout(out)  # (B, T, 3)


def test_lstm_inside_a_users_module_trains_with_nnx_optimizer():
    model = Tagger(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5, 4), np.float32)
    tags = (x[..., 0] > 0).astype(np.int32) + (x[..., 1] > 0).astype(np.int32)  # (B, T) in {0, 1, 2}

    @nnx.jit
    def step(model, optimizer, x, tags):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), tags).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    before = nn.state_dict(model.encoder)
    losses = [float(step(model, optimizer, x, tags)) for _ in range(30)]
    after = nn.state_dict(model.encoder)
    assert sorted(before) == sorted(f"{kind}_l{k}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                                    for k in range(2))
    assert all(not np.array_equal(before[name], after[name]) for name in before)  # every LSTM weight trained
    assert losses[-1] < 0.5 * losses[0], losses
