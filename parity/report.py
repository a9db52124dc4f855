"""The parity report: measured max differences between PyTorch, JAX and ONNX, as a markdown table.

    python -m parity.report                    # tutorial sizes: hidden 256, 2 layers, 28x28, batch 64
    python -m parity.report --sizes tiny       # hidden 8, seconds instead of minutes
    python -m parity.report --out parity.md    # also write the table to a file
    python -m parity.report --update-docs      # paste it into docs/PARITY.md

One row per cell x head, one column per check, all from `parity.measure` (the code the tests
run), with the tolerance the tests assert under each column; a second table shows how the
training gap grows over the steps, beside torch float32's own drift from float64. Torch's
initial weights are copied to JAX; inputs are standard normal; training runs the real
backends' train_step on synthetic batches from the common loader.
"""
from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
import onnxruntime
import torch

from common import data
from common.atomic import atomic_write_text
from common.cli import Parser
from common.config import variant_name
from common.errors import run_cli
from common.precision import exact_float32
from common.report import markdown_table, paste_between_markers, require_markers
from common.summary import cpu_name
from parity import measure, tolerances

SIZES = {
    "default": dict(hidden_size=256, num_layers=2, seq_len=28, input_size=28, batch=64),
    "tiny": dict(hidden_size=8, num_layers=2, seq_len=5, input_size=3, batch=16),
}
STEPS = tolerances.TRAIN_STEPS
GROWTH_AT = (1, 5, 10, 20)
# (key, column title, the tolerance the tests assert; None: context, not asserted)
COLUMNS = [
    ("out", "out (every step)", tolerances.FORWARD_ATOL),
    ("h_n", "h_n", tolerances.FORWARD_ATOL),
    ("c_n", "c_n", tolerances.FORWARD_ATOL),
    ("logits", "logits", tolerances.FORWARD_ATOL),
    ("grad", "gradients (max rel.)", tolerances.GRAD_RTOL),
    ("params_1", "params, step 1", tolerances.TRAIN_PARAMS_ATOL_FIRST),
    ("params_n", f"params, step {STEPS}", None),
    ("loss_n", f"loss, step {STEPS}", tolerances.TRAIN_LOSS_ATOL),
    ("f64_params_n", f"torch f32 vs f64: params, step {STEPS}", None),
    ("onnx_vs_torch", "ONNX vs torch", tolerances.ONNX_ATOL),
    ("onnx_vs_jax", "ONNX vs JAX", tolerances.ONNX_ATOL),
]


def measure_variant(cell: str, head: str, sizes: dict) -> dict:
    values = dict(sizes)
    batch = values.pop("batch")
    config = measure.config_for(cell, head, batch_size=batch, **values)
    model = measure.torch_model(config)
    images, labels = measure.random_batch(config, batch)
    row: dict = measure.forward_diffs(model, config, images)
    errors = measure.gradient_errors(model, config, images, labels)
    row["grad"] = max(value for name, value in errors.items() if name != "loss")
    dataset = data.synthetic(batch * STEPS, seed=0, seq_len=config.seq_len, input_size=config.input_size)
    gaps = measure.training_gaps(config, dataset, STEPS, reference=True)
    row.update(params_1=gaps["params"][0], params_n=gaps["params"][-1], loss_n=gaps["loss"][-1],
               f64_params_n=gaps["params_f64"][-1], gaps=gaps)
    row.update(measure.onnx_diffs(measure.onnx_session(model, config), model, config, images))
    return row


def table(rows: dict[str, dict]) -> str:
    body = [[variant] + [f"{row[key]:.1e}" if key in row else "-" for key, _, _ in COLUMNS] for variant, row in rows.items()]
    body.append(["*tolerance*"] + [f"*{tol:.0e}*" if tol else "" for _, _, tol in COLUMNS])
    return markdown_table(["variant"] + [title for _, title, _ in COLUMNS], body)


def growth_table(rows: dict[str, dict]) -> str:
    """Max abs param difference after steps 1, 5, 10, 20: torch vs JAX, then torch f32 vs f64."""
    titles = [f"{who}, step {step}" for who in ("torch vs JAX", "f32 vs f64") for step in GROWTH_AT]
    body = [[variant] + [f"{row['gaps'][key][step - 1]:.1e}" for key in ("params", "params_f64") for step in GROWTH_AT]
            for variant, row in rows.items()]
    return markdown_table(["variant"] + titles, body)


def report(sizes_name: str) -> str:
    sizes = SIZES[sizes_name]
    start = time.perf_counter()
    rows = {variant_name(cell, head): measure_variant(cell, head, sizes) for cell, head in measure.COMBOS}
    adam = measure.adam_errors(STEPS)
    seconds = time.perf_counter() - start
    shape = ", ".join(f"{name} {value}" for name, value in sizes.items())
    return "\n".join([
        f"Max abs differences, float32, {shape}. Gradients: max over parameters of "
        f"||g_torch - g_jax|| / ||g_torch||. Training: {STEPS} Adam steps of the real backends (lr "
        "from common.training) on synthetic batches from the common loader, beside torch float32 vs "
        "torch float64 on the same batches (float32's own drift). Tolerances are what the tests "
        "assert; training's are asserted at test sizes (hidden 8), where training is stable.",
        "",
        table(rows),
        "",
        growth_table(rows),
        "",
        f"Adam alone, the same {STEPS} gradients into each trainer's make_optimizer: distance from "
        f"exact float64 Adam relative to the distance moved, max over steps: torch {max(adam['torch']):.1e}, "
        f"JAX {max(adam['jax']):.1e} (tolerance {tolerances.ADAM_RTOL:.0e}).",
        "",
        f"Torch {torch.__version__} on {measure.TORCH_DEVICE.type} (torch threads: {torch.get_num_threads()}), "
        f"JAX {jax.__version__} on {jax.default_backend()}, onnxruntime {onnxruntime.__version__} (CPU), "
        f"NumPy {np.__version__}; "
        f"{cpu_name()} ({os.cpu_count()} cores); {datetime.date.today().isoformat()}; {seconds:.0f} s for "
        f"`python -m parity.report --sizes {sizes_name}`.",
    ])


def main(argv: Sequence[str] | None = None) -> str:
    parser = Parser(prog="python -m parity.report", description=__doc__)
    parser.add_argument("--sizes", choices=list(SIZES), default="default", help="model and batch sizes")
    parser.add_argument("--out", help="also write the markdown to this file")
    parser.add_argument("--update-docs", action="store_true",
                        help="paste the report into docs/PARITY.md (its --sizes default block)")
    args = parser.parse_args(argv)
    docs = Path(__file__).resolve().parents[1] / "docs" / "PARITY.md"
    if args.update_docs:
        require_markers(docs, f"parity:{args.sizes}")  # docs hold the default sizes only
    exact_float32()
    text = report(args.sizes)
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    if args.update_docs:
        paste_between_markers(docs, f"parity:{args.sizes}", text)
    return text


if __name__ == "__main__":
    run_cli(main)
