"""Export checkpoints to ONNX: one verified file per checkpoint, written atomically.

    python -m export.onnx --checkpoint RUN/model.safetensors --out model.onnx
    python -m export.onnx --all RESULTS_DIR       # every */model.safetensors -> model.onnx beside it
    python -m export.onnx --checkpoint RUN/model.safetensors --quantize int8 --verify-limit 1000
    python -m export.onnx --checkpoint RUN/model.safetensors --streaming   # also model.step.onnx, row by row

The file: torch.onnx.export(dynamo=True), opset 18, weights inside (no external data), input
`input` float32 [batch, 28, 28], output `logits` [batch, classes], batch dynamic. With torch
2.14.1 GRU and LSTM become native ONNX GRU/LSTM ops and nn.RNN is unrolled into per-step
MatMuls. Checkpoints trained by either framework export through the torch model (same names).
Metadata (export.metadata) carries the preprocessing, so `export.predict` needs no config.

The export goes to a temp file beside the target, is verified (export.verify), and only then
renamed into place: the requested path never holds a half-written or unverified model.
"""
from __future__ import annotations

import collections
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import onnx
import onnxscript
import torch

from common import checkpoint
from common.config import Config
from common.cli import Parser
from common.files import sha256_file
from common.errors import UserError, run_cli
from export import metadata
from export.quantize import compare, quantize_int8
from export.step import export_step
from export.verify import verify, write_verified
from torch_impl.model import RecurrentClassifier, set_params

OPSET = 18  # pinned: the files must not change when the exporter's default opset does
# torch.export specialises batch sizes 0 and 1, so the example batch must be at least 2 for
# the batch axis to stay symbolic.
EXAMPLE_BATCH = 2
QUANTIZE_CHOICES = ("int8",)


def build_model(params: dict, config: Config) -> RecurrentClassifier:
    model = RecurrentClassifier(config)
    set_params(model, params)
    return model.eval()


def to_onnx(model: RecurrentClassifier, config: Config) -> onnx.ModelProto:
    """The exported graph as a ModelProto (weights inline), before metadata is added."""
    example = torch.zeros(EXAMPLE_BATCH, config.seq_len, config.input_size)
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            # torch warns that nn.RNN's _flat_weights are "assigned during export"; harmless here.
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, external_data=False,
                                        input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), verbose=False)
    except Exception as error:  # an exporter failure is one line, not a 200-line trace
        raise UserError(f"torch.onnx.export failed for {config.variant}: "
                        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    return program.model_proto


def refuse_existing(targets: list[Path]) -> None:
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise UserError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                        "pass --force to replace, or choose another --out")


