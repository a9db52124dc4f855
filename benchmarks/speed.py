"""Training throughput of every variant in both frameworks, measured in one process.

    python -m benchmarks.speed                                   # 4 variants, batch 64, 5 rounds, CPU
    python -m benchmarks.speed --variants lstm gru --batch-sizes 64 256 --rounds 7 --json speed.json
    python -m benchmarks.speed --device cuda --batch-sizes 64 256 1024   # adds JAX's cuDNN LSTM

A contender is one (variant, batch size, kernel) running full training steps (forward, backward,
Adam, reading the loss back) through the same backend calls the trainer makes: `torch` (oneDNN on
CPU, cuDNN on GPU), `jax` (the jax.lax.scan reference) and, for the LSTM variants on a GPU,
`jax-cudnn` (--rnn-kernel cudnn). The contenders run in rotation, each in a block of about
--block-seconds (the machine's speed drifts from minute to minute, and torch's and XLA's thread
pools fight if interleaved tightly); we report the median over rounds. JAX's compile time is
measured separately, before the rounds. Achieved GFLOP/s counts matmul FLOPs only (a training
step ~ 3x the forward) against the measured float32 matmul peak (2048^3, TF32 off). Prints the
CPU or GPU, the load and a markdown table; --json also writes the numbers, --update-docs
pastes the table into docs/PERFORMANCE.md.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common.cli import Parser
from common.config import GATES, VARIANTS, Config
from common.errors import UserError, run_cli
from common.precision import exact_float32
from common.timing import add_timing_flags, check_timing_flags, write_json
from common.report import markdown_table, paste_between_markers, require_markers

DOCS = Path(__file__).resolve().parents[1] / "docs"
KERNELS = ("torch", "jax", "jax-cudnn")


def matmul_peak(device: str, size: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of torch's size^3 matmul on the device (TF32 off: exact_float32)."""
    import torch
    a, b = (torch.rand(size, size, device=device) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        started = time.perf_counter()
        (a @ b).sum().item()  # .item() waits for the GPU
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9


def train_flops_per_sample(config: Config) -> float:
    """Matmul FLOPs of one training step per sample: 3x the forward (backward ~ 2x forward)."""
    rows, forward = GATES[config.cell] * config.hidden_size, 0
    for layer in range(config.num_layers):
        inputs = config.input_size if layer == 0 else config.hidden_size
        forward += config.seq_len * 2 * (inputs + config.hidden_size) * rows
    forward += 2 * config.head_features * config.num_classes
    return 3 * forward


def torch_contender(config: Config, images, labels, device: str) -> tuple[Callable[[], object], None]:
    from torch_impl.train import TorchBackend
    backend = TorchBackend(config, device)
    return lambda: backend.train_step(images, labels, config.lr), None  # float(loss) waits for the GPU


def jax_contender(config: Config, images, labels, device: str) -> tuple[Callable[[], object], float]:
    """The trainer's step, compiled ahead of time so that the compile time can be reported."""
    from jax_impl import train as jax_train
    backend = jax_train.JaxBackend(config, device)
    batch = backend.device_batch(images, labels, len(labels))
    started = time.perf_counter()
    compiled = jax_train.train_step.lower(backend.graphdef, backend.treedef, backend.leaves, batch, backend.lr).compile()
    compile_seconds = time.perf_counter() - started

    def step():  # what JaxBackend.train_step does, with the executable compiled above
        backend.set_learning_rate(config.lr)
        batch = backend.device_batch(images, labels, len(labels))
        backend.leaves, metrics = compiled(backend.leaves, batch, backend.lr)
        return float(metrics["loss"]), int(metrics["correct"])  # reading them back waits for the device
    return step, compile_seconds


def contenders_for(variant: str, batch_size: int, device: str) -> list[tuple[str, Config, Callable]]:
    """(kernel, config, make) for one variant and batch size: jax-cudnn only for the LSTM on a GPU."""
    cell, head = VARIANTS[variant]
    config = Config(cell=cell, head=head, batch_size=batch_size)
    chosen = [("torch", config, torch_contender), ("jax", config, jax_contender)]
    if cell == "lstm" and device == "cuda":
        chosen.append(("jax-cudnn", dataclasses.replace(config, rnn_kernel="cudnn"), jax_contender))
    return chosen


def run_block(step: Callable[[], object], seconds: float) -> float:
    """Seconds per step over a block of about `seconds` (one untimed step first)."""
    step()
    count, started = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return elapsed / count


def machine(device: str) -> dict:
    import jax
    import torch
    from common.summary import cpu_name
    return {"device": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "jax": jax.__version__}


def measure(variants: Sequence[str], batch_sizes: Sequence[int], rounds: int, block_seconds: float,
            device: str = "cpu", log: Callable[[str], None] = print) -> dict:
    load, info = os.getloadavg()[0], machine(device)
    log(f"{info['device']}; load average (1 min) at start {load:.2f} on {info['cpu_count']} cores; "
        f"torch {info['torch']} ({info['torch_threads']} threads), jax {info['jax']}")
    peak = matmul_peak(device)
    log(f"float32 matmul 2048^3 peak (torch, TF32 off): {peak:.0f} GFLOP/s")
    rng = np.random.default_rng(0)
    contenders = []  # (variant, batch size, kernel, step, compile seconds)
    for variant in variants:
        for batch_size in batch_sizes:
            images = rng.random((batch_size, 28, 28), dtype=np.float32)
            labels = rng.integers(0, 10, batch_size).astype(np.int64)
            for kernel, config, make in contenders_for(variant, batch_size, device):
                step, compile_seconds = make(config, images, labels, device)
                contenders.append((variant, batch_size, kernel, step, compile_seconds))
                if compile_seconds is not None:
                    log(f"compiled {kernel} {variant} batch {batch_size} in {compile_seconds:.1f} s")
    times: list[list[float]] = [[] for _ in contenders]
    for round_ in range(rounds):
        for index, (_, _, _, step, _) in enumerate(contenders):
            times[index].append(run_block(step, block_seconds))
        log(f"round {round_ + 1}/{rounds} done")
    results = []
    for (variant, batch_size, kernel, _, compile_seconds), seconds in zip(contenders, times):
        cell, head = VARIANTS[variant]
        per_step = statistics.median(seconds)
        gflops = train_flops_per_sample(Config(cell=cell, head=head)) * batch_size / per_step / 1e9
        results.append({"variant": variant, "batch_size": batch_size, "kernel": kernel,
                        "step_seconds": per_step, "samples_per_second": batch_size / per_step,
                        "gflops": gflops, "fraction_of_peak": gflops / peak,
                        "compile_seconds": compile_seconds, "rounds": seconds})
    return {**info, "load_average_start": load, "load_average_end": os.getloadavg()[0],
            "matmul_peak_gflops": peak, "rounds": rounds, "block_seconds": block_seconds, "results": results}


def table(report: dict) -> str:
    """One row per variant and batch size: samples/s of each kernel, its ratio to torch, % of peak."""
    kernels = [k for k in KERNELS if any(r["kernel"] == k for r in report["results"])]
    head = ["variant", "batch"] + [f"{k} samples/s" for k in kernels] + [f"{k}/torch" for k in kernels[1:]] \
        + [f"{k} % peak" for k in kernels] + ["jax compile s"]
    by_key = {(r["variant"], r["batch_size"], r["kernel"]): r for r in report["results"]}
    rows = []
    for variant, batch_size in dict.fromkeys((r["variant"], r["batch_size"]) for r in report["results"]):
        row = [by_key.get((variant, batch_size, k)) for k in kernels]
        torch_speed = row[0]["samples_per_second"]
        rows.append([variant, batch_size] + [f"{r['samples_per_second']:.0f}" if r else "-" for r in row]
                    + [f"{r['samples_per_second'] / torch_speed:.2f}x" if r else "-" for r in row[1:]]
                    + [f"{100 * r['fraction_of_peak']:.0f}%" if r else "-" for r in row]
                    + [f"{row[1]['compile_seconds']:.1f}"])
    return (f"{markdown_table(head, rows)}\n\n{report['device']}; load average {report['load_average_start']:.2f} -> "
            f"{report['load_average_end']:.2f} on {report['cpu_count']} cores; float32 matmul peak "
            f"{report['matmul_peak_gflops']:.0f} GFLOP/s; median of {report['rounds']} rounds of "
            f"~{report['block_seconds']} s blocks; torch {report['torch']}, jax {report['jax']}")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="python -m benchmarks.speed", description=__doc__)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    add_timing_flags(parser, rounds=5)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own, one per core)")
    parser.add_argument("--update-docs", action="store_true", help="paste the table into docs/PERFORMANCE.md")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    check_timing_flags(args)
    if min(args.batch_sizes) < 1:
        raise UserError(f"--batch-sizes must be at least 1, got {min(args.batch_sizes)}")
    exact_float32()
    if args.update_docs:
        require_markers(DOCS / "PERFORMANCE.md", "speed")
    if args.torch_threads is not None:
        import torch
        torch.set_num_threads(max(1, args.torch_threads))
    report = measure(args.variants, args.batch_sizes, args.rounds, args.block_seconds, args.device)
    print(table(report))
    write_json(args, report)
    if args.update_docs:
        paste_between_markers(DOCS / "PERFORMANCE.md", "speed", table(report))
    return report


if __name__ == "__main__":
    run_cli(main)
