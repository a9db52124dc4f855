"""The GPU check's CPU quick mode runs end to end, so the script cannot rot between GPU loans.

    python -m pytest -q tests/test_gpu_check.py
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common import data


def test_quick_mode_runs_every_part(tmp_path):
    if data.verify(data.resolve_data_dir()):
        pytest.skip("MNIST is missing: run `python -m common.data fetch` (make test does)")
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report["parts"]) == {"parity", "speed-lstm-last-16", "epoch-torch", "epoch-jax-scan", "latency"}
    assert all(part["status"] == "ok" for part in report["parts"].values()), report["parts"]
    (torch_run, jax_run) = sorted(report["epochs"], key=lambda r: r["run"], reverse=True)
    assert (torch_run["run"], jax_run["run"]) == ("torch", "jax-scan")
    # Same initial weights, 4 steps on the same batches: the two frameworks' models agree.
    assert abs(torch_run["test_loss"] - jax_run["test_loss"]) < 1e-3, report["epochs"]
    markdown = (out / "report.md").read_text()
    for heading in ("Training throughput", "One epoch of lstm-last", "Inference latency"):
        assert heading in markdown
    assert " passed" in markdown and " failed" not in markdown


def test_without_a_gpu_it_says_how_to_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert done.returncode == 2 and "--quick" in done.stderr and "Traceback" not in done.stderr, done.stderr
