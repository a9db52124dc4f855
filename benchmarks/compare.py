"""The comparison report: train every variant in both frameworks, export to ONNX, tabulate.

    python -m benchmarks.compare                        # 4 variants x {torch, jax}, tutorial settings
    python -m benchmarks.compare --preset tuned --out results-tuned/
    python -m benchmarks.compare --variants lstm-last --frameworks torch --epochs 1

Each (variant, framework) pair trains on full MNIST from the common loader with the same seed
into OUT/runs/<preset>-<framework>-<variant>/. A finished pair is not trained again (use
--rerun); an interrupted one resumes from its last checkpoint. Every torch- and JAX-trained
model is exported through the torch model to ONNX and its onnxruntime test accuracy checked
against the source model's. Writes OUT/results.json, OUT/results.md and OUT/curves.png;
--update-readme copies the table into README.md between its results markers.
"""
from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import re
import sys
from pathlib import Path
from typing import Sequence

from common.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from common.config import VARIANTS, Config, RunOptions, parse_variant
from common.errors import UserError, run_cli

FRAMEWORKS = ("torch", "jax")
REFERENCE = {"rnn": 0.9728, "gru": 0.9810, "lstm": 0.9790, "lstm-last": 0.9840}  # the tutorial's test accuracy
# Tuned: pixel normalisation, cosine decay and gradient clipping over 5 epochs (see README).
PRESETS = {
    "default": {},
    "tuned": {"epochs": 5, "normalize": True, "schedule": "cosine", "grad_clip": 1.0, "lr": 0.002},
}
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def trainer(framework: str):
    if framework == "torch":
        from torch_impl.train import train
    else:
        from jax_impl.train import train
    return train


def run_pair(framework: str, config: Config, run_dir: Path, *, data_dir, rerun: bool, progress: bool) -> dict:
    """Train one pair (or reuse/resume it); returns its summary."""
    summary_path = run_dir / "summary.json"
    if summary_path.exists() and not rerun:
        print(f"== {framework} {config.variant}: done earlier, reusing {run_dir}")
        return json.loads(summary_path.read_text())
    if rerun and run_dir.exists():
        for path in run_dir.iterdir():
            path.unlink()
    resume = (run_dir / "train_state.safetensors").exists()
    print(f"== {framework} {config.variant}: {'resuming' if resume else 'training'} in {run_dir}")
    options = RunOptions(data_dir=data_dir, out=str(run_dir), progress=progress,
                         resume=str(run_dir) if resume else None)
    return trainer(framework)(config, options)


def check_onnx(run_dir: Path, summary: dict, data_dir) -> dict:
    """Export the run's model to ONNX and check onnxruntime's test accuracy equals the model's."""
    from export.onnx import export_checkpoint

    limit = summary["config"]["limit_test"]
    report = export_checkpoint(run_dir / "model.safetensors", run_dir / "model.onnx", data_dir=data_dir,
                               verify_limit=limit, log=lambda line: print("   " + line))
    accuracy = report["onnx_test_accuracy"]
    if accuracy is None or abs(accuracy - summary["test_accuracy"]) * report["test_images"] > report["ties"]:
        raise UserError(f"onnxruntime test accuracy {accuracy} of {run_dir} differs from the model's "
                        f"{summary['test_accuracy']} by more than float32 ties explain")
    return {"onnx_test_accuracy": accuracy, "onnx_max_abs_diff": max(report["max_abs_diff"].values()),
            "onnx_bytes": report["onnx_bytes"]}


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
        loss_ax.legend()
        acc_ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def table(runs: list[dict], command: str) -> str:
    first = runs[0]
    versions = ", ".join(dict.fromkeys(f"{k} {v}" for run in runs for k, v in run["versions"].items()
                                       if k in ("torch", "jax", "flax", "optax")))
    by_key = {(run["framework"], run["variant"]): run for run in runs}
    frameworks = [f for f in FRAMEWORKS if any(run["framework"] == f for run in runs)]
    head = ["variant", "tutorial"] + [f"{f} {col}" for f in frameworks for col in ("acc", "onnx acc", "time", "samples/s")]
    head.append("parameters")
    lines = [f"`{command}` — {first['machine']['processor']}, {first['machine']['cpu_count']} cores, "
             f"{first['device']}; {versions}, python {first['versions']['python']}; {first['date'][:10]}", "",
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
        cells.append(f"{next(r for r in runs if r['variant'] == variant)['parameters']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, markdown: str) -> None:
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise UserError(f"{readme} has no {README_START} ... {README_END} markers to put the table between")
    atomic_write_text(readme, pattern.sub(lambda _: f"{README_START}\n{markdown}{README_END}", text))


def compare(variants: Sequence[str], frameworks: Sequence[str], out: Path, *, preset: str = "default",
            overrides: dict | None = None, data_dir=None, rerun: bool = False, onnx: bool = True,
            progress: bool = True, command: str = "python -m benchmarks.compare") -> list[dict]:
    runs, metrics = [], {}
    for variant in variants:
        cell, head = parse_variant(variant)
        config = Config(**{**PRESETS[preset], **(overrides or {}), "cell": cell, "head": head})
        for framework in frameworks:
            run_dir = out / "runs" / f"{preset}-{framework}-{variant}"
            summary = run_pair(framework, config, run_dir, data_dir=data_dir, rerun=rerun, progress=progress)
            record = {key: summary[key] for key in ("framework", "variant", "test_accuracy", "train_accuracy",
                                                    "train_seconds", "samples_per_second", "parameters", "epochs",
                                                    "seed", "config", "device", "versions", "machine", "date")}
            record.update(preset=preset, reference_accuracy=REFERENCE.get(variant), run_dir=str(run_dir))
            if onnx:
                record.update(check_onnx(run_dir, summary, data_dir))
            runs.append(record)
            metrics[(framework, variant)] = [json.loads(line) for line in
                                             (run_dir / "metrics.jsonl").read_text().splitlines()]
    order = list(VARIANTS) + sorted(set(variants) - set(VARIANTS))  # the tutorial's row order
    runs.sort(key=lambda run: (order.index(run["variant"]), FRAMEWORKS.index(run["framework"])))
    markdown = table(runs, command)
    atomic_write_json(out / "results.json", {"command": command, "preset": preset, "runs": runs,
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
    parser.add_argument("--hidden-size", type=int, help="override the hidden size (quick checks)")
    parser.add_argument("--limit-train", type=int, help="train on the first N images (quick checks)")
    parser.add_argument("--limit-test", type=int, help="evaluate on the first N images (quick checks)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_DIR or data/mnist)")
    parser.add_argument("--rerun", action="store_true", help="train finished pairs again")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX export check")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument("--update-readme", action="store_true", help="copy the table into README.md")
    args = parser.parse_args(argv)
    for variant in args.variants:
        parse_variant(variant)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("hidden_size", args.hidden_size),
                                   ("limit_train", args.limit_train), ("limit_test", args.limit_test))
                 if v is not None}
    command = "python -m benchmarks.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    runs = compare(args.variants, args.frameworks, args.out, preset=args.preset, overrides=overrides,
                   data_dir=args.data_dir, rerun=args.rerun, onnx=args.onnx, progress=args.progress,
                   command=command.strip())
    if args.update_readme:
        update_readme(Path("README.md"), (args.out / "results.md").read_text())
    return runs


if __name__ == "__main__":
    run_cli(main)
