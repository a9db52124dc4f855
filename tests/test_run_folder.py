"""A run folder has one owner, and a damaged checkpoint is caught, not trained on.

Real trainer processes: two started together on one folder (both frameworks), two `--resume`s
of one interrupted run at once, a bit flipped in the middle of a tensor of the newest training
state (resume falls back to the previous one; with both damaged, a refusal), a damaged
model.safetensors given to --init-from and to the exporter.

    python -m pytest -q -p no:xdist tests/test_run_folder.py
"""
from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from common import checkpoint, ownership
from common.errors import UserError
from tests.conftest import make_checkpoint, tiny_config, write_idx_dir
from tests.test_reliability import assert_same_run

# 2 epochs of 64 steps, a checkpoint every 10: long enough that two trainers started together
# overlap, short enough for seconds.
FLAGS = ["--epochs", "2", "--batch-size", "16", "--hidden-size", "8", "--checkpoint-every", "10",
         "--log-every", "8", "--no-progress"]


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return write_idx_dir(tmp_path_factory.mktemp("idx"), n_train=1024, n_test=64)


def trainer(framework: str, idx_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", f"{framework}_impl.train", "--data-dir", str(idx_dir), *extra]


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out, err


def one_line_error(stderr: str) -> str:
    assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
    return stderr.strip()


def winner_and_loser(results: list[tuple[int, str, str]]) -> tuple[int, str]:
    """Exactly one ran to the end; the other was refused with one line naming the folder's owner."""
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [(code, err[-2000:]) for code, _, err in results]
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    return winner, one_line_error(results[1 - winner][2])


def stop_after_checkpoints(command: list[str], out: Path, signum: int) -> None:
    """Run until both training states exist (two checkpoints), then send `signum`."""
    process = start(command)
    deadline = time.monotonic() + 300
    while not (out / checkpoint.PREVIOUS_TRAIN_STATE).exists():
        assert process.poll() is None, f"run ended before its second checkpoint: {process.communicate()}"
        assert time.monotonic() < deadline, "no second checkpoint within the timeout"
        time.sleep(0.005)
    process.send_signal(signum)
    process.communicate(timeout=120)
    assert not (out / "summary.json").exists(), "the run finished before it was stopped"


def flip_bit_mid_tensor(path: Path, tensor: str = "model.rnn.weight_hh_l0") -> None:
    """Flip one bit in the middle of `tensor`'s bytes: safetensors still reads the file."""
    data = bytearray(path.read_bytes())
    (header_size,) = struct.unpack("<Q", data[:8])
    begin, end = json.loads(data[8:8 + header_size])[tensor]["data_offsets"]
    data[8 + header_size + (begin + end) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def reference(idx_dir, tmp_path_factory) -> Path:
    """The uninterrupted torch run every interrupted one must end equal to."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = subprocess.run(trainer("torch", idx_dir, *FLAGS, "--out", str(out)), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_two_trainers_on_one_folder(idx_dir, tmp_path, framework):
    """Started together with different seeds: one trains, the other is refused naming the owner,
    and every file in the folder is the winner's run."""
    out = tmp_path / "run"
    seeds = ["1", "2"]
    processes = [start(trainer(framework, idx_dir, *FLAGS, "--seed", seed, "--out", str(out))) for seed in seeds]
    results = [finish(process) for process in processes]
    winner, error = winner_and_loser(results)
    owner = json.loads((out / ownership.LOCK_NAME).read_text())
    assert owner["pid"] == processes[winner].pid
    # Refused under the winner's lock (naming it) while it runs; a loser whose start was slowed past
    # the winner's whole run (a loaded machine) is refused by the finished run's config.json instead.
    in_use = f"error: {out} is in use by pid {owner['pid']} on {owner['host']}, started {owner['started']}"
    assert error.startswith(in_use) or error.startswith(f"error: {out} already holds a run; "), error
    seed = int(seeds[winner])
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == seed
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == seed
    assert checkpoint.load_model(out / "model.safetensors")[1].seed == seed
    for name in (checkpoint.TRAIN_STATE, checkpoint.PREVIOUS_TRAIN_STATE):
        assert checkpoint.load_train_state(out / name)[2].seed == seed
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == 2 * (64 // 8 + 1)  # one run's records, once each
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_two_resumes_at_once(idx_dir, reference, tmp_path):
    """One interrupted run, two --resume together: one finishes it (equal to the uninterrupted
    run), the other is refused."""
    out = tmp_path / "run"
    stop_after_checkpoints(trainer("torch", idx_dir, *FLAGS, "--out", str(out)), out, signal.SIGKILL)
    processes = [start(trainer("torch", idx_dir, "--resume", str(out), "--no-progress")) for _ in range(2)]
    winner, error = winner_and_loser([finish(process) for process in processes])
    assert f"{out} is in use by pid {processes[winner].pid}" in error
    assert_same_run(out, reference)


def test_flipped_bit_in_the_newest_state_resumes_from_the_previous(idx_dir, reference, tmp_path):
    out = tmp_path / "run"
    stop_after_checkpoints(trainer("torch", idx_dir, *FLAGS, "--out", str(out)), out, signal.SIGTERM)
    newest = out / checkpoint.TRAIN_STATE
    flip_bit_mid_tensor(newest)
    with pytest.raises(UserError, match="is damaged"):
        checkpoint.load_train_state(newest)
    result = subprocess.run(trainer("torch", idx_dir, "--resume", str(out), "--no-progress"), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    resumed = next(line for line in result.stdout.splitlines() if line.startswith("resuming"))
    assert f"from {checkpoint.PREVIOUS_TRAIN_STATE} (the newer one was passed over: {newest} is damaged" in resumed
    assert_same_run(out, reference)  # resuming from the older state replays more steps, to the same end


def test_both_states_damaged_is_a_refusal(idx_dir, tmp_path):
    out = tmp_path / "run"
    stop_after_checkpoints(trainer("torch", idx_dir, *FLAGS, "--out", str(out)), out, signal.SIGTERM)
    for name in (checkpoint.TRAIN_STATE, checkpoint.PREVIOUS_TRAIN_STATE):
        flip_bit_mid_tensor(out / name)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = subprocess.run(trainer("torch", idx_dir, "--resume", str(out), "--no-progress"), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 2
    error = one_line_error(result.stderr)
    assert error.startswith(f"error: no training state in {out} can be resumed: ") and "Traceback" not in error
    assert f"--init-from {out}/model.safetensors" in error
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing overwritten


def test_damaged_model_is_refused_by_init_from_and_export(idx_dir, tmp_path):
    model = make_checkpoint(tmp_path / "model.safetensors", "gru")
    flip_bit_mid_tensor(model, "rnn.weight_ih_l0")
    for command in (trainer("torch", idx_dir, "--init-from", str(model), "--out", str(tmp_path / "run"), *FLAGS),
                    [sys.executable, "-m", "export.onnx", "--checkpoint", str(model), "--out",
                     str(tmp_path / "model.onnx")]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 2, result.stderr
        assert one_line_error(result.stderr).startswith(f"error: {model} is damaged")
    assert not (tmp_path / "run").exists() and not (tmp_path / "model.onnx").exists()


def test_checkpoint_without_a_checksum_loads_with_a_note(tmp_path, capsys):
    config = tiny_config()
    params = checkpoint.initial_params(config, seed=0)
    path = tmp_path / "old.safetensors"
    save_file(params, str(path), metadata={"format": checkpoint.FORMAT, "config": json.dumps(config.to_dict())})
    loaded, saved, _ = checkpoint.load_model(path)
    assert saved == config and all(np.array_equal(loaded[name], params[name]) for name in params)
    assert capsys.readouterr().err == f"note: {path} has no checksum (written before checkpoints had one); " \
                                      "loaded unchecked\n"


def test_compare_does_not_clear_a_folder_a_trainer_owns(tmp_path):
    """A compare run restarting a pair afresh removes its folder first: not while another owns it."""
    from benchmarks.pairs import run_pair

    run_dir = tmp_path / "default-torch-rnn"
    with ownership.claim(run_dir):
        (run_dir / "config.json").write_text("{}")
        with pytest.raises(UserError, match=rf"{run_dir} is in use by pid \d+ on .*, started "):
            run_pair("torch", tiny_config(), run_dir, data_dir=None, rerun=True, cores=[0])
        assert (run_dir / "config.json").read_text() == "{}"
