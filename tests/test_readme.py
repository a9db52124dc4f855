"""The README's "in your own code" snippet runs as written and preprocesses as export.predict does.

    python -m pytest -q tests/test_readme.py
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import compare
from common import data
from common.report import require_markers
from export import predict
from export.runtime import run_onnx

README = Path(__file__).resolve().parents[1] / "README.md"


def own_code_snippet() -> str:
    (snippet,) = [block for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
                  if "InferenceSession" in block]
    return snippet


def test_own_code_snippet_gives_predicts_logits(tiny_onnx, mnist_dir, tmp_path, monkeypatch):
    _, onnx_path, _ = tiny_onnx("lstm-last")  # trained with --normalize: the snippet must apply it
    shutil.copy(onnx_path, tmp_path / "lstm-last.onnx")
    monkeypatch.chdir(tmp_path)
    u8 = data.parse_idx(data.read_bytes(data.find_file(mnist_dir, data.FILES["test"][0])), data.IMAGE_MAGIC)[:50]
    scope = {"uint8_images": u8}
    exec(own_code_snippet(), scope)
    session, info = predict.open_model(tmp_path / "lstm-last.onnx")
    assert info.preprocessing.normalize
    expected = run_onnx(session, predict.preprocess(u8, info))
    assert np.array_equal(scope["logits"], expected)


@pytest.mark.parametrize("document, block", [("README.md", compare.readme_block("default", multi_seed=True)),
                                             ("README.md", compare.readme_block("default", {"lr": 0.001},
                                                                                multi_seed=True)),
                                             ("README.md", compare.readme_block("tuned", multi_seed=True)),
                                             ("docs/RESULTS.md", "chaos:default"),
                                             ("docs/PARITY.md", "parity:default"),
                                             ("docs/PERFORMANCE.md", "speed")])
def test_generated_tables_have_their_blocks(document, block):
    """Each table a command pastes (--update-readme, --update-docs) has its markers in place."""
    text, pattern = require_markers(README.parent / document, block)
    assert len(pattern.findall(text)) == 1
