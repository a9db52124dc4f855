"""ONNX parity: the graph the project's exporter writes, run by onnxruntime, gives the logits of
torch and of JAX (same weights, same inputs) within ONNX_ATOL, at batch 1 and 257.

    python -m pytest -q parity/test_onnx.py

Each cell x head is exported once per module (`export.onnx.to_onnx`, in memory; seconds each) at
a small size: seq_len 5 keeps nn.RNN's unrolled graph short. export/verify.py checks the MNIST
shape and real images; this checks that all three implementations agree.
"""
from __future__ import annotations

import pytest

from parity.measure import COMBO_IDS, COMBOS, config_for, onnx_diffs, onnx_session, random_batch, torch_model
from parity.tolerances import ONNX_ATOL

BATCH_SIZES = (1, 257)  # 257: an odd size the example batch (2) never showed the exporter


@pytest.fixture(scope="module", params=COMBOS, ids=COMBO_IDS)
def exported(request):
    cell, head = request.param
    config = config_for(cell, head, hidden_size=8, num_layers=2, seq_len=5, input_size=3)
    model = torch_model(config).eval()
    return config, model, onnx_session(model, config)


@pytest.mark.parametrize("batch", BATCH_SIZES, ids=[f"B{n}" for n in BATCH_SIZES])
def test_onnx_matches_torch_and_jax(exported, batch):
    config, model, session = exported
    images, _ = random_batch(config, batch, seed=batch)
    diffs = onnx_diffs(session, model, config, images)
    assert max(diffs.values()) <= ONNX_ATOL, f"max abs logit differences {diffs} exceed ONNX_ATOL {ONNX_ATOL:.0e}"
