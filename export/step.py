"""The streaming (step) model: the torch classifier cut at the time loop, exported and verified.

    python -m export.onnx --checkpoint RUN/model.safetensors --streaming   # also writes model.step.onnx

`StepModel` reuses the classifier's own nn.RNN/GRU/LSTM and Linear (same weights, same kernels),
with the state as explicit inputs and outputs; export/streaming.py documents the file's interface
and runs it. Before the file is moved into place, `verify_step` feeds it real test images and
random inputs one row at a time and in uneven chunks, and requires the final logits and states to
match the torch whole-sequence model, and the logits after every call to match torch's running
logits (export.verify.LOGIT_ATOL, the whole-sequence file's tolerance), and the same predicted
class on every test image.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import nn

from common.config import Config
from common.errors import UserError
from export import streaming
from export.metadata import set_metadata
from export.verify import BATCH_SIZES, LOGIT_ATOL, check_diffs, check_predictions, compare_predictions, \
    optional_test_set, write_verified
from torch_impl.model import RecurrentClassifier

OPSET = 18
EXAMPLE_BATCH, EXAMPLE_ROWS = 2, 3  # torch.export specialises sizes 0 and 1: examples of 2+ stay symbolic


class StepModel(nn.Module):
    """rows (B, k, F) and the states -> logits (B, classes) and the new states (export/streaming.py)."""

    def __init__(self, classifier: RecurrentClassifier, config: Config):
        super().__init__()
        self.rnn, self.fc = classifier.rnn, classifier.fc
        self.cell, self.head, self.seq_len = config.cell, config.head, config.seq_len

    def forward(self, rows: torch.Tensor, *states: torch.Tensor):
        if self.cell == "lstm":
            out, (h, c) = self.rnn(rows, (states[0], states[1]))  # (B, k, F) -> (B, k, H)
            new = [h, c]
        else:
            out, h = self.rnn(rows, states[0])
            new = [h]
        if self.head == "last":
            return (self.fc(out[:, -1]), *new)
        acc, position = states[-2:]
        batch, k, hidden = out.shape
        # fc.weight (C, T*H) is one (C, H) block per row; take the blocks of rows position..position+k-1.
        blocks = self.fc.weight.view(-1, self.seq_len, hidden).index_select(1, position + torch.arange(k))
        acc = acc + torch.einsum("bkh,ckh->bc", out, blocks)  # (B, k, H) x (C, k, H) -> (B, C)
        return (acc + self.fc.bias, *new, acc, position + k)


def example_inputs(config: Config, batch: int, rows: int) -> tuple[torch.Tensor, ...]:
    stream = streaming.spec(config.to_dict())
    states = streaming.initial_states(stream, batch)
    return (torch.zeros(batch, rows, config.input_size), *(torch.from_numpy(v) for v in states.values()))


def to_step_onnx(model: RecurrentClassifier, config: Config) -> tuple[onnx.ModelProto, int | str]:
    """The step graph (weights inline) and how many rows it takes per call ("any", or 1).

    GRU and LSTM keep the rows axis dynamic (torch.export lowers them to a while_loop, the ONNX
    exporter to native GRU/LSTM ops). nn.RNN exports unrolled, one MatMul per row, so its rows
    axis is fixed: it takes one row per call (callers split chunks). Should torch.export still
    specialise the axis, the file falls back to one row per call rather than a wrong shape."""
    if config.cell != "rnn":
        proto = _export_step(model, config, EXAMPLE_ROWS)
        if _rows_axis(proto) != EXAMPLE_ROWS:
            return proto, "any"
    return _export_step(model, config, 1), 1


def _forget_stale_rnn_kernels() -> None:
    """torch 2.14.1: torch.onnx.export registers while_loop kernels for aten.lstm/gru only for the
    duration of each export, but the ops' dispatch caches keep the first lookup; after one
    export in a process, the next LSTM export specialised the rows axis to the example's size.
    Clearing the caches makes every export see the kernels it registers (measured: rows stay dynamic)."""
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        cache = getattr(op, "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


def _rows_axis(proto: onnx.ModelProto) -> int | str:
    dim = proto.graph.input[0].type.tensor_type.shape.dim[1]
    return dim.dim_param or dim.dim_value


def _export_step(model: RecurrentClassifier, config: Config, rows: int) -> onnx.ModelProto:
    stream = streaming.spec(config.to_dict())
    batch = torch.export.Dim("batch", min=1)
    row_axes = {0: batch, 1: torch.export.Dim("rows", min=1)} if rows > 1 else {0: batch}
    # forward(rows, *states): torch.export sees two arguments, rows and the tuple of states
    state_axes = tuple({s["shape"].index("batch"): batch} if "batch" in s["shape"] else {} for s in stream["states"])
    _forget_stale_rnn_kernels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nn.RNN's "_flat_weights assigned during export": harmless
            program = torch.onnx.export(StepModel(model, config).eval(), example_inputs(config, EXAMPLE_BATCH, rows),
                                        dynamo=True, opset_version=OPSET, external_data=False,
                                        input_names=[streaming.ROWS] + [s["name"] for s in stream["states"]],
                                        output_names=stream["outputs"], dynamic_shapes=(row_axes, state_axes),
                                        verbose=False)
    except Exception as error:
        raise UserError(f"torch.onnx.export of the {config.variant} step model failed: "
                        f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    return program.model_proto


@torch.no_grad()
def torch_reference(model: RecurrentClassifier, images: np.ndarray) -> dict[str, np.ndarray]:
    """Whole-sequence logits, final states, and the running logits after every row (B, T, C)."""
    x = torch.from_numpy(images)
    out, state = model.recurrent(x)  # (B, T, H)
    h, c = state if model.cell == "lstm" else (state, None)
    if model.head == "last":
        running = model.fc(out)
    else:
        batch, steps, hidden = out.shape
        blocks = model.fc.weight.view(-1, steps, hidden)  # (C, T, H)
        running = torch.einsum("bth,cth->btc", out, blocks).cumsum(1) + model.fc.bias
    reference = {"logits": model(x).numpy(), "h": h.numpy(), "running": running.numpy()}
    if c is not None:
        reference["c"] = c.numpy()
    return reference


def chunk_schedule(seq_len: int) -> list[int]:
    """Uneven chunks 1, 2, 3, 5, 8, ... that add up to seq_len (28: 1 2 3 5 8 9)."""
    sizes, a, b = [], 1, 2
    while sum(sizes) < seq_len:
        sizes.append(min(a, seq_len - sum(sizes)))
        a, b = b, a + b
    return sizes


def stream_diffs(sess, stream: dict, images: np.ndarray, reference: dict, chunks: list[int]) -> tuple[float, np.ndarray]:
    """Max abs difference from the torch reference over every call's logits and the final states; final logits."""
    worst = 0.0
    for seen, logits, states in streaming.run_stream(sess, stream, images, chunks):
        worst = max(worst, float(np.abs(logits - reference["running"][:, seen - 1]).max()))
    worst = max(worst, float(np.abs(logits - reference["logits"]).max()),
                *(float(np.abs(states[name] - reference[name]).max()) for name in ("h", "c") if name in reference))
    if "position" in states and int(states["position"][0]) != images.shape[1]:
        raise UserError(f"step model position ended at {states['position'][0]}, expected {images.shape[1]}")
    return worst, logits


