"""Inference latency at batch 1 and 256: torch eager, onnxruntime fp32 and int8, JAX jit.

    python -m benchmarks.latency                              # lstm-last, random weights
    python -m benchmarks.latency --variant gru --rounds 9
    python -m benchmarks.latency --checkpoint RUN/model.safetensors --json latency.json
    python -m benchmarks.latency --streaming     # per-row latency of the step model (benchmarks/step_latency.py)

All contenders run in one process, in rotation (A B C D A B C D ...), each in blocks of about
--block-seconds so that torch's, onnxruntime's and XLA's thread pools don't fight over the
cores (see /work/shared/BENCHMARKING.md). Each block gives a median per call; the table shows
the median over rounds. Latency does not depend on the weights, so without a checkpoint the
model is randomly initialised. JAX runs its inference form (input projection hoisted, scan
unrolled). The load average is printed before and after: timings taken under load are not
comparable.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchmarks import step_latency
from common.cli import Parser
from common.errors import UserError, run_cli
from common.timing import add_timing_flags, check_timing_flags, measure_rotated, write_json

BATCH_SIZES = (1, 256)


def jax_contender(params: dict, config, inputs: dict[int, np.ndarray]):
    """(batch -> call, compile seconds) for JAX's inference form: the Flax classifier with the
    input projection hoisted and the scan unrolled (unroll=True)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax_impl.nn import classifier
    graphdef, state = nnx.split(classifier(config, params))
    # The call takes the state's arrays as a flat list: flattening an nnx.State on every call is
    # host time that a batch-1 call would count.
    jax_params, treedef = jax.tree.flatten(state)
    jitted = jax.jit(lambda leaves, x: nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(x, unroll=True))
    calls, compile_seconds = {}, {}
    for n, images in inputs.items():
        x = jnp.asarray(images)
        start = time.perf_counter()
        compiled = jitted.lower(jax_params, x).compile()
        compile_seconds[n] = time.perf_counter() - start
        # Async dispatch: block on the result, or we time only the launch.
        calls[n] = lambda c=compiled, x=x: c(jax_params, x).block_until_ready()
    return calls, compile_seconds


