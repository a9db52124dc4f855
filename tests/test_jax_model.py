"""The JAX models: shapes, parameter names and counts, initialisation, and equality with the
PyTorch models given the same weights (every step's hidden state, final states, logits).

    python -m pytest -q tests/test_jax_model.py
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from common.checkpoint import count_params, param_shapes
from common.config import CELLS, HEADS, VARIANTS, Config
from jax_impl import model as jax_model
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


def torch_twin(config: Config, seed: int = 0):
    """A torch model with its own (torch) random weights, and those weights as a JAX params dict."""
    torch.manual_seed(seed)
    model = RecurrentClassifier(config).eval()
    return model, {name: jnp.asarray(value) for name, value in get_params(model).items()}


@pytest.mark.parametrize("cell,head", COMBOS)
def test_shapes(cell, head):
    config = tiny(cell, head)
    params = jax_model.init_params(config, seed=0)
    x = inputs(config)
    out, state = jax_model.recurrent(params, config, x)  # torch's structure: h_n, or (h_n, c_n)
    assert out.shape == (2, 5, 8)
    if cell == "lstm":
        assert isinstance(state, tuple) and [s.shape for s in state] == [(2, 2, 8)] * 2
    else:
        assert state.shape == (2, 2, 8)
    logits = jax_model.forward(params, config, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32


@pytest.mark.parametrize("cell,head", COMBOS)
def test_names_shapes_and_init_bounds(cell, head):
    config = tiny(cell, head)
    params = jax_model.init_params(config, seed=0)
    shapes = param_shapes(config)
    assert list(params) == list(shapes)  # PyTorch's names, in nn.Module order
    for name, value in params.items():
        assert value.shape == shapes[name] and value.dtype == jnp.float32, name
        fan_in = shapes["fc.weight"][1] if name.startswith("fc.") else config.hidden_size
        bound = 1 / math.sqrt(fan_in)
        assert float(jnp.max(jnp.abs(value))) <= bound, name
        assert float(jnp.std(value)) > bound / 4, name  # spread over the range, not constant


def test_init_is_seeded():
    config = tiny()
    a, b, c = (jax_model.init_params(config, seed) for seed in (0, 0, 1))
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert not any(np.array_equal(a[name], c[name]) for name in a)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_equal_torch(variant):
    cell, head = VARIANTS[variant]
    config = Config(cell=cell, head=head)
    params = jax_model.init_params(config, seed=0)
    torch_count = sum(p.numel() for p in RecurrentClassifier(config).parameters())
    assert sum(v.size for v in params.values()) == count_params(config) == torch_count == DEFAULT_COUNTS[variant]


def assert_matches_torch(config: Config, batch: int):
    model, params = torch_twin(config)
    x = inputs(config, batch)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x)).numpy()
        torch_out, torch_state = model.recurrent(torch.from_numpy(x))
    torch_h, torch_c = torch_state if config.cell == "lstm" else (torch_state, None)
    out, state = jax_model.recurrent(params, config, x)
    h_n, c_n = state if config.cell == "lstm" else (state, None)
    np.testing.assert_allclose(np.asarray(out), torch_out.numpy(), rtol=0, atol=FORWARD_ATOL)  # every step
    np.testing.assert_allclose(np.asarray(h_n), torch_h.numpy(), rtol=0, atol=FORWARD_ATOL)
    if config.cell == "lstm":
        np.testing.assert_allclose(np.asarray(c_n), torch_c.numpy(), rtol=0, atol=FORWARD_ATOL)
    logits = jax_model.forward(params, config, x)
    np.testing.assert_allclose(np.asarray(logits), torch_logits, rtol=0, atol=FORWARD_ATOL)


@pytest.mark.parametrize("cell,head", COMBOS)
def test_forward_matches_torch(cell, head):
    assert_matches_torch(tiny(cell, head), batch=2)


@pytest.mark.parametrize("hidden,layers,steps,batch", [(1, 1, 1, 1), (3, 3, 7, 33), (17, 2, 28, 2)])
@pytest.mark.parametrize("cell", CELLS)
def test_odd_sizes_match_torch(cell, hidden, layers, steps, batch):
    config = tiny(cell, "all", hidden_size=hidden, num_layers=layers, seq_len=steps, input_size=28)
    assert_matches_torch(config, batch)


def test_weight_conversion_is_a_copy():
    config = tiny("gru", "last")
    model, params = torch_twin(config)
    back = {name: np.asarray(value) for name, value in params.items()}
    for name, value in get_params(model).items():
        assert back[name].dtype == np.float32 and np.array_equal(back[name], value), name