def verify_step(path: Path, model: RecurrentClassifier, config: Config, *, data_dir=None, limit: int | None = None,
                seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Raise a UserError unless the step file at `path` streams what `model` computes; return the numbers."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:
        raise UserError(f"{path} fails onnx.checker: {str(error).splitlines()[0]}") from None
    sess, _, stream = streaming.open_step_model(path)
    schedules = {"rows": [1] * config.seq_len, "chunks": chunk_schedule(config.seq_len)}
    rng = np.random.default_rng(seed)
    inputs = {f"random_b{n}": rng.standard_normal((n, config.seq_len, config.input_size), dtype=np.float32)
              for n in BATCH_SIZES}
    test = optional_test_set(data_dir, config.normalize, log, "step model verified on random inputs only")
    count = min(len(test), limit if limit is not None else len(test)) if test is not None else 0
    if test is not None:
        inputs.update({f"mnist_b{n}": test.images[:n] for n in BATCH_SIZES})
    if count:
        inputs["mnist_test_set"] = test.images[:count]
    model.eval()
    diffs, report = {}, {"tolerance": LOGIT_ATOL, "test_images": 0, "mismatches": 0, "ties": 0,
                         "chunks": schedules["chunks"], "rows_per_call": stream["rows_per_call"]}
    for name, images in inputs.items():
        reference = torch_reference(model, images)
        for schedule, chunks in schedules.items():
            diffs[f"{name}_{schedule}"], logits = stream_diffs(sess, stream, images, reference, chunks)
        if name == "mnist_test_set":
            report.update(compare_predictions(logits, reference["logits"], test.labels[:count]))
    report["max_abs_diff"] = diffs
    log("max |step onnx - torch| (every call's logits, final states): "
        + ", ".join(f"{name} {value:.1e}" for name, value in diffs.items()) + f" (tolerance {LOGIT_ATOL:.0e})")
    check_diffs(diffs, path)
    check_predictions(report, path, log)
    return report


def export_step(model: RecurrentClassifier, config: Config, props: dict[str, str], out: Path, *,
                data_dir=None, limit: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Export, verify and atomically write the step model of `model` to `out`; return the report."""
    proto, rows_per_call = to_step_onnx(model, config)
    stream = streaming.spec(config.to_dict(), rows_per_call)
    set_metadata(proto, {**props, streaming.STREAM_KEY: json.dumps(stream, sort_keys=True)})
    report = write_verified(proto, out, lambda path: verify_step(path, model, config, data_dir=data_dir,
                                                                 limit=limit, log=log))
    report.update(path=str(out), bytes=out.stat().st_size, states=[s["name"] for s in stream["states"]])
    log(f"wrote {out} ({report['bytes'] / 1e6:.2f} MB; states {', '.join(report['states'])}, zeros at the start)")
    return report
