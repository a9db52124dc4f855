"""cuDNN's LSTM in JAX (`jax_impl.model`, kernel="cudnn") computes torch's LSTM from the same
PyTorch-named parameters.

On CPU (no cuDNN) the packing is proven: the flat buffer unpacks, by `jax.experimental.rnn`'s
own `unpack_lstm_weights`, into exactly torch's weights, and its pure-JAX reference `lstm_ref`
fed from them matches torch within FORWARD_ATOL. On a GPU the real cuDNN kernel is compared
with torch too (skipped on CPU, with the reason shown).

    python -m pytest -q parity/test_cudnn.py
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.experimental import rnn as jax_rnn

from jax_impl import model as jax_model
from jax_impl.nn import GRU
from parity.convert import torch_to_jax
from parity.measure import TORCH_DEVICE, config_for, forward_diffs, max_abs_diff, random_batch, torch_model
from parity.tolerances import FORWARD_ATOL

# (hidden_size, num_layers, seq_len, batch, input_size): 1 to 3 layers, the input size differing
# from the hidden size (layer 0's W_ih has its own shape in the buffer), and MNIST's shape.
SIZES = [(3, 1, 5, 2, 4), (8, 2, 28, 33, 28), (17, 3, 7, 1, 5)]
SIZE_IDS = [f"H{h}-L{layers}-T{t}-B{b}-F{f}" for h, layers, t, b, f in SIZES]
def layers_of(params: dict, num_layers: int) -> list[tuple]:
    """Each layer's (w_ih, w_hh, b_ih, b_hh) from torch's names."""
    return [tuple(params[f"rnn.{name}_l{k}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for k in range(num_layers)]


HAS_GPU = any(device.platform == "gpu" for device in jax.devices())


@pytest.mark.parametrize("sizes", SIZES, ids=SIZE_IDS)
def test_packing_unpacks_to_torch_weights(sizes):
    hidden_size, num_layers, seq_len, _, input_size = sizes
    config = config_for("lstm", "last", hidden_size, num_layers, seq_len, input_size)
    params = torch_to_jax(torch_model(config).state_dict(), config)
    flat = jax_model.cudnn_weights(layers_of(params, num_layers))
    assert flat.shape == (jax_rnn.get_num_params_in_lstm(input_size, hidden_size, num_layers, False),)
    unpacked = jax_rnn.unpack_lstm_weights(flat, input_size, hidden_size, num_layers, False)
    for kind, name in zip(unpacked, ("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
        assert sorted(kind) == list(range(num_layers))
        for layer, value in kind.items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(params[f"rnn.{name}_l{layer}"]))


@pytest.mark.parametrize("sizes", SIZES, ids=SIZE_IDS)
def test_reference_kernel_on_packed_weights_matches_torch(sizes):
    hidden_size, num_layers, seq_len, batch, input_size = sizes
    config = config_for("lstm", "all", hidden_size, num_layers, seq_len, input_size)
    model = torch_model(config)
    params = torch_to_jax(model.state_dict(), config)
    images, _ = random_batch(config, batch)
    weights = jax_rnn.unpack_lstm_weights(jax_model.cudnn_weights(layers_of(params, num_layers)), input_size, hidden_size,
                                          num_layers, False)
    zeros = jnp.zeros((num_layers, batch, hidden_size), jnp.float32)
    out, h_n, c_n = jax_rnn.lstm_ref(images, zeros, zeros, *weights, jnp.full((batch,), seq_len, jnp.int32),
                                     input_size, hidden_size, num_layers, 0.0, False)
    with torch.no_grad():
        torch_out, (torch_h, torch_c) = model.recurrent(torch.from_numpy(images).to(TORCH_DEVICE))
    diffs = {"out": max_abs_diff(torch_out, out), "h_n": max_abs_diff(torch_h, h_n), "c_n": max_abs_diff(torch_c, c_n)}
    assert max(diffs.values()) <= FORWARD_ATOL, diffs


def test_a_swapped_gate_is_caught():
    """Not vacuous: packing with the g and o gates swapped (the layout of another vendor's
    kernel) fails the unpacking check."""
    config = config_for("lstm", "last", 8, 2, 5, 3)
    params = torch_to_jax(torch_model(config).state_dict(), config)
    i, f, g, o = jnp.split(params["rnn.weight_hh_l1"], 4)
    swapped = dict(params, **{"rnn.weight_hh_l1": jnp.concatenate([i, f, o, g])})
    unpacked = jax_rnn.unpack_lstm_weights(jax_model.cudnn_weights(layers_of(swapped, 2)), 3, 8, 2, False)
    assert not np.array_equal(np.asarray(unpacked[1][1]), np.asarray(params["rnn.weight_hh_l1"]))


def test_cudnn_kernel_is_lstm_only():
    config = config_for("gru", "last", 8, 2, 5, 3)
    with pytest.raises(ValueError, match="only for the LSTM"):
        GRU(3, 8, 2, kernel="cudnn", rngs=nnx.Rngs(0))(np.zeros((5, 1, 3), np.float32))


@pytest.mark.skipif(not HAS_GPU, reason="cuDNN's LSTM needs a GPU; the packing is proven on CPU above")
@pytest.mark.parametrize("head", ["all", "last"])
@pytest.mark.parametrize("sizes", SIZES, ids=SIZE_IDS)
def test_cudnn_kernel_matches_torch(sizes, head):
    hidden_size, num_layers, seq_len, batch, input_size = sizes
    config = config_for("lstm", head, hidden_size, num_layers, seq_len, input_size)
    model = torch_model(config, seed=seq_len)
    images, _ = random_batch(config, batch, seed=batch)
    diffs = forward_diffs(model, config, images, kernel="cudnn")
    assert max(diffs.values()) <= FORWARD_ATOL, diffs
