"""ONNX export: every variant exports, verifies, keeps a dynamic batch and its metadata; broken
exports are caught and never land where the user asked for a file.

    python -m pytest -q tests/test_export.py

Exports take seconds each (torch.export tracing), so each tiny model is exported once per
pytest run and shared with tests/test_predict.py.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from common import checkpoint, data
from common.config import Config
from common.errors import UserError, run_cli
from common.timing import measure_rotated
from export import metadata
from export import onnx as export_onnx
from export import quantize as export_quantize
from export import verify as export_verify
from export.verify import LOGIT_ATOL, run_onnx, run_torch, session, verify
from tests.conftest import EXPORT_TINY as TINY, EXPORT_VERIFY_LIMIT as VERIFY_LIMIT, make_checkpoint
from torch_impl.model import RecurrentClassifier

def torch_model(ckpt: Path) -> RecurrentClassifier:
    params, config, _ = checkpoint.load_model(ckpt)
    return export_onnx.build_model(params, config)


@pytest.fixture(scope="module")
def exported(tiny_onnx):
    return {variant: tiny_onnx(variant) for variant in TINY}


@pytest.mark.parametrize("variant", TINY)
def test_export_verifies(exported, variant):
    ckpt, path, report = exported[variant]
    onnx.checker.check_model(str(path), full_check=True)
    assert set(report["max_abs_diff"]) == {"random_b1", "random_b257", "mnist_b1", "mnist_b257", "mnist_test_set"}
    assert max(report["max_abs_diff"].values()) <= LOGIT_ATOL
    assert report["test_images"] == VERIFY_LIMIT and report["mismatches"] == 0
    assert report["onnx_test_accuracy"] == pytest.approx(report["torch_test_accuracy"], abs=1 / VERIFY_LIMIT)
    assert report["onnx_bytes"] == path.stat().st_size and report["opset"] == 18
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert not any(init.HasField("data_location") and init.data_location == onnx.TensorProto.EXTERNAL
                   for init in model.graph.initializer)  # one self-contained file
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("variant, op", [("gru", "GRU"), ("lstm", "LSTM"), ("lstm-last", "LSTM"), ("rnn", "MatMul")])
def test_native_recurrent_ops(exported, variant, op):
    ops = exported[variant][2]["onnx_ops"]
    assert op in ops and "Loop" not in ops and "Scan" not in ops
    if variant == "rnn":  # unrolled: a hidden-state MatMul per step and layer
        assert ops["MatMul"] >= 28 * TINY["rnn"]["num_layers"] and "RNN" not in ops


@pytest.mark.parametrize("variant", TINY)
def test_dynamic_batch(exported, variant):
    ckpt, path, _ = exported[variant]
    sess, model = session(path), torch_model(ckpt)
    (inp,) = sess.get_inputs()
    assert inp.name == "input" and inp.type == "tensor(float)" and isinstance(inp.shape[0], str)
    assert inp.shape[1:] == [28, 28] and sess.get_outputs()[0].name == "logits"
    rng = np.random.default_rng(1)
    for batch in (1, 3, 257):
        images = rng.random((batch, 28, 28), dtype=np.float32)
        logits = sess.run(None, {"input": images})[0]
        assert logits.shape == (batch, 10)
        np.testing.assert_allclose(logits, run_torch(model, images), rtol=0, atol=LOGIT_ATOL)


@pytest.mark.parametrize("variant", TINY)
def test_metadata_round_trip(exported, variant):
    ckpt, path, report = exported[variant]
    info = metadata.parse(session(path).get_modelmeta().custom_metadata_map, str(path))
    _, config, _ = checkpoint.load_model(ckpt)
    assert info.variant == variant and Config.from_dict(info.config) == config
    assert info.preprocessing == metadata.Preprocessing(1 / 255, config.normalize, data.MEAN, data.STD)
    assert info.class_labels == [str(d) for d in range(10)]
    assert info.test_accuracy == 0.1234 == report["checkpoint_test_accuracy"]
    assert info.framework == "torch" and info.source_sha256 == export_onnx.sha256_file(ckpt)
    assert info.props["source_checkpoint"] == "model.safetensors" and "opset 18" in info.props["exporter"]


def test_verify_catches_gru_linear_before_reset(exported, tmp_path):
    """The bug older onnxscript had: GRU exported with linear_before_reset=0 is off by ~1e-1."""
    ckpt, path, _ = exported["gru"]
    model = onnx.load(str(path))
    grus = [node for node in model.graph.node if node.op_type == "GRU"]
    assert grus
    for node in grus:
        (attr,) = [a for a in node.attribute if a.name == "linear_before_reset"]
        assert attr.i == 1
        attr.i = 0
    broken = tmp_path / "broken.onnx"
    onnx.save_model(model, str(broken))
    onnx.checker.check_model(str(broken), full_check=True)  # structurally still valid: only numbers catch it
    with pytest.raises(UserError, match="disagrees with torch.*LOGIT_ATOL"):
        verify(broken, torch_model(ckpt), log=lambda line: None)


def test_verify_catches_wrong_weights(exported, tmp_path):
    ckpt, path, _ = exported["lstm-last"]
    other = make_checkpoint(tmp_path / "other.safetensors", "lstm-last", seed=1, **TINY["lstm-last"])
    with pytest.raises(UserError, match="disagrees with torch"):
        verify(path, torch_model(other), limit=0, log=lambda line: None)


@pytest.mark.parametrize("margin, fails", [(5e-6, False), (5e-4, True)])
def test_verify_prediction_rule(exported, monkeypatch, margin, fails):
    """A flipped class fails even within LOGIT_ATOL, unless torch's own top two logits are a
    float32 tie (closer than TIE_MARGIN). Logits are faked to control the margin exactly."""
    ckpt, path, _ = exported["lstm"]

    def fake_torch(model, images, batch_size=1000):
        logits = np.zeros((len(images), 10), np.float32)
        logits[:, 3] = margin  # class 3 wins, class 0 is `margin` behind
        return logits

    def fake_onnx(sess, images, batch_size=1000):
        logits = fake_torch(None, images)
        logits[0, 0] = 1.5 * margin  # image 0 flips to class 0, within LOGIT_ATOL
        return logits

    monkeypatch.setattr(export_verify, "run_torch", fake_torch)
    monkeypatch.setattr(export_verify, "run_onnx", fake_onnx)
    if fails:
        with pytest.raises(UserError, match="predicts a different class than torch on 1 of 300"):
            verify(path, torch_model(ckpt), limit=300, log=lambda line: None)
    else:
        report = verify(path, torch_model(ckpt), limit=300, log=lambda line: None)
        assert report["ties"] == 1 and report["mismatches"] == 0


def test_failed_verification_leaves_old_file(exported, tmp_path, monkeypatch):
    ckpt, path, _ = exported["lstm"]
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")

    def failing_verify(*args, **kwargs):
        raise UserError("simulated mismatch")

    # Skip the slow re-export: the graph already exported for this checkpoint is the same.
    monkeypatch.setattr(export_onnx, "to_onnx", lambda model, config: onnx.load(str(path)))
    monkeypatch.setattr(export_onnx, "verify", failing_verify)
    with pytest.raises(UserError, match="simulated"):
        export_onnx.export_checkpoint(ckpt, out, log=lambda line: None)
    assert out.read_bytes() == b"previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_all_goes_on_past_a_broken_checkpoint(exported, tmp_path, monkeypatch, capsys):
    ckpt, path, _ = exported["lstm"]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    shutil.copyfile(ckpt, tmp_path / "a" / "model.safetensors")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(export_onnx, "to_onnx", lambda model, config: onnx.load(str(path)))  # skip re-exporting
    with pytest.raises(UserError, match="1 of 2 exports failed; first: .*b/model.safetensors"):
        export_onnx.export_all(tmp_path, verify_limit=0, log=lambda line: None)
    assert (tmp_path / "a" / "model.onnx").is_file() and not (tmp_path / "b" / "model.onnx").exists()
    assert "failed: " in capsys.readouterr().out


def test_default_size_lstm_last_cli_all_int8(tmp_path, mnist_dir, capsys, monkeypatch):
    """The tutorial's model (hidden 256, 2 layers) through the CLI, with --all and --quantize."""
    # One short timing round is enough to test the plumbing; benchmarks.latency does real timing.
    monkeypatch.setattr(export_quantize, "measure_rotated",
                        lambda contenders, rounds, block_seconds: measure_rotated(contenders, 1, 0.01))
    ckpt = make_checkpoint(tmp_path / "runs" / "a" / "model.safetensors", "lstm-last", hidden_size=256, num_layers=2)
    (report,) = export_onnx.main(["--all", str(tmp_path / "runs"), "--quantize", "int8", "--verify-limit", "300",
                                  "--data-dir", str(mnist_dir)])
    out = capsys.readouterr().out
    assert "max |onnx - torch|" in out and "int8:" in out
    assert max(report["max_abs_diff"].values()) <= LOGIT_ATOL and report["mismatches"] == 0
    assert report["onnx_ops"]["LSTM"] == 2 and 3.2e6 < report["onnx_bytes"] < 3.5e6  # 822k float32 weights
    assert (ckpt.parent / "model.onnx").is_file() and (ckpt.parent / "model.int8.onnx").is_file()
    int8 = report["int8"]
    assert "DynamicQuantizeLSTM" in int8["quantized_ops"] and int8["bytes"]["int8"] < 0.4 * int8["bytes"]["fp32"]
    assert set(int8["latency_ms"]["int8"]) == {1, 256} and int8["test_images"] == 300
    assert 0 <= int8["test_accuracy"]["int8"] <= 1 and int8["agreement"] > 0.5
    info = metadata.parse(session(ckpt.parent / "model.int8.onnx").get_modelmeta().custom_metadata_map, "int8")
    assert info.variant == "lstm-last" and "int8" in info.props["exporter"]
    int8_logits = run_onnx(session(ckpt.parent / "model.int8.onnx"), np.zeros((3, 28, 28), np.float32))
    assert int8_logits.shape == (3, 10)


