"""The multi-seed report: its statistics on made-up accuracies, and `compare --seeds` end to end on
tiny idx data (one queue, a report per seed, the summary, seeds added later, reuse without checkpoints)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from scipy import stats as scipy_stats

from benchmarks import compare, seeds
from common import checkpoint
from common.errors import UserError
from tests.conftest import write_idx_dir


def test_spread_leaves_diverged_runs_out_and_counts_them():
    accuracies = [0.97, 0.10, 0.98, 0.96]
    got = seeds.spread(accuracies)
    assert got["runs"] == 4 and got["diverged"] == 1
    assert got["mean"] == pytest.approx(np.mean([0.97, 0.98, 0.96]))
    assert got["sd"] == pytest.approx(np.std([0.97, 0.98, 0.96], ddof=1))
    assert (got["min"], got["max"], got["all_min"]) == (0.96, 0.98, 0.10)
    everything_diverged = seeds.spread([0.09, 0.11])
    assert everything_diverged["mean"] is None and everything_diverged["diverged"] == 2
    assert seeds.percent(everything_diverged) == "2 of 2 diverged (9.00-11.00%)"
    assert seeds.percent(got) == "97.00 ± 1.00% (96.00-98.00); 1 of 4 diverged"


def test_the_torch_jax_difference_is_paired_by_seed():
    torch_acc, jax_acc = [0.981, 0.975, 0.990, 0.978, 0.10], [0.980, 0.972, 0.988, 0.977, 0.97]
    got = seeds.paired_difference(list(zip(torch_acc, jax_acc)))
    differences = np.array(torch_acc[:4]) - np.array(jax_acc[:4])  # seed 4 diverged in torch: not a pair
    expected = scipy_stats.ttest_rel(torch_acc[:4], jax_acc[:4])
    assert got["seeds"] == 4 and got["mean"] == pytest.approx(differences.mean())
    assert got["se"] == pytest.approx(differences.std(ddof=1) / 2)
    assert got["t"] == pytest.approx(expected.statistic)
    assert got["distinguishable"] == (expected.pvalue < 1 - seeds.CONFIDENCE)
    # The same gap with no scatter across seeds is distinguishable; one with scatter is not.
    assert seeds.paired_difference([(0.75, 0.5), (0.625, 0.375), (0.875, 0.625)])["t"] == math.inf
    noisy = seeds.paired_difference([(0.98, 0.97), (0.97, 0.98), (0.96, 0.95)])
    assert not noisy["distinguishable"] and "not distinguishable" in seeds.difference_cell(noisy)
    assert seeds.paired_difference([(0.98, 0.97)]) is None  # one seed: no standard error
    same = seeds.paired_difference([(0.99, 0.99), (0.98, 0.98)])  # identical in every seed: t is 0/0
    assert not same["distinguishable"] and seeds.difference_cell(same) == "0 in each of the 2 seeds (identical accuracies)"


def test_the_tutorials_number_is_placed_in_our_spread():
    near = {"runs": 5, "diverged": 0, "mean": 0.980, "sd": 0.002, "min": 0.977, "max": 0.983}
    far = {**near, "mean": 0.975}
    assert seeds.sds_from_mean(0.981, near) == pytest.approx(0.5)
    reproduced, sentence = seeds.verdict(0.981, {"torch": near, "jax": near})
    assert reproduced and sentence.startswith("**yes**") and "inside min-max" in sentence
    reproduced, sentence = seeds.verdict(0.981, {"torch": near, "jax": far})
    assert reproduced is False and "jax +3.0 sd" in sentence
    diverged = {"runs": 5, "diverged": 5, "mean": None, "sd": None, "min": None, "max": None}
    rows = [{"variant": "gru", "reproduced": True, "difference": {"distinguishable": False}},
            {"variant": "rnn", "reproduced": False, "difference": None, "reference": 0.9728,
             "frameworks": {"torch": diverged, "jax": near}},
            {"variant": "lstm", "reproduced": True, "difference": {"distinguishable": True}},
            {"variant": "lstm-last", "reproduced": False, "difference": None, "reference": 0.97,
             "frameworks": {"torch": near, "jax": far}}]
    assert seeds.in_words(rows) == ("Reproduced (the tutorial's number within 2 sd of our mean in both "
                                    "frameworks): gru, lstm. Not reproduced: rnn (our runs diverge), lstm-last "
                                    "(the tutorial's is lower). Torch and JAX differ by more than the seeds scatter: "
                                    "lstm. Torch and JAX within the seeds' scatter: gru.")
    diverged = {"runs": 5, "diverged": 5, "mean": None, "sd": None, "min": None, "max": None}
    one_run = {"runs": 5, "diverged": 4, "mean": 0.87, "sd": None, "min": 0.87, "max": 0.87}
    assert seeds.verdict(0.9728, {"torch": one_run, "jax": diverged}) == \
        (False, "**no** (torch: one run, no spread; jax: all 5 diverged)")
    assert seeds.verdict(0.981, {"torch": one_run, "jax": near})[0] is None  # jax agrees, torch cannot say
    assert seeds.verdict(0.9728, {"torch": diverged, "jax": near}) == \
        (False, "**no** (torch: all 5 diverged; jax -3.6 sd)")


@pytest.fixture(scope="module")
def multi_seed(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    idx = write_idx_dir(root / "idx", n_train=96, n_test=40)
    argv = ["--variants", "rnn", "--epochs", "1", "--hidden-size", "4", "--data-dir", str(idx), "--no-onnx",
            "--out", str(root / "out")]
    rows = compare.main([*argv, "--seeds", "0", "1"])
    return root / "out", argv, rows


def test_every_seed_gets_its_report_and_the_summary_reads_them(multi_seed):
    out, _, rows = multi_seed
    per_seed = {seed: json.loads((out / f"seed-{seed}" / "results.json").read_text())["runs"] for seed in (0, 1)}
    for seed, runs in per_seed.items():
        assert [(r["framework"], r["seed"]) for r in runs] == [("torch", seed), ("jax", seed)]
        assert runs[0]["curve"]["epochs"] == [1] and len(runs[0]["curve"]["loss"]) == 1
    inits = [checkpoint.load_model(out / f"seed-{seed}" / "runs" / "default-init-rnn.safetensors")[0]
             for seed in (0, 1)]
    assert not any(np.array_equal(inits[0][name], inits[1][name]) for name in inits[0])  # a seed is a new start
    summary = json.loads((out / "results.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["rows"] == rows
    assert rows[0]["frameworks"]["torch"]["accuracies"] == [per_seed[s][0]["test_accuracy"] for s in (0, 1)]
    table = (out / "results.md").read_text()
    assert "seeds 0 1" in table and "| torch (n=2) | jax (n=2) |" in table and "Limited run" in table
    assert (out / "bands.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeds_are_added_later_and_reused_from_their_reports(multi_seed, capsys):
    out, argv, _ = multi_seed
    shutil.rmtree(out / "seed-0" / "runs")  # as in a fresh clone: checkpoints are not committed
    before = (out / "seed-1" / "runs" / "default-torch-rnn" / "model.safetensors").stat().st_mtime_ns
    rows = compare.main([*argv, "--seeds", "0", "1", "2", "--frameworks", "torch"])
    printed = capsys.readouterr().out
    assert "seed 0: every pair is in" in printed and "seed 1: every pair is in" in printed
    assert "default-torch-rnn: training in" in printed and f"seed-2{'/'}runs" in printed  # only the new seed
    assert not (out / "seed-0" / "runs").exists()
    assert (out / "seed-1" / "runs" / "default-torch-rnn" / "model.safetensors").stat().st_mtime_ns == before
    assert len(rows[0]["frameworks"]["torch"]["accuracies"]) == 3 and "jax" not in rows[0]["frameworks"]
    again = seeds.main(["--out", str(out), "--seeds", "0", "1", "2"])  # the report alone, from the files
    assert again[0]["frameworks"]["torch"] == rows[0]["frameworks"]["torch"]
    assert again[0]["frameworks"]["jax"]["runs"] == 2  # seeds 0 and 1 were trained in both frameworks


def test_a_seed_without_a_report_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"seed-7/results.json does not exist: train seed 7 first"):
        seeds.main(["--out", str(tmp_path), "--seeds", "7"])
    (tmp_path / "seed-8").mkdir()
    (tmp_path / "seed-8" / "results.json").write_text('{"runs": [')  # cut short
    with pytest.raises(UserError, match=r"seed-8/results.json is not a report of benchmarks.compare \(JSONDecodeError"):
        seeds.main(["--out", str(tmp_path), "--seeds", "8"])
    with pytest.raises(UserError, match="--seeds must be non-negative"):
        compare.main(["--seeds", "-1", "--out", str(tmp_path)])


@pytest.mark.slow
def test_real_mnist_runs_that_train_get_a_spread_and_a_paired_difference(mnist_dir, tmp_path):
    """The path the reference tables take, on real MNIST at a reduced size: every run trains."""
    rows = compare.main(["--seeds", "0", "1", "2", "--variants", "gru", "--epochs", "1", "--hidden-size", "32",
                         "--limit-train", "6400", "--limit-test", "1000", "--data-dir", str(mnist_dir),
                         "--no-onnx", "--out", str(tmp_path / "out")])
    torch_spread, jax_spread = rows[0]["frameworks"]["torch"], rows[0]["frameworks"]["jax"]
    assert torch_spread["diverged"] == jax_spread["diverged"] == 0 and torch_spread["sd"] > 0
    assert rows[0]["difference"]["seeds"] == 3 and rows[0]["difference"]["se"] > 0
    assert rows[0]["reproduced"] in (True, False)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "diverged" not in table.split("\n\n")[-1] and "t " in table


def test_a_seeds_report_is_reused_only_if_made_the_same_way(tmp_path):
    config = compare.preset_config("default", "rnn", {"seed": 3}).to_dict()
    run = {"framework": "torch", "variant": "rnn", "config": config, "curve": {},
           "initial_weights": "out/seed-3/runs/default-init-rnn.safetensors"}
    (tmp_path / "results.json").write_text(json.dumps({"runs": [run]}))
    same = dict(variants=["rnn"], frameworks=["torch"], preset="default", overrides={"seed": 3})
    assert compare.reported(tmp_path, **same, onnx=False, shared_init=True)
    assert not compare.reported(tmp_path, **same, onnx=True, shared_init=True)  # made with --no-onnx
    assert not compare.reported(tmp_path, **same, onnx=False, shared_init=False)  # --independent-init
    assert not compare.reported(tmp_path, **{**same, "overrides": {"seed": 3, "lr": 0.001}}, onnx=False,
                                shared_init=True)
    assert not compare.reported(tmp_path, **{**same, "frameworks": ["torch", "jax"]}, onnx=False, shared_init=True)
    assert not compare.reported(tmp_path / "nothing", **same, onnx=False, shared_init=True)
