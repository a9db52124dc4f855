"""The comparison report: train every variant in both frameworks, export to ONNX, tabulate.

    python -m benchmarks.compare                        # 4 variants x {torch, jax}, tutorial settings
    python -m benchmarks.compare --preset tuned --out results-tuned/
    python -m benchmarks.compare --variants lstm-last --frameworks torch --epochs 1

Each (variant, framework) pair trains on full MNIST from the common loader with the same seed
into OUT/runs/<preset>-<framework>-<variant>/. Both frameworks start from the same weights:
torch's initialisation with the run's seed (what `torch_impl.train --seed N` starts from), saved
once as OUT/runs/<preset>-init-<variant>.safetensors; --independent-init gives each framework
its own initialiser instead (same distributions, different random numbers). A finished pair is
not trained again (use --rerun); an interrupted one resumes from its last checkpoint. Every torch- and JAX-trained
model is exported through the torch model to ONNX and its onnxruntime test accuracy checked
against the source model's. Writes OUT/results.json, OUT/results.md and OUT/curves.png;
--update-readme copies the table into README.md between its results markers.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import queue
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from common import checkpoint
from common.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from common.config import VARIANTS, Config, config_argv, parse_variant
from common.errors import UserError, run_cli
from common.training import EXIT_INTERRUPTED

FRAMEWORKS = ("torch", "jax")
REFERENCE = {"rnn": 0.9728, "gru": 0.9810, "lstm": 0.9790, "lstm-last": 0.9840}  # the tutorial's test accuracy
# Tuned: pixel normalisation, cosine decay and gradient clipping over 5 epochs (see README).
PRESETS = {
    "default": {},
    "tuned": {"epochs": 5, "normalize": True, "schedule": "cosine", "grad_clip": 1.0, "lr": 0.001},
}
README_MARKERS = "<!-- results:{preset}:start -->", "<!-- results:{preset}:end -->"  # one block per preset


def preset_config(preset: str, variant: str, overrides: dict | None = None) -> Config:
    cell, head = parse_variant(variant)
    return Config(**{**PRESETS[preset], **(overrides or {}), "cell": cell, "head": head})


def init_path(out: Path, preset: str, variant: str) -> Path:
    """Where a variant's shared initial weights live (compare and chaos reuse each other's)."""
    return out / "runs" / f"{preset}-init-{variant}.safetensors"


def pair_dir(out: Path, preset: str, framework: str, variant: str) -> Path:
    return out / "runs" / f"{preset}-{framework}-{variant}"


def check_jobs(jobs: int | None) -> None:
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")


def check_same_settings(saved: dict, config: Config, where: Path) -> None:
    """Refuse to reuse or resume work done with other settings than this run's."""
    wanted = config.to_dict()
    diffs = [f"{name} {saved.get(name)!r} (now {value!r})" for name, value in wanted.items() if saved.get(name) != value]
    if diffs:
        raise UserError(f"{where} was made with other settings: {', '.join(diffs)}; "
                        "use another --out, or --rerun to replace it")