def export_checkpoint(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                      verify_limit: int | None = None, quantize: str | None = None,
                      data_dir: str | os.PathLike | None = None, streaming: bool = False, replace: bool = True,
                      log: Callable[[str], None] = print) -> dict:
    """Export one model.safetensors to a verified .onnx file; return what was measured.

    `out_path`: default model.onnx beside the checkpoint. `verify_limit`: compare predictions on
    the first N test images only (0: none). `quantize="int8"`: also write <out>.int8.onnx and
    compare its size, latency and accuracy. `streaming`: also write the verified step model
    <out>.step.onnx (export/step.py). `replace=False`: refuse targets that exist (the CLI without
    --force). Raises UserError on any failure; a file that failed its checks is never left at
    `out_path` (a verified float32 file stays if int8 or the step model fails).
    """
    source = Path(checkpoint_path)
    out = Path(out_path) if out_path is not None else source.parent / "model.onnx"
    if out.suffix != ".onnx":
        raise UserError(f"--out {out} must end in .onnx")
    if quantize not in (None, *QUANTIZE_CHOICES):
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if not replace:
        refuse_existing([out] + [out.with_suffix(suffix) for suffix, wanted
                                 in ((".int8.onnx", quantize), (".step.onnx", streaming)) if wanted])
    params, config, ckpt_meta = checkpoint.load_model(source)
    try:
        ckpt_accuracy = float(ckpt_meta["test_accuracy"]) if "test_accuracy" in ckpt_meta else None
    except ValueError:
        ckpt_accuracy = None  # an unreadable number is not worth refusing the export over
    props = metadata.build(config.to_dict(), framework=ckpt_meta.get("framework", "unknown"),
                           source_sha256=sha256_file(source), source_name=source.name, test_accuracy=ckpt_accuracy,
                           exporter=f"torch {torch.__version__}, onnxscript {onnxscript.__version__}, opset {OPSET}")
    model = build_model(params, config)
    log(f"exporting {source} ({config.variant}, trained with {props['framework']}) -> {out}")
    start = time.perf_counter()
    proto = to_onnx(model, config)
    metadata.set_metadata(proto, props)
    export_seconds = time.perf_counter() - start
    start = time.perf_counter()
    checks = write_verified(proto, out, lambda path: verify(path, model, normalize=config.normalize,
                                                            data_dir=data_dir, limit=verify_limit, log=log))
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    report = {
        "checkpoint": str(source), "onnx": str(out), "variant": config.variant, "framework": props["framework"],
        "checkpoint_sha256": props["source_sha256"], "checkpoint_test_accuracy": ckpt_accuracy,
        "checkpoint_bytes": source.stat().st_size, "onnx_bytes": out.stat().st_size, "opset": OPSET,
        "onnx_ops": dict(sorted(ops.items())), "export_seconds": export_seconds,
        "verify_seconds": time.perf_counter() - start, **checks, "int8": None, "streaming": None,
    }
    log(f"wrote {out} ({report['onnx_bytes'] / 1e6:.2f} MB, {sum(ops.values())} nodes)")
    if quantize == "int8":
        int8_path = out.with_suffix(".int8.onnx")
        quantize_int8(out, int8_path)
        report["int8"] = compare(out, int8_path, normalize=config.normalize, data_dir=data_dir,
                                 limit=verify_limit, log=log)
    if streaming:
        report["streaming"] = export_step(model, config, props, out.with_suffix(".step.onnx"), data_dir=data_dir,
                                          limit=verify_limit, log=log)
    return report


def export_all(results_dir: str | os.PathLike, **kwargs) -> list[dict]:
    """Export every `*/model.safetensors` under `results_dir` (any depth) to model.onnx beside it."""
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"--all {root}: no such folder")
    found = sorted(root.rglob("model.safetensors"))
    if not found:
        raise UserError(f"--all {root}: no model.safetensors under it; train with `python -m torch_impl.train`")
    reports, failures = [], []
    for path in found:  # one broken run should not stop the others from being exported
        try:
            reports.append(export_checkpoint(path, path.parent / "model.onnx", **kwargs))
        except UserError as error:
            failures.append(f"{path}: {error}")
            print(f"failed: {path}: {error}")
    if failures:
        raise UserError(f"{len(failures)} of {len(found)} exports failed; first: {failures[0]}")
    return reports


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = Parser(prog="python -m export.onnx", description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a model.safetensors to export")
    which.add_argument("--all", metavar="RESULTS_DIR", help="export every */model.safetensors under this folder")
    parser.add_argument("--out", help="where to write (default: model.onnx beside the checkpoint)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, help="also write a dynamically quantized copy")
    parser.add_argument("--streaming", action="store_true",
                        help="also write the row-by-row step model <out>.step.onnx (state carried by the caller)")
    parser.add_argument("--force", action="store_true", help="replace output files that already exist")
    parser.add_argument("--verify-limit", type=int, metavar="N",
                        help="compare predictions on the first N test images only (default all; 0: none)")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR or data/mnist)")
    args = parser.parse_args(argv)
    if args.all and args.out:
        raise UserError("--out goes with --checkpoint; --all writes model.onnx beside each checkpoint")
    if args.verify_limit is not None and args.verify_limit < 0:
        raise UserError(f"--verify-limit must be 0 or more, got {args.verify_limit}")
    kwargs = dict(verify_limit=args.verify_limit, quantize=args.quantize, data_dir=args.data_dir,
                  streaming=args.streaming, replace=args.force)
    if args.all:
        return export_all(args.all, **kwargs)
    return [export_checkpoint(args.checkpoint, args.out, **kwargs)]


if __name__ == "__main__":
    run_cli(main)
