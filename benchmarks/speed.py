"""Training throughput of every variant in both frameworks, measured in one process.

    python -m benchmarks.speed                                   # 4 variants, batch 64, 5 rounds
    python -m benchmarks.speed --variants lstm gru --batch-sizes 64 256 --rounds 7 --out speed.json

A contender is one (variant, batch size, framework) running full training steps (forward,
backward, Adam, reading the loss back) through the same backend calls the trainer makes. The
contenders run in rotation, each in a block of about --block seconds (the machine's speed drifts
from minute to minute, and torch's and XLA's thread pools fight if interleaved tightly); we report
the median over rounds. JAX's compile time is measured separately, before the rounds. Achieved
GFLOP/s counts matmul FLOPs only (a training step ~ 3x the forward) and is compared with the
measured float32 sgemm peak (2048^3). Prints a markdown table; --out also writes JSON,
--update-docs pastes the table into docs/PERFORMANCE.md.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common.atomic import atomic_write_json
from common.cli import Parser
from common.config import GATES, VARIANTS, Config
from common.errors import UserError, run_cli
from common.report import markdown_table, paste_between_markers, require_markers

DOCS = Path(__file__).resolve().parents[1] / "docs"


def sgemm_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best float32 matmul GFLOP/s of numpy and of torch on size^3."""
    import torch
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    result = {}
    for name, matmul in (("numpy", lambda: a @ b), ("torch", lambda: ta @ tb)):
        matmul()
        best = min(_timed(matmul) for _ in range(repeats))
        result[name] = 2 * size ** 3 / best / 1e9
    return result


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def train_flops_per_sample(config: Config) -> float:
    """Matmul FLOPs of one training step per sample: 3x the forward (backward ~ 2x forward)."""
    rows, forward = GATES[config.cell] * config.hidden_size, 0
    for layer in range(config.num_layers):
        inputs = config.input_size if layer == 0 else config.hidden_size
        forward += config.seq_len * 2 * (inputs + config.hidden_size) * rows
    features = config.head_features
    forward += 2 * features * config.num_classes
    return 3 * forward


def torch_contender(config: Config, images, labels) -> tuple[Callable[[], object], float]:
    from torch_impl.train import TorchBackend
    backend = TorchBackend(config, "cpu")
    return lambda: backend.train_step(images, labels, config.lr), 0.0


def jax_contender(config: Config, images, labels) -> tuple[Callable[[], object], float]:
    """The trainer's step, compiled ahead of time so that the compile time can be reported."""
    import jax
    from jax_impl import train as jax_train
    backend = jax_train.JaxBackend(config, "cpu")
    batch = jax.device_put(jax_train.padded_batch(images, labels, len(labels)), backend.jax_device)
    started = time.perf_counter()
    compiled = jax_train.train_step.lower(backend.params, backend.opt_state, batch, config).compile()
    compile_seconds = time.perf_counter() - started

    def step():  # what JaxBackend.train_step does, with the executable compiled above
        backend.set_learning_rate(config.lr)
        batch = jax.device_put(jax_train.padded_batch(images, labels, len(labels)), backend.jax_device)
        backend.params, backend.opt_state, metrics = compiled(backend.params, backend.opt_state, batch)
        return float(metrics["loss"]), int(metrics["correct"])
    return step, compile_seconds


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