def initial_weights(config: Config, path: Path) -> Path:
    """Torch's initial weights for `config` (seeded by config.seed), written once to `path`."""
    if path.exists():
        check_same_settings(checkpoint.load_model(path)[1].to_dict(), config, path)
    else:
        from torch_impl.train import TorchBackend

        params = TorchBackend(config, "cpu").get_params()
        checkpoint.save_model(path, params, config, framework="torch (initial weights)")
    return path


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def core_groups(jobs: int) -> list[list[int]]:
    """Split this process's cores into `jobs` disjoint groups, one per concurrent pair."""
    cores = available_cores()
    size = max(1, len(cores) // jobs)
    return [cores[k * size:(k + 1) * size] or cores for k in range(jobs)]


def thread_env(threads: int) -> dict[str, str]:
    """Environment that holds torch (OpenMP/MKL) and XLA's CPU client to `threads` threads."""
    xla = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {xla}".strip()}


def run_pair(framework: str, config: Config, run_dir: Path, *, data_dir, rerun: bool, cores: list[int],
             init_from: Path | None = None) -> dict:
    """Train one pair in its own process on `cores` (or reuse/resume it), from `init_from`'s weights if given.

    The pair runs the trainer's CLI, `python -m <framework>_impl.train`, so what compare does is
    what a user can rerun by hand: the command is in the pair's train.log and results.json.
    Returns the trainer's summary.
    """
    label = run_dir.name  # e.g. default-torch-gru
    summary_path = run_dir / "summary.json"
    if (run_dir / "config.json").exists() and not rerun:
        check_same_settings(json.loads((run_dir / "config.json").read_text())["config"], config, run_dir)
    if summary_path.exists() and not rerun:
        print(f"== {label}: done earlier, reusing {run_dir}", flush=True)
        how = json.loads((run_dir / "compare.json").read_text()) if (run_dir / "compare.json").exists() else {}
        return {**json.loads(summary_path.read_text()), **how, "reused": True, "resumed": False}
    resume = (run_dir / "train_state.safetensors").exists() and not rerun
    if run_dir.exists() and not resume:  # nothing to resume: start afresh
        shutil.rmtree(run_dir)
    if resume:
        argv = ["--resume", str(run_dir)]
    else:
        argv = config_argv(config) + ["--out", str(run_dir)] + (["--init-from", str(init_from)] if init_from else [])
        argv += ["--data-dir", str(data_dir)] if data_dir else []
    command = [sys.executable, "-m", f"{framework}_impl.train", *argv, "--no-progress"]
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"== {label}: {'resuming' if resume else 'training'} in {run_dir} on core(s) {cores}", flush=True)
    started = time.perf_counter()
    with open(run_dir / "train.log", "a") as log:
        log.write("$ " + shlex.join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **thread_env(len(cores))})
        if hasattr(os, "sched_setaffinity"):  # before the child has imported torch or jax and made its threads
            os.sched_setaffinity(process.pid, cores)
        last = ""
        for line in process.stdout:
            log.write(line)
            log.flush()
            last = line.strip() or last
            print(f"[{label}] {line}", end="", flush=True)
        process.wait()
    if process.returncode != 0:
        raise UserError(f"{label} failed (exit {process.returncode}): {last} — full log in {run_dir / 'train.log'}; "
                        "run the same command again to resume")
    summary = json.loads(summary_path.read_text())
    how = {"command": shlex.join(command), "cores": cores, "wall_seconds": time.perf_counter() - started}
    atomic_write_json(run_dir / "compare.json", how)  # how this pair ran, for the report when it is reused
    return {**summary, **how, "reused": False, "resumed": resume}


def check_onnx(run_dir: Path, summary: dict, data_dir) -> dict:
    """Export the run's model to ONNX and check onnxruntime's test accuracy equals the model's.

    The result is kept in the pair's onnx.json: a reused pair is not exported again."""
    from export.onnx import export_checkpoint

    if summary["reused"] and (run_dir / "onnx.json").exists() and (run_dir / "model.onnx").exists():
        return json.loads((run_dir / "onnx.json").read_text())
    limit = summary["config"]["limit_test"]
    report = export_checkpoint(run_dir / "model.safetensors", run_dir / "model.onnx", data_dir=data_dir,
                               verify_limit=limit, log=lambda line: print("   " + line))
    accuracy = report["onnx_test_accuracy"]
    if accuracy is None or abs(accuracy - summary["test_accuracy"]) * report["test_images"] > report["ties"]:
        raise UserError(f"onnxruntime test accuracy {accuracy} of {run_dir} differs from the model's "
                        f"{summary['test_accuracy']} by more than float32 ties explain")
    result = {"onnx_test_accuracy": accuracy, "onnx_max_abs_diff": max(report["max_abs_diff"].values()),
              "onnx_bytes": report["onnx_bytes"]}
    atomic_write_json(run_dir / "onnx.json", result)
    return result


