"""Gradient parity: d(mean cross-entropy)/d(every parameter), torch autograd vs jax.grad of the JAX
trainer's loss, from the same weights and batch, within GRAD_RTOL (norm-wise relative error).

    python -m pytest -q parity/test_gradients.py
"""
from __future__ import annotations

import pytest

from common.checkpoint import param_shapes
from parity.measure import COMBO_IDS, COMBOS, config_for, gradient_errors, random_batch, torch_model
from parity.tolerances import FORWARD_ATOL, GRAD_RTOL

# (hidden_size, num_layers, seq_len, batch, input_size): the unit-test size and an odd, deep, long
# one (backpropagation through 28 steps and 3 layers, where rounding has the most room to grow).
SIZES = [(8, 2, 5, 2, 3), (17, 3, 28, 33, 28)]
SIZE_IDS = [f"H{h}-L{layers}-T{t}-B{b}-F{f}" for h, layers, t, b, f in SIZES]


@pytest.mark.parametrize("sizes", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("cell,head", COMBOS, ids=COMBO_IDS)
def test_gradients_match(cell, head, sizes):
    hidden_size, num_layers, seq_len, batch, input_size = sizes
    config = config_for(cell, head, hidden_size, num_layers, seq_len, input_size)
    images, labels = random_batch(config, batch, seed=1)
    errors = gradient_errors(torch_model(config), config, images, labels)
    loss_diff = errors.pop("loss")
    assert loss_diff <= FORWARD_ATOL, f"losses differ by {loss_diff:.2e}"
    assert list(errors) == list(param_shapes(config))  # every parameter, none skipped
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_RTOL, f"{worst}: relative error {errors[worst]:.2e} > GRAD_RTOL; all: {errors}"