def measure(variants: Sequence[str], batch_sizes: Sequence[int], rounds: int, block: float) -> dict:
    import torch
    import jax
    load = os.getloadavg()[0]
    print(f"load average (1 min) at start: {load:.2f} on {os.cpu_count()} cores; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__}", flush=True)
    peak = sgemm_peak()
    peak_gflops = max(peak.values())
    print(f"float32 sgemm 2048^3 peak: numpy {peak['numpy']:.0f}, torch {peak['torch']:.0f} GFLOP/s", flush=True)
    rng = np.random.default_rng(0)
    contenders = []  # (variant, batch size, framework, step, compile seconds)
    for variant in variants:
        cell, head = VARIANTS[variant]
        for batch_size in batch_sizes:
            config = Config(cell=cell, head=head, batch_size=batch_size)
            images = rng.random((batch_size, config.seq_len, config.input_size), dtype=np.float32)
            labels = rng.integers(0, config.num_classes, batch_size).astype(np.int64)
            for framework, make in (("torch", torch_contender), ("jax", jax_contender)):
                step, compile_seconds = make(config, images, labels)
                contenders.append((variant, batch_size, framework, step, compile_seconds))
                if framework == "jax":
                    print(f"compiled jax {variant} batch {batch_size} in {compile_seconds:.1f} s", flush=True)
    times: list[list[float]] = [[] for _ in contenders]
    for round_ in range(rounds):
        for index, (_, _, _, step, _) in enumerate(contenders):
            times[index].append(run_block(step, block))
        print(f"round {round_ + 1}/{rounds} done", flush=True)
    results = []
    for (variant, batch_size, framework, _, compile_seconds), seconds in zip(contenders, times):
        cell, head = VARIANTS[variant]
        per_step = statistics.median(seconds)
        gflops = train_flops_per_sample(Config(cell=cell, head=head)) * batch_size / per_step / 1e9
        results.append({"variant": variant, "batch_size": batch_size, "framework": framework,
                        "step_seconds": per_step, "samples_per_second": batch_size / per_step,
                        "gflops": gflops, "fraction_of_peak": gflops / peak_gflops,
                        "compile_seconds": compile_seconds if framework == "jax" else None, "rounds": seconds})
    return {"load_average_start": load, "load_average_end": os.getloadavg()[0], "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "jax": jax.__version__,
            "sgemm_peak_gflops": peak, "rounds": rounds, "block_seconds": block, "results": results}


def table(report: dict) -> str:
    head = ["variant", "batch", "torch samples/s", "jax samples/s", "jax/torch", "torch GFLOP/s (% peak)",
            "jax GFLOP/s (% peak)", "jax compile s"]
    by_key = {(r["variant"], r["batch_size"], r["framework"]): r for r in report["results"]}
    rows = []
    for variant, batch_size in dict.fromkeys((r["variant"], r["batch_size"]) for r in report["results"]):
        torch_, jax_ = by_key[variant, batch_size, "torch"], by_key[variant, batch_size, "jax"]
        rows.append([variant, batch_size, f"{torch_['samples_per_second']:.0f}", f"{jax_['samples_per_second']:.0f}",
                     f"{jax_['samples_per_second'] / torch_['samples_per_second']:.2f}x",
                     f"{torch_['gflops']:.1f} ({100 * torch_['fraction_of_peak']:.0f}%)",
                     f"{jax_['gflops']:.1f} ({100 * jax_['fraction_of_peak']:.0f}%)", f"{jax_['compile_seconds']:.1f}"])
    peak = report["sgemm_peak_gflops"]
    return (f"{markdown_table(head, rows)}\n\nload average {report['load_average_start']:.2f} -> "
            f"{report['load_average_end']:.2f}, {report['cpu_count']} cores, sgemm peak {max(peak.values()):.0f} GFLOP/s, "
            f"median of {report['rounds']} rounds of ~{report['block_seconds']} s blocks")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="python -m benchmarks.speed", description=__doc__)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64])
    parser.add_argument("--rounds", type=int, default=5, help="rotations over all contenders (median taken)")
    parser.add_argument("--block", type=float, default=0.5, help="seconds each contender runs per round")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own, one per core)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--update-docs", action="store_true", help="paste the table into docs/PERFORMANCE.md")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.block <= 0 or min(args.batch_sizes) < 1:
        raise UserError("--rounds and --batch-sizes must be at least 1 and --block positive")
    if args.update_docs:
        require_markers(DOCS / "PERFORMANCE.md", "speed")
    if args.torch_threads is not None:
        import torch
        torch.set_num_threads(max(1, args.torch_threads))
    report = measure(args.variants, args.batch_sizes, args.rounds, args.block)
    print(table(report))
    if args.out:
        atomic_write_json(args.out, report)
    if args.update_docs:
        paste_between_markers(DOCS / "PERFORMANCE.md", "speed", table(report))
    return report


if __name__ == "__main__":
    run_cli(main)
