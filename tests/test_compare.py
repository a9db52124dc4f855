"""The comparison report on tiny idx data: every file written, ONNX checked, shared initial weights,
resumable, failures reported in one line, README update."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import compare, plots
from common import checkpoint
from common.config import Config
from common.errors import UserError
from common.report import markers
from parity.tolerances import TRAIN_PARAMS_ATOL_FIRST, TRAIN_PARAMS_GROWTH
from tests.conftest import write_idx_dir
from torch_impl.model import RecurrentClassifier, get_params

N_TRAIN = 96  # batch 64: two steps, the second a partial batch


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    idx = write_idx_dir(root / "idx", n_train=N_TRAIN, n_test=40)
    argv = ["--variants", "rnn", "lstm-last", "--epochs", "1", "--hidden-size", "4", "--data-dir", str(idx),
            "--out", str(root / "results")]
    runs = compare.main(argv)
    return root, argv, runs


def test_writes_results_for_every_pair(report):
    root, _, runs = report
    results = json.loads((root / "results" / "results.json").read_text())
    assert [(r["framework"], r["variant"]) for r in results["runs"]] == \
        [("torch", "rnn"), ("jax", "rnn"), ("torch", "lstm-last"), ("jax", "lstm-last")]
    for run in results["runs"]:
        assert {"framework", "variant", "test_accuracy", "train_seconds", "samples_per_second"} <= run.keys()
        assert run["onnx_test_accuracy"] == run["test_accuracy"]
        assert run["reference_accuracy"] == compare.REFERENCE[run["variant"]]
    table = (root / "results" / "results.md").read_text()
    assert "| rnn | 97.28% |" in table and "| lstm-last | 98.40% |" in table
    assert "| torch - jax |" in table and "min in all" in table  # every pair trained in this invocation
    gap = 100 * (results["runs"][0]["test_accuracy"] - results["runs"][1]["test_accuracy"])
    assert f"| {gap:+.2f} |" in next(line for line in table.splitlines() if line.startswith("| rnn |"))
    assert (root / "results" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Limited run" in table and "hidden size 4" in table and "training images" not in table


def test_a_run_shorter_than_one_log_interval_still_draws_its_loss(report):
    root, _, runs = report  # two steps, log interval 100: no interval record, one epoch record
    records = [json.loads(line) for line in (root / "results" / "runs" / "default-torch-rnn" / "metrics.jsonl")
               .read_text().splitlines()]
    assert not any("loss" in r for r in records)
    steps, losses = plots.loss_points(records)
    assert steps == [2] and losses == [records[-1]["train_loss"]]
    with_intervals = [{"step": 100, "loss": 0.5}, {"step": 150, "train_loss": 0.4, "test_accuracy": 0.9}]
    assert plots.loss_points(with_intervals) == ([100], [0.5])


def test_both_frameworks_start_from_torchs_initial_weights(report):
    root, _, runs = report
    for variant in ("rnn", "lstm-last"):
        init_path = root / "results" / "runs" / f"default-init-{variant}.safetensors"
        init, config, _ = checkpoint.load_model(init_path)
        assert config == Config(**{**compare.PRESETS["default"], "cell": config.cell, "head": config.head,
                                   "epochs": 1, "hidden_size": 4})
        torch.manual_seed(config.seed)  # torch's own initialisation, as the committed results/ started from
        expected = get_params(RecurrentClassifier(config))
        assert all(np.array_equal(init[name], expected[name]) for name in expected)
        # Same start, same two batches: the frameworks end within the parity suite's Adam-step tolerance
        # (independent initial weights differ by ~1/sqrt(hidden) = 0.5).
        final = {framework: checkpoint.load_model(root / "results" / "runs" / f"default-{framework}-{variant}"
                                                  / "model.safetensors")[0] for framework in compare.FRAMEWORKS}
        gap = max(float(np.max(np.abs(final["torch"][name] - final["jax"][name]))) for name in expected)
        assert gap < TRAIN_PARAMS_ATOL_FIRST + TRAIN_PARAMS_GROWTH, (variant, gap)
    for run in runs:
        assert run["initial_weights"].endswith(f"default-init-{run['variant']}.safetensors")
        assert "--init-from" in run["command"] and f"-m {run['framework']}_impl.train" in run["command"]


def test_finished_pairs_are_not_trained_again(report, capsys):
    root, argv, runs = report
    before = {p: p.stat().st_mtime_ns for pattern in ("*/model.safetensors", "*/model.onnx")
              for p in (root / "results" / "runs").glob(pattern)}
    assert len(before) == 8  # 4 pairs: neither trained nor exported again
    again = compare.main(argv)
    assert "done earlier, reusing" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in runs]


def test_pairs_made_with_other_settings_are_refused(report):
    root, argv, _ = report
    other = [*argv, "--limit-test", "20"]
    with pytest.raises(UserError, match=r"made with other settings: limit_test None \(now 20\).*--rerun"):
        compare.main(other)


def test_a_failing_pair_is_one_line_naming_its_log(tmp_path):
    idx = write_idx_dir(tmp_path / "idx", n_train=N_TRAIN, n_test=40)
    argv = ["--variants", "gru", "--frameworks", "torch", "--limit-train", str(N_TRAIN + 1), "--hidden-size", "4",
            "--data-dir", str(idx), "--out", str(tmp_path / "results")]
    with pytest.raises(UserError, match=r"default-torch-gru failed \(exit 2\): error: .*limit.* full log in .*train\.log"):
        compare.main(argv)


def running_trainers(out: Path) -> list[str]:
    """Command lines of live processes that train into OUT."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if b"-m" in argv and any(arg.startswith(str(out).encode()) for arg in argv) and b"benchmarks.compare" not in argv:
            found.append(b" ".join(argv).decode())
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="lists processes through /proc")
def test_sigterm_reaches_the_trainers_and_no_new_pair_starts(tmp_path):
    """`kill` sends SIGTERM to compare alone (Ctrl-C reaches the whole process group): compare passes
    it on, the running trainer saves its state, the queued pair never starts, nothing is left running,
    and compare exits with 143 and one line."""
    idx = write_idx_dir(tmp_path / "idx", n_train=N_TRAIN, n_test=40)
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "benchmarks.compare", "--variants", "rnn", "gru", "--frameworks", "torch",
            "--epochs", "100000", "--hidden-size", "4", "--no-onnx", "--jobs", "1", "--data-dir", str(idx),
            "--out", str(out)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    try:
        for line in process.stdout:
            if line.startswith("[default-torch-rnn] epoch 2 "):  # training, with a checkpoint behind it
                break
        assert running_trainers(out), "the trainer should be running"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: finished pairs are kept"), stderr
    assert "Traceback" not in stderr + stdout
    assert running_trainers(out) == []
    run_dir = out / "runs" / "default-torch-rnn"
    assert (run_dir / "train_state.safetensors").exists()
    assert "--resume" in (run_dir / "train.log").read_text()  # the trainer said how to resume
    assert not (out / "runs" / "default-torch-gru").exists()


