"""Data parallel equals one process: torch DDP (2 real processes under torchrun, gloo) and JAX
sharded over 2 CPU devices train 20 steps from the same weights as the single-process runs of
the same global batch; a 2-process run stopped with SIGTERM resumes on 1 process.

    python -m tests.test_distributed      # print the measured gaps (parity/tolerances.py DP_*)
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

from common import checkpoint
from parity.tolerances import (DP_LOSS_ATOL, DP_PARAMS_ATOL, TRAIN_LOSS_ATOL, TRAIN_PARAMS_ATOL_FIRST,
                               TRAIN_PARAMS_GROWTH)
from tests.conftest import tiny_config, write_idx_dir

STEPS = 20  # 19 full global batches of 16 and a last one of 12: worker 0 gets 8 real rows, worker 1 4 + 4 padding
TRAIN_IMAGES = 19 * 16 + 12
FLAGS = ["--epochs", "1", "--batch-size", "16", "--log-every", "1", "--no-progress", "--lr", "0.005"]


def trainer(framework: str, processes: int) -> list[str]:
    """The command that starts `processes` data-parallel workers (JAX: devices of one process)."""
    if framework == "torch" and processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                "-m", "torch_impl.train"]
    devices = ["--devices", str(processes)] if framework == "jax" else []  # explicit: --resume keeps the saved one
    return [sys.executable, "-m", f"{framework}_impl.train", *devices]


def train(framework: str, processes: int, idx_dir: Path, out: Path, init: Path, *extra: str) -> Path:
    result = subprocess.run([*trainer(framework, processes), "--data-dir", str(idx_dir), "--init-from", str(init),
                             *FLAGS, "--out", str(out), *extra], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def losses(run: Path) -> np.ndarray:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return np.array([record["loss"] for record in records if "loss" in record])


def params_gap(a: Path, b: Path) -> float:
    weights_a, weights_b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    return max(float(np.max(np.abs(weights_a[name] - weights_b[name]))) for name in weights_a)


def make_runs(root: Path, variant: str = "lstm-last", seed: int = 0) -> dict[tuple[str, int], Path]:
    """Single-process and 2-worker runs of both frameworks from torch's initial weights."""
    from torch_impl.train import TorchBackend

    idx_dir = write_idx_dir(root / "idx", n_train=TRAIN_IMAGES, n_test=40, seed=seed)
    config = tiny_config(cell=variant.split("-")[0], head="last" if variant.endswith("last") else "all", seed=seed)
    init = root / "init.safetensors"
    checkpoint.save_model(init, TorchBackend(config, "cpu").get_params(), config)
    return {(framework, n): train(framework, n, idx_dir, root / f"{framework}-{n}", init)
            for framework in ("torch", "jax") for n in (1, 2)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("dp"))


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_data_parallel_equals_one_process(runs, framework):
    single, parallel = runs[framework, 1], runs[framework, 2]
    assert len(losses(single)) == len(losses(parallel)) == STEPS
    gaps = float(np.max(np.abs(losses(single) - losses(parallel)))), params_gap(single, parallel)
    print(f"{framework} DP(2) vs 1 process: losses {gaps[0]:.2e}, weights {gaps[1]:.2e}")
    assert gaps[0] <= DP_LOSS_ATOL and gaps[1] <= DP_PARAMS_ATOL, gaps
    # The runs did train: the weights moved far beyond the tolerance.
    init = load_file(str(single.parent / "init.safetensors"))
    final = load_file(str(single / "model.safetensors"))
    assert max(float(np.max(np.abs(final[name] - init[name]))) for name in init) > 100 * DP_PARAMS_ATOL


def test_data_parallel_torch_equals_data_parallel_jax(runs):
    """DDP(2) vs JAX sharded(2): the cross-framework bounds of parity/test_training.py (same sizes)."""
    torch_run, jax_run = runs["torch", 2], runs["jax", 2]
    gaps = float(np.max(np.abs(losses(torch_run) - losses(jax_run)))), params_gap(torch_run, jax_run)
    print(f"DDP(2) vs JAX(2): losses {gaps[0]:.2e}, weights {gaps[1]:.2e}")
    assert gaps[0] <= TRAIN_LOSS_ATOL and gaps[1] <= TRAIN_PARAMS_ATOL_FIRST + (STEPS - 1) * TRAIN_PARAMS_GROWTH, gaps


STOP_FLAGS = ["--epochs", "2", "--checkpoint-every", "10", "--log-every", "8"]


@pytest.fixture(scope="module")
def stop_runs(tmp_path_factory):
    """`stop_runs(framework)` -> (idx dir, initial weights, the uninterrupted 2-worker run), made once."""
    from torch_impl.train import TorchBackend

    made = {}

    def get(framework: str) -> tuple[Path, Path, Path]:
        if framework not in made:
            root = tmp_path_factory.mktemp(f"stop-{framework}")
            idx_dir = write_idx_dir(root / "idx", n_train=39 * 16 + 8, n_test=40)  # last batch: worker 1 all padding
            config = tiny_config(hidden_size=12)
            init = root / "init.safetensors"
            checkpoint.save_model(init, TorchBackend(config, "cpu").get_params(), config)
            made[framework] = idx_dir, init, train(framework, 2, idx_dir, root / "reference", init, *STOP_FLAGS)
        return made[framework]
    return get


