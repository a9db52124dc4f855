"""Data-parallel scaling: training samples/s with 1 and 2 workers per framework, through the real
trainers (torch: one process, then `torchrun --nproc-per-node 2`; JAX: `--devices 1`, then 2).

    python -m benchmarks.scaling                          # lstm-last, batch 64, 3 rounds
    python -m benchmarks.scaling --workers 1 2 4 --rounds 5 --out scaling.json

Each contender is a short training run on real MNIST (--limit-train images, one epoch); its
speed is the median of the trainer's own per-interval `samples/s` log values, the first interval
(JAX compilation, warm-up) left out. Contenders run in rotation, medians over --rounds rounds.
Efficiency = samples/s with N workers / (N x samples/s with 1). torch also runs one process
with a single thread (what each DDP rank gets from torchrun): the per-core baseline.
Prints a markdown table; --out also writes JSON. Not a test: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from common.atomic import atomic_write_json
from common.cli import Parser, add_data_dir
from common.errors import UserError, run_cli
from common.summary import cpu_name

RATE = re.compile(r"^epoch \d+ step \d+/\d+ \|.*\| (\d+) samples/s$", re.MULTILINE)


def command(framework: str, workers: int, flags: list[str]) -> list[str]:
    if framework == "torch" and workers > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}",
                "-m", "torch_impl.train", *flags]
    return [sys.executable, "-m", f"{framework}_impl.train", "--devices", str(workers), *flags]


def contenders(frameworks: Sequence[str], workers: Sequence[int]) -> list[tuple[str, int, int | None]]:
    """(framework, workers, threads); threads None: the framework's default."""
    found = [(framework, n, None) for framework in frameworks for n in workers]
    if "torch" in frameworks:
        found.insert(0, ("torch", 1, 1))
    return found


def measure_once(framework: str, workers: int, threads: int | None, flags: list[str]) -> float:
    """Median logged samples/s of one short run (first interval left out)."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(command(framework, workers, [*flags, "--out", str(Path(folder) / "run")]),
                                capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{framework} x{workers} failed:\n{result.stderr[-2000:]}")
    rates = [float(value) for value in RATE.findall(result.stdout)][1:]
    if not rates:
        raise UserError("too few log intervals to measure; raise --limit-train or lower --log-every")
    return statistics.median(rates)


def measure(args: argparse.Namespace) -> dict:
    flags = ["--variant", args.variant, "--batch-size", str(args.batch_size), "--epochs", "1",
             "--limit-train", str(args.limit_train), "--limit-test", "1000", "--log-every", str(args.log_every),
             "--no-progress", *(["--data-dir", args.data_dir] if args.data_dir else [])]
    info = machine()  # the load before our own runs
    runs = contenders(args.frameworks, args.workers)
    samples: dict[tuple, list[float]] = {run: [] for run in runs}
    for round_ in range(args.rounds):
        for run in runs:
            samples[run].append(measure_once(*run, flags))
            print(f"round {round_ + 1}: {run[0]} x{run[1]}{' (1 thread)' if run[2] else ''}: "
                  f"{samples[run][-1]:.0f} samples/s", file=sys.stderr, flush=True)
    rows = []
    for (framework, workers, threads), values in samples.items():
        base = statistics.median(samples[framework, 1, None])
        rate = statistics.median(values)
        rows.append({"framework": framework, "workers": workers, "threads": threads, "samples_per_second": rate,
                     "rounds": values, "efficiency": None if threads else rate / (workers * base)})
    return {"rows": rows, "settings": vars(args), "machine": info}


def machine() -> dict:
    import jax
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__, "jax": jax.__version__}


def table(report: dict) -> str:
    lines = ["| framework | workers | samples/s (median) | efficiency |", "|---|---|---|---|"]
    for row in report["rows"]:
        workers = f"{row['workers']}" + (f" ({row['threads']} thread)" if row["threads"] else "")
        efficiency = "per-core baseline" if row["efficiency"] is None else f"{100 * row['efficiency']:.0f}%"
        lines.append(f"| {row['framework']} | {workers} | {row['samples_per_second']:.0f} | {efficiency} |")
    info = report["machine"]
    load = ", ".join(f"{value:.2f}" for value in info["load_average"])
    lines.append(f"\n{info['cpu']} ({info['cores']} cores), load before {load}; "
                 f"Python {info['python']}, torch {info['torch']}, JAX {info['jax']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="python -m benchmarks.scaling", description=__doc__)
    parser.add_argument("--frameworks", nargs="+", default=["torch", "jax"], choices=["torch", "jax"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="processes (torch) / devices (JAX)")
    parser.add_argument("--variant", default="lstm-last")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--limit-train", type=int, default=6400, help="training images per run")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    add_data_dir(parser)
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the numbers here")
    args = parser.parse_args(argv)
    if 1 not in args.workers or min(args.workers) < 1 or args.rounds < 1:
        raise UserError("--workers must include 1 (the baseline) and be positive; --rounds at least 1")
    report = measure(args)
    print(table(report))
    if args.json:
        atomic_write_json(Path(args.json), report)
    return report


if __name__ == "__main__":
    run_cli(main)