def benchmark(variant: str = "lstm-last", checkpoint_path: str | None = None, *, rounds: int = 7,
              block_seconds: float = 0.5, log: Callable[[str], None] = print) -> dict:
    import onnxruntime as ort
    import torch

    from common import checkpoint, data
    from common.config import Config, parse_variant
    from export.onnx import export_checkpoint
    from export.quantize import quantize_int8
    from export.verify import session
    from torch_impl.model import RecurrentClassifier, get_params

    load_before = os.getloadavg()
    if checkpoint_path:
        params, config, _ = checkpoint.load_model(checkpoint_path)
    else:
        cell, head = parse_variant(variant)
        config = Config(cell=cell, head=head)
        torch.manual_seed(config.seed)
        params = get_params(RecurrentClassifier(config))
    model = RecurrentClassifier(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    model.eval()
    with tempfile.TemporaryDirectory(prefix="latency.") as workdir:
        ckpt, fp32, int8 = (Path(workdir) / name for name in ("model.safetensors", "model.onnx", "model.int8.onnx"))
        checkpoint.save_model(ckpt, params, config)
        exported = export_checkpoint(ckpt, fp32, verify_limit=0, log=lambda line: None)
        quantize_int8(fp32, int8)
        sessions = {"onnxruntime fp32": session(fp32), "onnxruntime int8": session(int8)}

    try:  # real digits when present; the time does not depend on them
        images = data.load_split("test", limit=max(BATCH_SIZES), normalize=config.normalize).images
    except UserError:
        images = np.random.default_rng(0).random((max(BATCH_SIZES), config.seq_len, config.input_size),
                                                 dtype=np.float32)
    inputs = {n: np.ascontiguousarray(images[:n]) for n in BATCH_SIZES}
    torch_inputs = {n: torch.from_numpy(x) for n, x in inputs.items()}

    def torch_call(x):
        with torch.inference_mode():
            return model(x)

    contenders = {("torch eager", n): (lambda x=torch_inputs[n]: torch_call(x)) for n in BATCH_SIZES}
    for name, sess in sessions.items():
        contenders.update({(name, n): (lambda s=sess, x=inputs[n]: s.run(None, {"input": x})) for n in BATCH_SIZES})
    jax_calls, jax_compile = jax_contender(params, config, inputs)
    contenders.update({("jax jit", n): call for n, call in jax_calls.items()})
    notes = ["JAX compile (inference form): " + ", ".join(f"batch {n} {s:.2f} s" for n, s in jax_compile.items())]

    medians = measure_rotated(contenders, rounds, block_seconds)
    names = list(dict.fromkeys(name for name, _ in contenders))
    results = {name: {n: 1e3 * medians[(name, n)] for n in BATCH_SIZES} for name in names}
    fastest = {n: min(names, key=lambda name: results[name][n]) for n in BATCH_SIZES}
    threads = (f"torch {torch.get_num_threads()} threads; onnxruntime default intra-op threads; "
               f"{os.cpu_count()} CPUs; torch {torch.__version__}, onnxruntime {ort.__version__}")
    report = {"variant": config.variant, "checkpoint": checkpoint_path, "latency_ms": results, "fastest": fastest,
              "rounds": rounds, "block_seconds": block_seconds, "load_before": load_before,
              "load_after": os.getloadavg(), "threads": threads, "notes": notes,
              "onnx_ops": exported["onnx_ops"]}

    from common.summary import cpu_name
    log(f"{cpu_name()}; {config.variant} (hidden {config.hidden_size}, {config.num_layers} layers), "
        f"median of {rounds} rounds x {block_seconds} s blocks, in rotation; {threads}")
    log(f"load average before {load_before[0]:.2f}, after {report['load_after'][0]:.2f} (1 min)")
    base = results["onnxruntime fp32"]
    log(f"{'':18}{'batch 1 (ms)':>14}{'batch 256 (ms)':>16}{'samples/s @256':>16}{'vs ort fp32 (1/256)':>22}")
    for name in names:
        row = results[name]
        log(f"{name:18}{row[1]:14.3f}{row[256]:16.3f}{256e3 / row[256]:16.0f}"
            f"{row[1] / base[1]:13.2f}x /{row[256] / base[256]:5.2f}x")
    for note in notes:
        log(note)
    ort_wins = all(fastest[n].startswith("onnxruntime") for n in BATCH_SIZES)
    others = [name for name in names if not name.startswith("onnxruntime")]
    fp32_wins = {n: all(base[n] < results[name][n] for name in others) for n in BATCH_SIZES}
    report.update(goal_met=ort_wins, fp32_beats_frameworks=fp32_wins)
    log(f"fastest: batch 1 {fastest[1]}, batch 256 {fastest[256]}; goal (onnxruntime fastest at both sizes) "
        f"{'met' if ort_wins else 'NOT met'}; onnxruntime fp32 alone beats "
        f"{' and '.join(others)} at batch 1: {'yes' if fp32_wins[1] else 'no'}, at 256: {'yes' if fp32_wins[256] else 'no'}")
    return report


def main(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument("--variant", default="lstm-last", help="model shape when no --checkpoint is given")
    parser.add_argument("--checkpoint", help="time this model.safetensors (its config decides the shape)")
    add_timing_flags(parser)
    parser.add_argument("--streaming", action="store_true",
                        help="per-row latency of the step model instead (benchmarks/step_latency.py)")
    args = parser.parse_args(argv)
    check_timing_flags(args)
    run = step_latency.benchmark if args.streaming else benchmark
    report = run(args.variant, args.checkpoint, rounds=args.rounds, block_seconds=args.block_seconds)
    write_json(args, report)
    return report


if __name__ == "__main__":
    run_cli(main)