def curves(runs: list[dict], metrics: dict[tuple[str, str], list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(run["variant"] for run in runs))
    fig, axes = plt.subplots(2, len(variants), figsize=(4 * len(variants), 6.5), squeeze=False)
    for column, variant in enumerate(variants):
        loss_ax, acc_ax = axes[0][column], axes[1][column]
        for framework, style in (("torch", "-"), ("jax", "--")):
            records = metrics.get((framework, variant))
            if not records:
                continue
            steps = [r for r in records if "loss" in r]
            epochs = [r for r in records if "test_accuracy" in r]
            loss_ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], style, label=framework)
            acc_ax.plot([r["epoch"] for r in epochs], [100 * r["test_accuracy"] for r in epochs], style + "o",
                        label=framework)
        loss_ax.set(title=variant, xlabel="step", ylabel="train loss (per log interval)", yscale="log")
        acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)")
        if variant in REFERENCE:
            acc_ax.axhline(100 * REFERENCE[variant], color="grey", lw=0.8, label="tutorial")
            low, high = acc_ax.get_ylim()  # keep the tutorial's line in view
            acc_ax.set_ylim(min(low, 100 * REFERENCE[variant] - 0.1), max(high, 100 * REFERENCE[variant] + 0.1))
        loss_ax.legend()
        acc_ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def table(runs: list[dict], command: str, wall_seconds: float | None, jobs: int) -> str:
    first = runs[0]
    versions = ", ".join(dict.fromkeys(f"{k} {v}" for run in runs for k, v in run["versions"].items()
                                       if k in ("torch", "jax", "flax", "optax")))
    by_key = {(run["framework"], run["variant"]): run for run in runs}
    frameworks = [f for f in FRAMEWORKS if any(run["framework"] == f for run in runs)]
    head = ["variant", "tutorial"] + [f"{f} {col}" for f in frameworks for col in ("acc", "onnx acc", "time", "samples/s")]
    head += ["torch - jax"] if len(frameworks) == 2 else []
    head.append("parameters")
    wall = f", {wall_seconds / 60:.1f} min in all" if wall_seconds else ""
    lines = [f"`{command}` — {first['machine']['processor']}, {first['machine']['cpu_count']} cores, "
             f"{'pairs in parallel' if jobs > 1 else 'one pair at a time'}, each on "
             f"{len(first.get('cores') or [])} core(s){wall}; {versions}, "
             f"python {first['versions']['python']}; {first['date'][:10]}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant in dict.fromkeys(run["variant"] for run in runs):
        cells = [variant, f"{100 * REFERENCE[variant]:.2f}%" if variant in REFERENCE else "—"]
        for framework in frameworks:
            run = by_key.get((framework, variant))
            if run is None:
                cells += ["—"] * 4
                continue
            onnx_acc = run.get("onnx_test_accuracy")
            cells += [f"{100 * run['test_accuracy']:.2f}%", "—" if onnx_acc is None else f"{100 * onnx_acc:.2f}%",
                      f"{run['train_seconds'] / 60:.1f} min", f"{run['samples_per_second']:.0f}"]
        if len(frameworks) == 2:
            pair = [by_key.get((framework, variant)) for framework in frameworks]
            cells.append("—" if None in pair else f"{100 * (pair[0]['test_accuracy'] - pair[1]['test_accuracy']):+.2f}")
        cells.append(f"{next(r for r in runs if r['variant'] == variant)['parameters']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, markdown: str, preset: str) -> None:
    """Put `markdown` between the preset's markers in `readme`, replacing what was there."""
    start, end = (marker.format(preset=preset) for marker in README_MARKERS)
    text = readme.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise UserError(f"{readme} has no {start} ... {end} markers to put the table between")
    atomic_write_text(readme, pattern.sub(lambda _: f"{start}\n{markdown}{end}", text))


def train_pairs(pairs: Sequence[tuple[str, Config, Path, Path | None]], *, jobs: int | None, data_dir,
                rerun: bool) -> tuple[list[dict], int]:
    """Train (framework, config, run_dir, init_from) pairs, `jobs` at a time (default: one per core),
    each process on its own cores. Returns the summaries in order, and the number of jobs."""
    groups = core_groups(min(jobs or len(available_cores()), len(pairs)))
    free = queue.SimpleQueue()  # each running pair holds one group of cores: they never share one
    for group in groups:
        free.put(group)

    def train(pair):
        framework, config, run_dir, init_from = pair
        cores = free.get()
        try:
            return run_pair(framework, config, run_dir, data_dir=data_dir, rerun=rerun, cores=cores,
                            init_from=init_from)
        finally:
            free.put(cores)

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        return list(pool.map(train, pairs)), len(groups)


def compare(variants: Sequence[str], frameworks: Sequence[str], out: Path, *, preset: str = "default",
            overrides: dict | None = None, data_dir=None, rerun: bool = False, onnx: bool = True,
            shared_init: bool = True, jobs: int | None = None,
            command: str = "python -m benchmarks.compare") -> list[dict]:
    """Train every (variant, framework) pair, `jobs` at a time, then check ONNX and write the report."""
    pairs = []  # (framework, variant, config, run_dir, init_from)
    for variant in variants:
        config = preset_config(preset, variant, overrides)
        init = init_path(out, preset, variant)
        if rerun and init.exists():
            init.unlink()
        init_from = initial_weights(config, init) if shared_init else None
        pairs += [(framework, variant, config, pair_dir(out, preset, framework, variant), init_from)
                  for framework in frameworks]
    started = time.perf_counter()
    summaries, jobs = train_pairs([(framework, config, run_dir, init_from)
                                   for framework, _, config, run_dir, init_from in pairs],
                                  jobs=jobs, data_dir=data_dir, rerun=rerun)
    fresh = all(not (summary["reused"] or summary["resumed"]) for summary in summaries)
    wall_seconds = time.perf_counter() - started if fresh else None  # end to end only if all ran here
    runs, metrics = [], {}
    for (framework, variant, config, run_dir, init_from), summary in zip(pairs, summaries):
        record = {key: summary[key] for key in ("framework", "variant", "test_accuracy", "train_accuracy",
                                                "train_seconds", "samples_per_second", "parameters", "epochs",
                                                "seed", "config", "device", "versions", "machine", "date")}
        record.update(preset=preset, reference_accuracy=REFERENCE.get(variant), run_dir=str(run_dir),
                      reused=summary["reused"], command=summary.get("command"), cores=summary.get("cores"),
                      wall_seconds=summary.get("wall_seconds"),
                      initial_weights=str(init_from) if init_from else f"{framework}'s own, seed {config.seed}")
        if onnx:
            record.update(check_onnx(run_dir, summary, data_dir))
        runs.append(record)
        metrics[(framework, variant)] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    order = list(VARIANTS) + sorted(set(variants) - set(VARIANTS))  # the tutorial's row order
    runs.sort(key=lambda run: (order.index(run["variant"]), FRAMEWORKS.index(run["framework"])))
    markdown = table(runs, command, wall_seconds, jobs)
    atomic_write_json(out / "results.json", {"command": command, "preset": preset, "jobs": jobs, "runs": runs,
                                             "training_wall_seconds": wall_seconds,
                                             "python": platform.python_version(),
                                             "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
    atomic_write_text(out / "results.md", markdown)
    curves(runs, metrics, out / "curves.png")
    print(markdown)
    return runs


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="variants to train")
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    parser.add_argument("--preset", default="default", choices=PRESETS, help="tutorial settings or tuned ones")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    parser.add_argument("--seed", type=int, help="override the seed (initial weights and data order; default 0)")
    parser.add_argument("--hidden-size", type=int, help="override the hidden size (quick checks)")
    parser.add_argument("--limit-train", type=int, help="train on the first N images (quick checks)")
    parser.add_argument("--limit-test", type=int, help="evaluate on the first N images (quick checks)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DIR or data/mnist)")
    parser.add_argument("--rerun", action="store_true", help="train finished pairs again")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX export check")
    parser.add_argument("--jobs", type=int, default=None,
                        help="pairs trained at once, each in its own process with cores/jobs threads "
                             "(default: one per core)")
    parser.add_argument("--independent-init", dest="shared_init", action="store_false",
                        help="each framework draws its own initial weights (default: both start from torch's)")
    parser.add_argument("--update-readme", action="store_true", help="copy the table into README.md")
    args = parser.parse_args(argv)
    for variant in args.variants:
        parse_variant(variant)
    check_jobs(args.jobs)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed), ("hidden_size", args.hidden_size),
                                   ("limit_train", args.limit_train), ("limit_test", args.limit_test))
                 if v is not None}
    command = "python -m benchmarks.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        runs = compare(args.variants, args.frameworks, args.out, preset=args.preset, overrides=overrides,
                       data_dir=args.data_dir, rerun=args.rerun, onnx=args.onnx,
                       jobs=args.jobs, shared_init=args.shared_init, command=command.strip())
    except KeyboardInterrupt:  # the trainers got the same Ctrl-C and saved their state
        print("\ninterrupted: finished pairs are kept and interrupted ones resume; run the same command again",
              file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if args.update_readme:
        update_readme(Path("README.md"), (args.out / "results.md").read_text(), args.preset)
    return runs


if __name__ == "__main__":
    run_cli(main)