def start_two_workers(framework: str, idx_dir: Path, init: Path, out: Path) -> subprocess.Popen:
    """A 2-worker run, returned once its first checkpoint is written."""
    process = subprocess.Popen([*trainer(framework, 2), "--data-dir", str(idx_dir), "--init-from", str(init), *FLAGS,
                                "--out", str(out), *STOP_FLAGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    while not (out / "train_state.safetensors").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.005)
    return process


def assert_resumes_on_one(framework: str, idx_dir: Path, out: Path, reference: Path) -> None:
    """The run resumed by one process on one device ends where the uninterrupted 2-worker run ends."""
    assert not (out / "summary.json").exists(), "the run finished before it was stopped"
    result = subprocess.run([*trainer(framework, 1), "--resume", str(out), "--no-progress",
                             "--data-dir", str(idx_dir)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    gaps = params_gap(out, reference), float(np.max(np.abs(losses(out) - losses(reference))))
    print(f"{framework} resumed on 1 vs uninterrupted on 2: params {gaps[0]:.2e}, losses {gaps[1]:.2e}")
    assert gaps[0] <= DP_PARAMS_ATOL and gaps[1] <= DP_LOSS_ATOL, gaps


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_two_worker_run_stopped_by_sigterm_resumes_on_one(stop_runs, tmp_path, framework):
    """torch: torchrun forwards SIGTERM, every rank stops after the same step, rank 0 saves; JAX: the
    2-device process stops."""
    idx_dir, init, reference = stop_runs(framework)
    out = tmp_path / "stopped"
    process = start_two_workers(framework, idx_dir, init, out)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert framework == "torch" or process.returncode == 143, stderr  # torchrun reports its workers itself
    assert f"Resume with: {sys.executable} -m {framework}_impl.train --resume {out}" in stderr  # works outside the venv
    assert stderr.count("interrupted; state saved") == 1  # rank 0 only
    assert_resumes_on_one(framework, idx_dir, out, reference)


def test_torchrun_worker_killed_then_resumed_on_one(stop_runs, tmp_path):
    """SIGKILL of rank 0 (the worker that owns the folder and writes the checkpoints) mid-run:
    torchrun ends the run, the kernel drops the folder's lock, and `--resume` on one process
    continues at once from the last checkpoint."""
    idx_dir, init, reference = stop_runs("torch")
    out = tmp_path / "killed"
    process = start_two_workers("torch", idx_dir, init, out)
    rank0 = json.loads((out / ".lock").read_text())["pid"]
    assert rank0 != process.pid  # a worker, not torchrun
    os.kill(rank0, signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0, stderr
    assert_resumes_on_one("torch", idx_dir, out, reference)


def test_impossible_settings_are_one_line_errors(tmp_path):
    idx_dir = write_idx_dir(tmp_path / "idx")
    for command in ([*trainer("jax", 3), "--batch-size", "16"],  # 16 rows do not split over 3 devices
                    [*trainer("torch", 1), "--devices", "2"],  # torch: one device per process
                    [*trainer("torch", 1), "--dist-backend", "nccl"]):  # without torchrun
        result = subprocess.run([*command, "--data-dir", str(idx_dir), "--out", str(tmp_path / "x")],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_nccl_without_gpus_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: NCCL is possible here")
    idx_dir = write_idx_dir(tmp_path / "idx")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1",
                             "-m", "torch_impl.train", "--dist-backend", "nccl", "--data-dir", str(idx_dir),
                             "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    # Our line first; what follows is torchrun's own report of a failed worker.
    assert result.stderr.startswith("error: --dist-backend nccl needs GPUs"), result.stderr
    assert "torch_impl/" not in result.stderr, result.stderr  # no traceback through our code


if __name__ == "__main__":
    import tempfile

    for variant in ("rnn", "gru", "lstm", "lstm-last"):
        for seed in (0, 1):
            with tempfile.TemporaryDirectory() as folder:
                found = make_runs(Path(folder), variant, seed)
                gaps = {f: (float(np.max(np.abs(losses(found[f, 1]) - losses(found[f, 2])))),
                            params_gap(found[f, 1], found[f, 2])) for f in ("torch", "jax")}
                cross = params_gap(found["torch", 2], found["jax", 2])
                print(f"{variant:9} seed {seed}: loss/params gap DP(2) vs 1: torch {gaps['torch'][0]:.2e}/"
                      f"{gaps['torch'][1]:.2e}, jax {gaps['jax'][0]:.2e}/{gaps['jax'][1]:.2e}; "
                      f"torch DP vs jax DP params {cross:.2e}", flush=True)
