"""Dynamic int8 quantization of an exported model, and how it compares with float32.

    python -m export.onnx --checkpoint RUN/model.safetensors --quantize int8

`quant_pre_process` (shape inference, graph cleanup) then `quantize_dynamic` (int8 weights,
activations quantized per batch at run time). onnxruntime quantizes LSTM (DynamicQuantizeLSTM)
and MatMul; GRU and the Gemm of the classifier stay float32, so the gain depends on the cell.
`compare` reports size, latency at batch 1 and 256 and test accuracy of both files.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

from common.errors import UserError
from common.timing import measure_rotated
from export.metadata import set_metadata
from export.runtime import run_onnx, session
from export.verify import optional_test_set, write_verified

LATENCY_BATCHES = (1, 256)


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Write `out_path` (int8 weights) from a verified float32 file, atomically, with its metadata."""
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".quantize.") as workdir:
        pre, quantized = Path(workdir) / "pre.onnx", Path(workdir) / "int8.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre))
            quantize_dynamic(str(pre), str(quantized), weight_type=QuantType.QInt8)
        except Exception as error:  # the quantizer's failures are bugs or odd graphs: say which file, one line
            raise UserError(f"int8 quantization of {fp32_path} failed: {type(error).__name__}: {error}") from None
        proto = onnx.load(str(quantized))
        props = {prop.key: prop.value for prop in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
        props["exporter"] = props.get("exporter", "") + ", onnxruntime quantize_dynamic int8"
        set_metadata(proto, props)

    def check(path: Path) -> dict:
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as error:
            raise UserError(f"quantized {path} fails onnx.checker: {str(error).splitlines()[0]}") from None
        session(path)  # it must load
        return {}

    write_verified(proto, out_path, check)


def compare(fp32_path: Path, int8_path: Path, *, normalize: bool, data_dir=None, limit: int | None = None,
            rounds: int = 3, block_seconds: float = 0.2, log: Callable[[str], None] = print) -> dict:
    """Size, median latency (ms, rotated blocks) and test accuracy of the two files."""
    sessions = {"fp32": session(fp32_path), "int8": session(int8_path)}
    ops = sorted({node.op_type for node in onnx.load(str(int8_path)).graph.node if "Integer" in node.op_type
                  or "Quant" in node.op_type})
    rng = np.random.default_rng(0)
    inputs = {n: rng.random((n, 28, 28), dtype=np.float32) for n in LATENCY_BATCHES}
    contenders = {(kind, n): (lambda s=sess, x=inputs[n]: s.run(None, {"input": x}))
                  for kind, sess in sessions.items() for n in LATENCY_BATCHES}
    latency = {key: 1e3 * seconds for key, seconds in measure_rotated(contenders, rounds, block_seconds).items()}
    report = {
        "path": str(int8_path), "quantized_ops": ops,
        "bytes": {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size},
        "latency_ms": {kind: {n: latency[(kind, n)] for n in LATENCY_BATCHES} for kind in sessions},
        "test_accuracy": None, "test_images": 0, "agreement": None,
    }
    test = optional_test_set(data_dir, normalize, log, "int8 accuracy not measured")
    if test is not None and limit != 0:
        images, labels = test.images[:limit], test.labels[:limit]
        preds = {kind: run_onnx(sess, images).argmax(1) for kind, sess in sessions.items()}
        report.update(test_images=len(labels), agreement=float((preds["fp32"] == preds["int8"]).mean()),
                      test_accuracy={kind: float((pred == labels).mean()) for kind, pred in preds.items()})
    size = report["bytes"]
    log(f"int8: {int8_path} {size['int8'] / 1e6:.2f} MB vs fp32 {size['fp32'] / 1e6:.2f} MB "
        f"({size['int8'] / size['fp32']:.0%}); quantized ops {', '.join(ops) or 'none'}")
    for n in LATENCY_BATCHES:
        fp32, int8 = report["latency_ms"]["fp32"][n], report["latency_ms"]["int8"][n]
        log(f"int8: latency batch {n}: {int8:.3f} ms vs fp32 {fp32:.3f} ms ({fp32 / int8:.2f}x faster)")
    if report["test_accuracy"]:
        acc = report["test_accuracy"]
        log(f"int8: test accuracy {100 * acc['int8']:.2f}% vs fp32 {100 * acc['fp32']:.2f}% on {len(labels)} images; "
            f"same prediction on {100 * report['agreement']:.2f}%")
    return report
