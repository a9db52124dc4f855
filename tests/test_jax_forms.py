"""JAX's alternative forms of the same model compute the same thing: the unrolled inference form
and the training form, and the Elman RNN's hand-written backward pass and autodiff of its scan.

    python -m pytest -q tests/test_jax_forms.py
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from common.config import CELLS, Config
from jax_impl import model as jax_model
from jax_impl.nn import RecurrentClassifier
from parity.tolerances import FORWARD_ATOL, GRAD_NORM_FLOOR, GRAD_RTOL


def tiny(cell: str, head: str = "all", **sizes) -> Config:
    return Config(**(dict(cell=cell, head=head, input_size=3, seq_len=5, hidden_size=8, num_layers=2) | sizes))


def batch(config: Config, size: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, config.seq_len, config.input_size), np.float32)


@pytest.mark.parametrize("cell", CELLS)
def test_inference_form_equals_training_form(cell):
    config = tiny(cell, seq_len=28, input_size=28)
    model, x = RecurrentClassifier(config, rngs=nnx.Rngs(0)), batch(config)
    trained, inferred = (model(x, unroll=unroll) for unroll in (False, True))
    np.testing.assert_allclose(np.asarray(inferred), np.asarray(trained), rtol=0, atol=FORWARD_ATOL)


def autodiff_rnn_layer(w_ih, w_hh, b_ih, b_hh, xs):
    """rnn_cell over the sequence, differentiated by JAX: the reference for the hand-written VJP."""
    return jax_model._rnn_forward(w_ih, w_hh, b_ih, b_hh, xs)


@pytest.mark.parametrize("steps,batch_size,inputs,hidden", [(1, 1, 1, 1), (5, 4, 3, 8), (28, 33, 28, 17)])
def test_rnn_hand_written_backward_equals_autodiff(steps, batch_size, inputs, hidden):
    rng = np.random.default_rng(steps)
    args = [rng.uniform(-0.5, 0.5, shape).astype(np.float32) for shape in
            ((hidden, inputs), (hidden, hidden), (hidden,), (hidden,), (steps, batch_size, inputs))]
    # A loss that uses every output and the final state, with distinct weights per element.
    w_out, w_h = rng.standard_normal((steps, batch_size, hidden)), rng.standard_normal((batch_size, hidden))

    def loss(layer, *args):
        h_n, out = layer(*args)
        return jnp.sum(out * w_out) + jnp.sum(h_n * w_h)
    ours = jax.grad(partial(loss, jax_model.rnn_layer), argnums=range(5))(*args)
    reference = jax.grad(partial(loss, autodiff_rnn_layer), argnums=range(5))(*args)
    for name, a, b in zip(("w_ih", "w_hh", "b_ih", "b_hh", "xs"), ours, reference):
        error = float(jnp.linalg.norm(a - b) / max(float(jnp.linalg.norm(b)), GRAD_NORM_FLOOR))
        assert error <= GRAD_RTOL, (name, error)
    np.testing.assert_array_equal(np.asarray(jax_model.rnn_layer(*args)[1]), np.asarray(autodiff_rnn_layer(*args)[1]))

