"""The project on a GPU in one command: parity, training speed, one real epoch, inference latency.

    python -m benchmarks.gpu_check --out DIR --data-dir DIR_WITH_MNIST    # on a GPU machine, <= 7.5 min
    python -m benchmarks.gpu_check --out DIR --quick                     # CPU smoke run (tests)

Four parts, run as subprocesses with their own time limits in order of importance, so that a
failure, a hang or the end of --budget-seconds still leaves the others' results; DIR/report.md
and DIR/report.json are rewritten after each part:
1. parity: `pytest parity/` with torch on CUDA and JAX on the GPU (TF32 off in both through
   parity/conftest.py; ONNX on onnxruntime), cuDNN's LSTM in JAX included (parity/test_cudnn.py).
2. speed: `benchmarks.speed --device cuda` at batch 64, 256 and 1024: torch (cuDNN) vs JAX scan
   vs JAX with cuDNN's LSTM.
3. epoch: one full epoch of lstm-last in each framework (and JAX's cuDNN kernel) from the same
   initial weights: test accuracy and time, through the real trainers.
4. latency: inference at batch 1 and 256 (`benchmarks.gpu_latency`): torch, JAX scan, JAX
   unrolled, JAX cuDNN.
--quick runs the same parts on the CPU at toy sizes, so that the script cannot rot between GPU
loans. The GPU machine needs nothing installed: carry MNIST as a small folder made by
`python -m common.data pack data/mnist-gz` (see docs/GPU.md for the exact device call).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from common.atomic import atomic_write_json, atomic_write_text
from common.cli import Parser
from common.errors import UserError, run_cli

PY = sys.executable
# --quick checks that every part runs, not how fast: its limits only catch hangs, with room for
# a machine busy with other work.
QUICK_LIMIT = 600


def gpu_info() -> dict:
    """GPU name, driver and memory from nvidia-smi; empty on a machine without one."""
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return {}
    name, driver, memory = (part.strip() for part in line.split(","))
    return {"gpu": name, "driver": driver, "memory": memory}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for module in ("torch", "jax", "jaxlib", "flax", "optax", "onnx", "onnxruntime", "numpy"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            found[module] = "missing"
    return found


def run_part(name: str, argv: list[str], out: Path, timeout: float, env: dict) -> dict:
    """Run one part as a subprocess; its output goes to OUT/<name>.log."""
    started = time.perf_counter()
    log = out / f"{name}.log"
    with open(log, "w") as file:
        try:
            code = subprocess.run(argv, stdout=file, stderr=subprocess.STDOUT, timeout=timeout, env=env).returncode
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - started
    print(f"{name}: {status} in {seconds:.0f} s (log {log})", flush=True)
    return {"status": status, "seconds": round(seconds, 1), "command": " ".join(argv), "log": log.name}


def parity_summary(log: Path) -> str:
    """pytest's last line: 'N passed, M skipped in S s'."""
    lines = [line.strip("= ") for line in log.read_text(errors="replace").splitlines() if " in " in line and
             re.search(r"\d+ (passed|failed|error)", line)]
    return lines[-1] if lines else "no pytest summary (see the log)"


def epoch_results(out: Path) -> list[dict]:
    rows = []
    for summary in sorted(out.glob("runs/*/summary.json")):
        s = json.loads(summary.read_text())
        rows.append({"run": summary.parent.name, "test_accuracy": s["test_accuracy"], "test_loss": s["test_loss"],
                     "train_seconds": s["train_seconds"], "samples_per_second": s["samples_per_second"],
                     "device": s["device"]})
    return rows


def parts(out: Path, data_dir: str | None, quick: bool) -> list[tuple[str, list[str], float]]:
    """(name, argv, time limit in seconds), most important first: parity, lstm-last's speed and
    epochs, latency, then the other variants' speed."""
    device = "cpu" if quick else "cuda"
    data = ["--data-dir", data_dir] if data_dir else []
    parity = ["parity/test_convert.py"] if quick else ["parity/"]  # quick: that the part runs and reports
    try:
        import xdist  # noqa: F401  (pytest-xdist: compile the parity grid on several cores)
        parity += [] if quick else ["-n", "8"]
    except ImportError:
        pass
    batch_sizes = ["16"] if quick else ["64", "256", "1024"]
    timing = ["--rounds", "1", "--block-seconds", "0.05"] if quick else ["--rounds", "3", "--block-seconds", "0.25"]
    init = out / "runs" / "init-lstm-last.safetensors"
    limits = ["--limit-train", "256", "--limit-test", "256"] if quick else []
    trainer = ["--variant", "lstm-last", "--epochs", "1", "--device", device, "--init-from", str(init),
               "--no-progress", *limits, *data]
    epochs = [(f"epoch-{name}", [PY, "-m", f"{framework}_impl.train", *trainer, *extra,
                                 "--out", str(out / "runs" / name)], QUICK_LIMIT if quick else 120)
              for name, framework, extra in (("torch", "torch", []), ("jax-scan", "jax", []),
                                             ("jax-cudnn", "jax", ["--rnn-kernel", "cudnn"]))
              if not (quick and name == "jax-cudnn")]

    def speed(variant: str) -> list[tuple[str, list[str], float]]:
        # One process per batch size: JAX's compile on a GPU took 9-51 s per shape, and a part
        # that runs out of time loses only its own numbers.
        return [(f"speed-{variant}-{batch}", [PY, "-m", "benchmarks.speed", "--device", device, "--variants", variant,
                                              "--batch-sizes", batch, *timing,
                                              "--json", str(out / f"speed-{variant}-{batch}.json")],
                 QUICK_LIMIT if quick else 120) for batch in batch_sizes]
    return [
        ("parity", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *parity], QUICK_LIMIT if quick else 210),
        *speed("lstm-last"), *epochs,
        ("latency", [PY, "-m", "benchmarks.gpu_latency", "--device", device, *timing,
                     "--json", str(out / "latency.json")], QUICK_LIMIT if quick else 60),
        *([] if quick else [*speed("gru"), *speed("rnn"), *speed("lstm")]),
    ]