@pytest.mark.parametrize("argv, message", [
    ([], "one of the arguments --checkpoint --all is required"),
    (["--checkpoint", "missing/model.safetensors"], "cannot read checkpoint"),
    (["--all", "no-such-dir"], "no such folder"),
    (["--all", "{tmp}", "--out", "x.onnx"], "--out goes with --checkpoint"),
    (["--checkpoint", "{ckpt}", "--out", "{tmp}/model.bin"], "must end in .onnx"),
    (["--checkpoint", "{ckpt}", "--verify-limit", "-1"], "--verify-limit must be 0 or more"),
    (["--checkpoint", "{ckpt}", "--quantize", "int4"], "invalid choice"),
    (["--all", "{tmp}/empty"], "no model.safetensors under it"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    ckpt = make_checkpoint(tmp_path / "model.safetensors", "lstm-last")
    argv = [arg.format(tmp=tmp_path, ckpt=ckpt) for arg in argv]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(export_onnx.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*.onnx"))


def test_corrupt_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "model.safetensors"
    shutil.copyfile(make_checkpoint(tmp_path / "good.safetensors", "gru"), bad)
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(UserError, match="truncated or corrupt"):
        export_onnx.export_checkpoint(bad, log=lambda line: None)


def test_out_onto_existing_file_needs_force(exported, tmp_path, capsys):
    ckpt = exported["lstm"][0]
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(export_onnx.main, ["--checkpoint", str(ckpt), "--out", str(out), "--verify-limit", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "already exists; pass --force" in err and err.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    (report,) = export_onnx.main(["--checkpoint", str(ckpt), "--out", str(out), "--verify-limit", "0", "--force"])
    assert onnx.load(str(out)).graph.input[0].name == "input"
