"""Per-row latency of the streaming (step) model at batch 1: onnxruntime fp32 and int8.

    python -m benchmarks.latency --streaming                             # lstm-last, random weights
    python -m benchmarks.latency --streaming --checkpoint RUN/model.safetensors --json step.json

What a deployment waits for when one image row arrives: one call of *.step.onnx (one row, the
state fed back). For scale, the whole-sequence file on all 28 rows at once, per call and per row.
Contenders run in rotation (common/timing.py); the load average is printed before and after,
and timings taken under load are not comparable. The int8 files are dynamically quantized
(export/quantize.py); their agreement with fp32 on real test images is printed beside the times.
onnxruntime runs with one intra-op thread (`threads`; 0: its default, one per core): at batch 1 a
step is too small to split, and on a shared machine two spinning threads wait on each other.
Latency does not depend on the weights, so without a checkpoint the model is randomly initialised.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.timing import measure_rotated


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"


def files(workdir: Path, variant: str, checkpoint_path: str | None) -> dict[str, Path]:
    """Export fp32 whole and step files and their int8 copies into `workdir`."""
    import torch

    from common import checkpoint
    from common.config import Config, parse_variant
    from export.onnx import export_checkpoint
    from export.quantize import quantize_int8
    from torch_impl.model import RecurrentClassifier, get_params

    ckpt = Path(checkpoint_path) if checkpoint_path else workdir / "model.safetensors"
    if not checkpoint_path:
        cell, head = parse_variant(variant)
        config = Config(cell=cell, head=head)
        torch.manual_seed(config.seed)
        checkpoint.save_model(ckpt, get_params(RecurrentClassifier(config)), config)
    paths = {"whole fp32": workdir / "model.onnx", "step fp32": workdir / "model.step.onnx"}
    export_checkpoint(ckpt, paths["whole fp32"], verify_limit=0, streaming=True, log=lambda line: None)
    for name in ("whole", "step"):
        paths[f"{name} int8"] = paths[f"{name} fp32"].with_suffix(".int8.onnx")
        quantize_int8(paths[f"{name} fp32"], paths[f"{name} int8"])
    return paths


def benchmark(variant: str = "lstm-last", checkpoint_path: str | None = None, *, rounds: int = 7,
              block_seconds: float = 0.5, threads: int = 1, log=print) -> dict:
    import onnxruntime as ort

    from common import data
    from export import streaming
    from export.runtime import session

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="step-latency.") as workdir:
        paths = files(Path(workdir), variant, checkpoint_path)
        sessions = {name: session(path, threads) for name, path in paths.items()}
        _, info, stream = streaming.open_step_model(paths["step fp32"])
    try:
        images, source = data.load_split("test", limit=1000, normalize=info.preprocessing.normalize).images, "test"
    except UserError:
        images, source = np.random.default_rng(0).random((1000, 28, 28), dtype=np.float32), "random"
    image = images[:1]
    contenders = {name: (lambda s=sessions[name]: s.run(None, {"input": image})) for name in ("whole fp32", "whole int8")}
    states = streaming.initial_states(stream, 1)
    for name in ("step fp32", "step int8"):
        contenders[name] = lambda s=sessions[name]: s.run(None, {"rows": image[:, :1], **states})
    medians_ms = {name: 1e3 * seconds for name, seconds in measure_rotated(contenders, rounds, block_seconds).items()}
    finals = {kind: list(streaming.run_stream(sessions[f"step {kind}"], stream, images, [1] * 28))[-1][1].argmax(1)
              for kind in ("fp32", "int8")}
    report = {"variant": info.variant, "checkpoint": checkpoint_path, "latency_ms": medians_ms,
              "per_row_ms": {name: value / (28 if name.startswith("whole") else 1) for name, value in medians_ms.items()},
              "int8_step_agreement": float((finals["fp32"] == finals["int8"]).mean()), "agreement_images": len(images),
              "rounds": rounds, "block_seconds": block_seconds, "threads": threads, "load_before": load_before,
              "load_after": os.getloadavg(), "cpu": cpu_model(), "cpus": os.cpu_count(),
              "versions": {"onnxruntime": ort.__version__}, "date": datetime.date.today().isoformat()}
    log(f"{info.variant} ({info.config['hidden_size']} hidden, {info.config['num_layers']} layers), batch 1, "
        f"median of {rounds} rounds x {block_seconds} s blocks in rotation; {report['cpu']}, {report['cpus']} CPUs; "
        f"onnxruntime {ort.__version__}, {threads} intra-op thread(s); {report['date']}")
    log(f"load average before {load_before[0]:.2f}, after {report['load_after'][0]:.2f} (1 min)")
    log(f"{'':12}{'per call (ms)':>15}{'per row (ms)':>15}")
    for name in contenders:
        rows = "28 rows" if name.startswith("whole") else "1 row"
        log(f"{name:12}{medians_ms[name]:15.3f}{report['per_row_ms'][name]:15.4f}   ({rows} per call)")
    log(f"int8 step model: same final prediction as fp32 on {100 * report['int8_step_agreement']:.2f}% "
        f"of {len(images)} {source} images")
    return report