def speed_report(out: Path) -> dict | None:
    """The per-variant speed files merged into one report (benchmarks.speed's shape)."""
    files = [json.loads(path.read_text()) for path in sorted(out.glob("speed-*.json"))]
    if not files:
        return None
    order = ["rnn", "gru", "lstm", "lstm-last"]
    results = sorted((r for f in files for r in f["results"]), key=lambda r: (order.index(r["variant"]), r["batch_size"]))
    return {**files[0], "results": results}


def report_markdown(report: dict, out: Path) -> str:
    lines = [f"# GPU check — {report['machine'].get('gpu', 'no GPU (CPU quick mode)')}", "",
             f"{report['date']}; driver {report['machine'].get('driver', '-')}; "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
             f"Command: `{report['command']}`", "", "| part | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {part['status']} | {part['seconds']} |" for name, part in report["parts"].items()]
    if "parity" in report["parts"]:
        lines += ["", f"**Parity:** {parity_summary(out / 'parity.log')}"]
    speed = speed_report(out)
    if speed:
        from benchmarks.speed import table
        lines += ["", "## Training throughput", "", table(speed)]
    if report["epochs"]:
        lines += ["", "## One epoch of lstm-last from the same initial weights", "",
                  "| run | test accuracy | test loss | train seconds | samples/s | device |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['run']} | {100 * r['test_accuracy']:.2f}% | {r['test_loss']:.4f} | {r['train_seconds']:.1f} "
                  f"| {r['samples_per_second']:.0f} | {r['device']} |" for r in report["epochs"]]
    if (out / "latency.json").exists():
        from benchmarks.gpu_latency import table as latency_table
        lines += ["", "## Inference latency", "", latency_table(json.loads((out / "latency.json").read_text()))]
    return "\n".join(lines) + "\n"


def check(out: Path, data_dir: str | None, quick: bool, command: str, budget: float,
          only: Sequence[str] = ()) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1")  # parts share the GPU
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH")]))
    report = {"command": command, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": {**gpu_info(), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
              "versions": versions(), "quick": quick, "parts": {}, "epochs": []}
    from benchmarks.compare import initial_weights  # torch's seeded weights, the start of every epoch run
    from common.config import Config
    initial_weights(Config(cell="lstm", head="last"), out / "runs" / "init-lstm-last.safetensors")
    deadline = time.monotonic() + budget
    for name, argv, timeout in parts(out, data_dir, quick):
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        left = deadline - time.monotonic()
        if left < 10:
            report["parts"][name] = {"status": f"not run: the {budget:.0f} s budget was spent", "seconds": 0,
                                     "command": " ".join(argv), "log": None}
            continue
        report["parts"][name] = run_part(name, argv, out, min(timeout, left), env)
        report["epochs"] = epoch_results(out)
        atomic_write_json(out / "report.json", report)
        atomic_write_text(out / "report.md", report_markdown(report, out))
    return report


def main(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="python -m benchmarks.gpu_check", description=__doc__)
    parser.add_argument("--out", required=True, help="folder for report.md, report.json and the logs")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DIR or data/mnist)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run at toy sizes")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="stop starting parts after this long (parts run in order of importance; "
                             "default 450, with --quick 3600)")
    parser.add_argument("--parts", nargs="+", default=(), metavar="PREFIX",
                        help="run only the parts whose names start so (parity, speed, speed-gru, epoch, latency)")
    args = parser.parse_args(argv)
    if not args.quick and not gpu_info():
        raise UserError("no GPU found (nvidia-smi); run on a GPU machine, or add --quick for the CPU smoke run")
    command = "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv)
    budget = args.budget_seconds or (3600 if args.quick else 450)
    report = check(Path(args.out), args.data_dir, args.quick, command, budget, args.parts)
    print(report_markdown(report, Path(args.out)))
    failed = [name for name, part in report["parts"].items() if part["status"] != "ok"]
    if failed:  # not a usage error: the check ran and found something (exit 1, not 2)
        print(f"error: parts that did not pass: {', '.join(failed)}; see the logs in {args.out}", file=sys.stderr)
        sys.exit(1)
    return report


if __name__ == "__main__":
    run_cli(main)
