"""Forward parity: with torch's weights copied to JAX, every step's output, the final h (and c) of
every layer and the logits agree within FORWARD_ATOL, for every cell x head at odd sizes, in both
of JAX's scan forms (the training form and the unrolled inference form).

    python -m pytest -q parity/test_forward.py
"""
from __future__ import annotations

import numpy as np
import pytest

from parity.convert import torch_to_jax
from parity.measure import COMBO_IDS, COMBOS, config_for, forward_diffs, random_batch, torch_model
from parity.tolerances import FORWARD_ATOL, FORWARD_ATOL_CPU

# (hidden_size, num_layers, seq_len, batch, input_size). Every value of hidden {1, 3, 17}, layers
# {1, 2, 3}, seq_len {1, 5, 28} and batch {1, 33} appears at least twice, in different company;
# crossing them all would be 54 shapes x 6 variants of mostly XLA compilation time.
SIZES = [
    (1, 1, 1, 1, 1),
    (3, 2, 5, 33, 3),
    (17, 3, 28, 1, 28),
    (8, 2, 28, 33, 28),  # MNIST's shape
    (17, 1, 5, 33, 2),
    (1, 3, 28, 2, 5),
    (3, 1, 1, 33, 28),
    (17, 2, 1, 1, 7),
]


# JAX's inference form (scan unrolled, input projection hoisted) on the shapes that vary most:
# one step, 28 steps x 33 rows, 3 layers; each shape is a new XLA compilation.
FORM_SIZES = [(1, 1, 1, 1, 1), (8, 2, 28, 33, 28), (17, 3, 28, 1, 28)]
CASES = [(sizes, False) for sizes in SIZES] + [(sizes, True) for sizes in FORM_SIZES]
CASE_IDS = [f"H{h}-L{layers}-T{t}-B{b}-F{f}-{'inference' if unroll else 'training'}-form"
            for (h, layers, t, b, f), unroll in CASES]


@pytest.mark.parametrize("sizes,unroll", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("cell,head", COMBOS, ids=COMBO_IDS)
def test_forward_matches(cell, head, sizes, unroll):
    hidden_size, num_layers, seq_len, batch, input_size = sizes
    config = config_for(cell, head, hidden_size, num_layers, seq_len, input_size)
    model = torch_model(config, seed=seq_len)
    images, _ = random_batch(config, batch, seed=batch)
    diffs = forward_diffs(model, config, images, unroll=unroll)
    assert set(diffs) == ({"out", "h_n", "c_n", "logits"} if cell == "lstm" else {"out", "h_n", "logits"})
    assert max(diffs.values()) <= FORWARD_ATOL, f"max abs differences {diffs} exceed FORWARD_ATOL {FORWARD_ATOL:.0e}"


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_tolerance_catches_a_small_weight_change(cell):
    """The check is not vacuous: 1e-3 added to the first layer's recurrent bias (far less than any
    equation bug changes) moves the outputs well past FORWARD_ATOL."""
    config = config_for(cell, "last", hidden_size=8, num_layers=2, seq_len=5, input_size=3)
    model = torch_model(config)
    images, _ = random_batch(config, 4)
    params = torch_to_jax(model.state_dict(), config)
    params["rnn.bias_hh_l0"] = params["rnn.bias_hh_l0"] + 1e-3
    diffs = forward_diffs(model, config, images, jax_params=params)
    # 10x the CPU tolerance; on the H200 the smallest change, 1.5e-4, was 5x its wider FORWARD_ATOL.
    assert min(diffs.values()) > max(10 * FORWARD_ATOL_CPU, 3 * FORWARD_ATOL), diffs
    assert np.isfinite(list(diffs.values())).all()
