"""The chaos experiment on tiny idx data: a one-ulp start, four runs, the gaps table."""
from __future__ import annotations

import json

import numpy as np

from benchmarks import chaos
from common import checkpoint
from tests.conftest import write_idx_dir


def test_one_ulp_start_and_the_gaps_table(tmp_path):
    idx = write_idx_dir(tmp_path / "idx", n_train=96, n_test=40)
    out = tmp_path / "results"
    rows = chaos.chaos(["rnn"], out, preset="default", data_dir=str(idx), overrides={"epochs": 1, "hidden_size": 4})
    shared, _, _ = checkpoint.load_model(out / "runs" / "default-init-rnn.safetensors")
    off, _, _ = checkpoint.load_model(out / "runs" / "default-init-ulp-rnn.safetensors")
    ups = downs = 0
    for name, value in shared.items():  # every weight moved to a neighbouring float32, both ways used
        up, down = off[name] == np.nextafter(value, np.inf), off[name] == np.nextafter(value, -np.inf)
        assert np.all(up | down), name
        ups, downs = ups + int(up.sum()), downs + int(down.sum())
    assert ups > 0 and downs > 0
    runs = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    assert runs == ["default-jax-rnn", "default-jax-rnn-ulp", "default-torch-rnn", "default-torch-rnn-ulp"]
    (row,) = rows
    assert row["torch - jax"] == row["torch, shared"] - row["jax, shared"]
    assert json.loads((out / "chaos.json").read_text())["rows"] == rows
    assert "| rnn |" in (out / "chaos.md").read_text()
