"""The comparison report on tiny idx data: every file written, ONNX checked, resumable, README update."""
from __future__ import annotations

import json

import pytest

from benchmarks import compare
from common.errors import UserError
from tests.conftest import write_idx_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    idx = write_idx_dir(root / "idx", n_train=96, n_test=40)
    argv = ["--variants", "rnn", "lstm-last", "--epochs", "1", "--hidden-size", "4", "--data-dir", str(idx),
            "--out", str(root / "results"), "--no-progress"]
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
    assert (root / "results" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finished_pairs_are_not_trained_again(report, capsys):
    root, argv, runs = report
    before = {p: p.stat().st_mtime_ns for p in (root / "results" / "runs").glob("*/model.safetensors")}
    again = compare.main(argv)
    assert "done earlier, reusing" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in runs]


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{compare.README_START}\nold\n{compare.README_END}\nrest\n")
    compare.update_readme(readme, "new table\n")
    assert readme.read_text() == f"intro\n{compare.README_START}\nnew table\n{compare.README_END}\nrest\n"
    readme.write_text("no markers")
    with pytest.raises(UserError, match="markers"):
        compare.update_readme(readme, "x")
