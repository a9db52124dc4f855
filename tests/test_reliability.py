"""Reliability, for both trainers: a run killed with SIGKILL (or stopped with Ctrl-C or SIGTERM)
resumes to bit-identical weights and metrics, and two runs with the same seed are identical.

Each test drives the real CLI in a subprocess, the way a user (or a crashing machine) would.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import write_idx_dir

FRAMEWORKS = ["torch", "jax"]
# 2 epochs of 64 steps, a checkpoint every 10: a kill lands mid-epoch, between checkpoints.
RUN_FLAGS = ["--epochs", "2", "--batch-size", "16", "--hidden-size", "12", "--checkpoint-every", "10",
             "--log-every", "8", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return write_idx_dir(tmp_path_factory.mktemp("idx"), n_train=1024, n_test=64)


def command(framework: str, idx_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", f"{framework}_impl.train", "--data-dir", str(idx_dir), *extra]


def start(framework, idx_dir, out) -> subprocess.Popen:
    return subprocess.Popen(command(framework, idx_dir, *RUN_FLAGS, "--out", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(process: subprocess.Popen, out: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not (out / "train_state.safetensors").exists():
        assert process.poll() is None, f"run ended before its first checkpoint: {process.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint within the timeout"
        time.sleep(0.005)


def run_to_end(framework, idx_dir, *flags) -> subprocess.CompletedProcess:
    result = subprocess.run(command(framework, idx_dir, *flags), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def assert_same_run(a: Path, b: Path) -> None:
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    weights_a, weights_b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        np.testing.assert_array_equal(weights_a[name], weights_b[name], err_msg=name)  # bit-identical


@pytest.fixture(scope="module")
def reference_runs(idx_dir, tmp_path_factory):
    """Two uninterrupted runs per framework with the same seed."""
    runs = {}
    for framework in FRAMEWORKS:
        root = tmp_path_factory.mktemp(f"ref-{framework}")
        for name in ("a", "b"):
            run_to_end(framework, idx_dir, *RUN_FLAGS, "--out", str(root / name))
        runs[framework] = root
    return runs


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_seed_gives_identical_runs(reference_runs, framework):
    assert_same_run(reference_runs[framework] / "a", reference_runs[framework] / "b")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sigkill_then_resume_is_bit_identical(idx_dir, reference_runs, tmp_path, framework):
    out = tmp_path / "killed"
    process = start(framework, idx_dir, out)
    wait_for_checkpoint(process, out)
    time.sleep(0.05)  # let it run past the checkpoint, so the resumed run must replay steps
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "summary.json").exists(), "the run finished before it was killed"
    result = run_to_end(framework, idx_dir, "--resume", str(out), "--no-progress")
    assert "resuming" in result.stdout
    assert_same_run(out, reference_runs[framework] / "a")


# Each signal and each framework once: both signals take the same path (common.run_state.
# STOP_SIGNALS) in both trainers; tests/test_distributed.py sends SIGTERM to both frameworks again.
@pytest.mark.parametrize("framework, signum, status", [("torch", signal.SIGINT, 130), ("jax", signal.SIGTERM, 143)],
                         ids=["torch-ctrl-c", "jax-sigterm"])
def test_stop_signal_saves_and_says_how_to_resume(idx_dir, reference_runs, tmp_path, framework, signum, status):
    """Ctrl-C and SIGTERM (what kill and schedulers send): the step in flight finishes, the state is
    saved, the resume command printed, exit status 128 + signal; the resumed run is bit-identical."""
    out = tmp_path / "interrupted"
    process = start(framework, idx_dir, out)
    wait_for_checkpoint(process, out)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert not (out / "summary.json").exists(), "the run finished before the signal"
    assert f"--resume {out}" in stderr and "Traceback" not in stderr
    run_to_end(framework, idx_dir, "--resume", str(out), "--no-progress")
    assert_same_run(out, reference_runs[framework] / "a")


def test_resume_of_a_folder_without_state(tmp_path, idx_dir):
    result = subprocess.run(command("torch", idx_dir, "--resume", str(tmp_path)), capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_resume_refuses_a_run_of_the_other_framework(idx_dir, reference_runs):
    run = reference_runs["torch"] / "a"
    before = (run / "train_state.safetensors").read_bytes()
    result = subprocess.run(command("jax", idx_dir, "--resume", str(run)), capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"is a torch run; resume it with python -m torch_impl.train --resume {run}" in result.stderr
    assert (run / "train_state.safetensors").read_bytes() == before


def test_no_progress_bar_when_output_is_not_a_terminal(idx_dir, tmp_path):
    """Progress bars are on by default, but never written into a log file or pipe."""
    flags = [flag for flag in RUN_FLAGS if flag != "--no-progress"]
    result = run_to_end("torch", idx_dir, *flags, "--epochs", "1", "--out", str(tmp_path / "run"))
    assert "\r" not in result.stderr and "step/s" not in result.stderr and "it/s" not in result.stderr
    # The log counter restarts each epoch: 64 steps per epoch, a line every 8.
    lines = [line for line in result.stdout.splitlines() if " step " in line]
    assert [line.split(" |")[0] for line in lines] == [f"epoch 1 step {8 * k}/64" for k in range(1, 9)]


def test_log_counter_restarts_each_epoch(tmp_path, capsys):
    """3 steps per epoch, a line every 2: 'epoch 2 step 2/3', not a counter running across epochs
    ('epoch 2 step 1/3' at global step 4)."""
    from common import data, training
    from tests.conftest import options, tiny_config
    from torch_impl.train import TorchBackend

    config = tiny_config(epochs=2, seq_len=5, input_size=4)
    train_set = data.synthetic(37, seed=1, seq_len=5, input_size=4)
    test_set = data.synthetic(8, seed=2, seq_len=5, input_size=4)
    training.train(TorchBackend, config, options(tmp_path), "torch", train_set=train_set, test_set=test_set)
    lines = [line.split(" |")[0] for line in capsys.readouterr().out.splitlines() if " step " in line]
    assert lines == ["epoch 1 step 2/3", "epoch 2 step 2/3"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records if "loss" in r] == [(1, 2), (2, 5)]


def test_resume_refuses_new_hyperparameters(tmp_path, idx_dir, reference_runs):
    result = subprocess.run(command("torch", idx_dir, "--resume", str(reference_runs["torch"] / "a"), "--lr", "1"),
                            capture_output=True, text=True)
    assert result.returncode == 2 and "drop lr" in result.stderr


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    from common import atomic

    target = tmp_path / "summary.json"
    target.write_text("old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic.atomic_write_text(target, "new")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
