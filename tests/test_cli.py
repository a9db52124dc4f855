"""Every command follows one convention (common.cli): a bad flag or value is one line on stderr,
exit status 2, no traceback; --help shows each default once and a whole first sentence.

The bad-input checks run the real modules as subprocesses, as a user would.

    python -m pytest -q tests/test_cli.py
"""
from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from common import data
from common.errors import EXIT_USER_ERROR, UserError, run_cli

CLIS = ["benchmarks.compare", "benchmarks.chaos", "benchmarks.speed", "parity.report", "common.data",
        "torch_impl.train", "jax_impl.train", "export.onnx", "export.predict", "benchmarks.latency",
        "benchmarks.gpu_check", "benchmarks.gpu_latency", "benchmarks.profile", "export.serve_web",
        "benchmarks.scaling"]
# (module, arguments, what the one line must say): an unknown flag for each, a bad value where the
# module checks values itself.
REQUIRED = {"common.data": ["verify"], "benchmarks.gpu_check": ["--out", "x"], "export.predict": ["model.onnx"],
            "export.onnx": ["--checkpoint", "x"], "export.serve_web": ["model.onnx"]}
BAD_INPUT = [(module, [*REQUIRED.get(module, []), "--no-such-flag"], "unrecognized arguments: --no-such-flag")
             for module in CLIS] + [
    ("benchmarks.compare", ["--jobs", "0"], "--jobs must be at least 1"),
    ("benchmarks.compare", ["--variants", "lstn"], "unknown variant 'lstn'"),
    ("benchmarks.chaos", ["--preset", "fast"], "argument --preset: invalid choice: 'fast'"),
    ("benchmarks.speed", ["--rounds", "0"], "--rounds must be at least 1"),
    ("benchmarks.speed", ["--batch-sizes", "0"], "--batch-sizes must be at least 1"),
    ("benchmarks.speed", ["--batch-sizes", "x"], "argument --batch-sizes: invalid int value: 'x'"),
    ("parity.report", ["--sizes", "huge"], "argument --sizes: invalid choice: 'huge'"),
    ("common.data", ["download"], "argument command: invalid choice: 'download'"),
    ("common.data", ["pack"], "give a destination folder with `pack DEST`"),
    ("benchmarks.gpu_latency", ["--rounds", "0"], "--rounds must be at least 1"),
    ("benchmarks.profile", ["--batch-size", "0"], "--batch-size must be at least 1"),
    # --update-docs into a block the docs do not have: refused before minutes of work
    ("parity.report", ["--sizes", "tiny", "--update-docs"], "has no <!-- parity:tiny:start -->"),
    ("benchmarks.chaos", ["--preset", "tuned", "--update-docs"], "has no <!-- chaos:tuned:start -->"),
]


@pytest.mark.parametrize("module, argv, message", BAD_INPUT, ids=[f"{m} {' '.join(a)}" for m, a, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_status_2(module, argv, message, tmp_path):
    # --out into tmp_path: nothing may be written, and nothing in the checkout could be
    argv = argv + (["--out", str(tmp_path / "out")] if module.startswith("benchmarks.c") else [])
    result = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bug_keeps_its_traceback():
    def main(argv):
        raise ZeroDivisionError("our own bug")

    with pytest.raises(ZeroDivisionError):
        run_cli(main, [])


@pytest.mark.parametrize("module", CLIS)
def test_help_shows_each_default_once_and_a_whole_sentence(module, capsys):
    main = importlib.import_module(module).main
    argv = [*REQUIRED.get(module, []), "--help"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    options = re.split(r"\n  (?=-)", text)  # one chunk per option
    assert all(chunk.count("default") <= 1 for chunk in options), [c for c in options if c.count("default") > 1]
    description = text.split("\n\n")[1].strip()
    assert description[-1] in ".?!:)", f"the description stops mid-sentence: {description!r}"


def test_data_hints_name_the_folder_given_as_an_absolute_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as error:
        data.load_split("test", "elsewhere/mnist")
    absolute = tmp_path / "elsewhere" / "mnist"
    assert f"MNIST folder {absolute} does not exist" in str(error.value)
    assert f"python -m common.data fetch --data-dir {absolute}`" in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        run_cli(data.main, ["verify", "--data-dir", "empty"])
    assert f"fetch --data-dir {tmp_path / 'empty'}`" in capsys.readouterr().err