def test_quick_checks_cannot_touch_the_reference_results(tmp_path):
    for argv in (["--out", str(compare.REFERENCE_DIR), "--limit-train", "2000"],
                 ["--out", str(compare.REFERENCE_DIR / "tuned"), "--hidden-size", "8"]):
        with pytest.raises(UserError, match="holds the reference results .* drop --out \\(default runs/compare\\)"):
            compare.main(argv)
    with pytest.raises(UserError, match="--update-readme pastes reference tables"):
        compare.main(["--out", str(tmp_path), "--limit-test", "100", "--update-readme"])
    ignored = subprocess.run(["git", "check-ignore", "-q", str(compare.DEFAULT_OUT / "results.md")],
                             cwd=compare.REFERENCE_DIR.parent)
    assert ignored.returncode == 0, "the default --out must be git-ignored"


def test_limited_runs_are_marked():
    full = {"limit_train": None, "limit_test": None, "hidden_size": 256}
    assert compare.limits_note(full) == ""
    note = compare.limits_note({**full, "limit_train": 2000, "limit_test": 500})
    assert note.startswith("**Limited run") and "first 2,000 training images, first 500 test images" in note


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(UserError, match="--jobs must be at least 1"):
        compare.main(["--jobs", "0", "--out", str(tmp_path)])


def test_update_readme_replaces_only_the_presets_block(tmp_path):
    readme = tmp_path / "README.md"
    default, tuned = (markers(compare.readme_block(p)) for p in ("default", "tuned"))
    readme.write_text(f"intro\n{default[0]}\nold\n{default[1]}\n{tuned[0]}\nkeep\n{tuned[1]}\nrest\n")
    compare.paste_between_markers(readme, compare.readme_block("default"), "new table\n")
    assert readme.read_text() == f"intro\n{default[0]}\nnew table\n{default[1]}\n{tuned[0]}\nkeep\n{tuned[1]}\nrest\n"
    readme.write_text("no markers")
    with pytest.raises(UserError, match="markers"):
        compare.paste_between_markers(readme, compare.readme_block("tuned"), "x")


def test_each_table_has_its_own_readme_block():
    assert compare.readme_block("default", {"seed": 3}) == "results:default"  # a seed is not a setting
    assert compare.readme_block("tuned", {"seed": 3}, multi_seed=True) == "seeds:tuned"
    assert compare.readme_block("default", {"lr": 0.001}, multi_seed=True) == "seeds:default-lr0.001"
