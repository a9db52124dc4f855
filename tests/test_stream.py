"""Streaming export and use: `export.onnx --streaming` writes a verified *.step.onnx whose state is
carried by the caller; `export.predict --stream` feeds an image row by row.

    python -m pytest -q tests/test_stream.py

parity/test_stream.py checks every cell x head against torch at ONNX_ATOL; this file covers the
exporter's own verification, the metadata, atomic writes and the CLIs.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from common import checkpoint, data
from common.errors import UserError
from export import onnx as export_onnx
from export import predict, step, streaming
from export.runtime import run_onnx
from export.verify import LOGIT_ATOL
from tests.conftest import EXPORT_TINY as TINY, make_checkpoint, run_predict, torch_model

VERIFY_LIMIT = 500
_STREAMED: dict[str, tuple] = {}


@pytest.fixture(scope="module", params=["lstm-last", "lstm"])
def streamed(request, tmp_path_factory, mnist_dir):  # noqa: F811
    """(checkpoint, whole-sequence file, step file, report) of a tiny model exported with --streaming."""
    variant = request.param
    if variant not in _STREAMED:
        folder = tmp_path_factory.mktemp(f"stream-{variant}")
        ckpt = make_checkpoint(folder / "model.safetensors", variant, **TINY[variant])
        report = export_onnx.export_checkpoint(ckpt, folder / "model.onnx", streaming=True, data_dir=mnist_dir,
                                               verify_limit=VERIFY_LIMIT, log=lambda line: None)
        _STREAMED[variant] = (ckpt, folder / "model.onnx", folder / "model.step.onnx", report)
    return _STREAMED[variant]


def test_step_file_is_verified_and_described(streamed):
    ckpt, _, step_path, report = streamed
    _, config, _ = checkpoint.load_model(ckpt)
    stream_report = report["streaming"]
    names = {"rows", "chunks"}
    assert {key.rsplit("_", 1)[1] for key in stream_report["max_abs_diff"]} == names
    assert {key.rsplit("_", 1)[0] for key in stream_report["max_abs_diff"]} == {
        "random_b1", "random_b257", "mnist_b1", "mnist_b257", "mnist_test_set"}
    assert max(stream_report["max_abs_diff"].values()) <= LOGIT_ATOL
    assert stream_report["test_images"] == VERIFY_LIMIT and stream_report["mismatches"] == 0
    sess, info, spec = streaming.open_step_model(step_path)
    expected = ["h", "c"] + (["acc", "position"] if config.head == "all" else [])
    assert [s["name"] for s in spec["states"]] == expected and all(s["init"] == "zeros" for s in spec["states"])
    assert spec["states"][0]["shape"] == [config.num_layers, "batch", config.hidden_size]
    assert [i.name for i in sess.get_inputs()] == ["rows", *expected]
    assert [o.name for o in sess.get_outputs()] == ["logits", *(f"{n}_out" for n in expected)]
    assert spec["running_prediction"] == (config.head == "last") and info.variant == config.variant
    # an LSTM takes chunks of any size (even after other exports in this process: export/step.py)
    assert spec["rows_per_call"] == "any" and sess.get_inputs()[0].shape[1] == "rows"
    assert [p.name for p in step_path.parent.iterdir() if p.name.startswith(".")] == []


def test_streamed_logits_equal_whole_sequence_file(streamed, mnist_dir):  # noqa: F811
    _, whole, step_path, _ = streamed
    sess, info, spec = streaming.open_step_model(step_path)
    images = data.load_split("test", mnist_dir, limit=64, normalize=info.preprocessing.normalize).images
    expected = run_onnx(predict.open_model(whole)[0], images)
    for chunks in ([1] * 28, [28], [10, 18], step.chunk_schedule(28)):
        *_, (seen, logits, states) = streaming.run_stream(sess, spec, images, chunks)
        assert seen == 28
        np.testing.assert_allclose(logits, expected, rtol=0, atol=LOGIT_ATOL)


def test_verification_catches_other_weights(streamed, tmp_path):
    ckpt, _, step_path, _ = streamed
    _, config, _ = checkpoint.load_model(ckpt)
    other = make_checkpoint(tmp_path / "other.safetensors", config.variant, seed=1, **TINY[config.variant])
    with pytest.raises(UserError, match="disagrees with torch"):
        step.verify_step(step_path, torch_model(other), config, limit=0, log=lambda line: None)


def test_failed_step_verification_leaves_old_file(streamed, tmp_path, monkeypatch):
    ckpt, _, _, _ = streamed
    params, config, _ = checkpoint.load_model(ckpt)
    out = tmp_path / "model.step.onnx"
    out.write_bytes(b"previous export")

    def failing(*args, **kwargs):
        raise UserError("simulated mismatch")

    monkeypatch.setattr(step, "verify_step", failing)
    with pytest.raises(UserError, match="simulated"):
        step.export_step(torch_model(ckpt), config, {}, out, log=lambda line: None)
    assert out.read_bytes() == b"previous export" and [p.name for p in tmp_path.iterdir()] == ["model.step.onnx"]


def test_predict_stream(streamed, mnist_dir, tmp_path, capsys):  # noqa: F811
    _, whole, step_path, _ = streamed
    image = (data.load_split("test", mnist_dir, limit=1).images[0] * 255).round().astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "digit.png")
    code, out, _ = run_predict([whole, tmp_path / "digit.png"], capsys)
    expected = float(out.split("(")[1].split("%")[0])
    code, out, err = run_predict([step_path, tmp_path / "digit.png", "--stream"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    _, config, _ = checkpoint.load_model(streamed[0])
    if config.head == "last":
        assert len(lines) == 29 and all(f"row {k:2d}: " in lines[k - 1] for k in range(1, 29))
        assert "rows; it has said" in lines[-1] and " since row " in lines[-1]
    else:
        assert len(lines) == 1 and "a prediction exists only after all 28 rows" in lines[0]
    assert f"({expected:.1f}%)" in lines[-1]  # the whole-sequence file's answer
    code, out, _ = run_predict([step_path, tmp_path / "digit.png", "--stream", "--json"], capsys)
    (result,) = json.loads(out)["predictions"]
    assert code == 0 and result["rows"] == 28 and abs(100 * result["probability"] - expected) < 0.05
    if config.head == "last":
        assert len(result["steps"]) == 28 and 1 <= result["known_from_row"] <= 28


def test_stream_cli_errors(streamed, tmp_path, capsys):
    _, whole, step_path, _ = streamed
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "digit.png")
    cases = {
        "whole-sequence model with --stream": ([whole, tmp_path / "digit.png", "--stream"], "not a streaming one"),
        "step model without --stream": ([step_path, tmp_path / "digit.png"], "add --stream"),
        "--stream with idx": ([step_path, "--stream", "--idx-images", tmp_path / "digit.png"], "--stream takes image"),
    }
    for name, (argv, message) in cases.items():
        code, _, err = run_predict(argv, capsys)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (name, err)

