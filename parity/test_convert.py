"""Weight conversion torch <-> JAX: bit-exact round trips, and loud failures on a mismatched model.

    python -m pytest -q parity/test_convert.py
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

from common.checkpoint import param_shapes
from jax_impl.nn import RecurrentClassifier, state_dict
from parity.convert import jax_to_torch, torch_to_jax
from parity.measure import COMBO_IDS, COMBOS, config_for, torch_model


def bits(value) -> np.ndarray:
    """The float32 bit patterns: equal bits, not just equal values (-0.0 and NaN payloads count)."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    assert array.dtype == np.float32
    return array.view(np.uint32)


@pytest.mark.parametrize("cell,head", COMBOS, ids=COMBO_IDS)
def test_round_trips_are_bit_exact(cell, head):
    config = config_for(cell, head, hidden_size=3, num_layers=2, seq_len=5, input_size=4)
    model = torch_model(config)
    state = model.state_dict()
    params = torch_to_jax(state, config)
    assert list(params) == list(param_shapes(config))  # PyTorch's names, in nn.Module order
    back = jax_to_torch(params, config)
    for name in state:
        assert np.array_equal(bits(params[name]), bits(state[name])), name
        assert np.array_equal(bits(back[name]), bits(state[name])), name
    model.load_state_dict(back, strict=True)

    jax_params = state_dict(RecurrentClassifier(config, rngs=nnx.Rngs(0)))  # the other direction, from Flax's init
    again = torch_to_jax(jax_to_torch(jax_params, config), config)
    for name in jax_params:
        assert np.array_equal(bits(again[name]), bits(jax_params[name])), name


def test_mismatched_weights_fail_loudly():
    config = config_for("lstm", "last", hidden_size=3, num_layers=2)
    state = torch_model(config).state_dict()
    with pytest.raises(AssertionError, match="weight_ih_l0 is"):  # same names, other hidden size
        torch_to_jax(state, config_for("lstm", "last", hidden_size=4, num_layers=2))
    with pytest.raises(AssertionError, match="weight_ih_l0 is"):  # a GRU's gates are 3H rows, not 4H
        torch_to_jax(torch_model(config_for("gru", "last", hidden_size=3, num_layers=2)).state_dict(), config)
    with pytest.raises(AssertionError, match="fc.weight is"):  # head 'all' reads T*H features
        torch_to_jax(state, config_for("lstm", "all", hidden_size=3, num_layers=2))
    with pytest.raises(AssertionError, match="tensors"):  # a layer too many
        jax_to_torch(torch_to_jax(torch_model(config_for("lstm", "last", hidden_size=3, num_layers=3)).state_dict(),
                                  config_for("lstm", "last", hidden_size=3, num_layers=3)), config)
    with pytest.raises(AssertionError, match="no fc.bias"):
        torch_to_jax({**{k: v for k, v in state.items() if k != "fc.bias"}, "fc.b": state["fc.bias"]}, config)
