"""The comparison report: train every variant in both frameworks, export to ONNX, tabulate.

    python -m benchmarks.compare                        # 4 variants x {torch, jax}, tutorial settings, into runs/compare
    python -m benchmarks.compare --variants lstm-last --frameworks torch --epochs 1
    python -m benchmarks.compare --seeds 0 1 2 3 4 --out results/seeds/default --update-readme   # the reference spread
    python -m benchmarks.compare --seed 3 --out runs/seed-3                           # one seed, its own table
    python -m benchmarks.compare --seeds 0 1 2 --preset tuned --out results/seeds/tuned --update-readme

Each (variant, framework) pair trains on full MNIST from the common loader with the same seed
into OUT/runs/<preset>-<framework>-<variant>/. Both frameworks start from the same weights:
torch's own initialisation with the run's seed (`benchmarks.pairs.initial_weights`, the weights
of the committed results/), saved once as OUT/runs/<preset>-init-<variant>.safetensors;
--independent-init leaves each trainer to its default instead, `common.checkpoint.initial_params`
(a NumPy draw of the same distributions, itself the same in both frameworks). A finished pair is
not trained again (use --rerun); an interrupted one resumes from its last checkpoint. Every
torch- and JAX-trained model is exported through the torch model to ONNX and its onnxruntime
test accuracy checked against the source model's. Writes OUT/results.json, OUT/results.md and
OUT/curves.png; --update-readme copies the table into README.md between its results markers.

OUT defaults to runs/compare (git-ignored). The committed reference results live in results/:
write there only on purpose (`--out results`), and never with a quick check (--limit-train,
--limit-test, --hidden-size): those are refused there, and their table says they are limited.
"""
from __future__ import annotations

import datetime
import json
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import Sequence

from benchmarks.pairs import (FRAMEWORKS, PRESETS, check_jobs, init_path, initial_weights, limits_note,  # noqa: F401
                              pair_dir, preset_config, resumable_stop, train_pairs)
from benchmarks.plots import curve, curves
from benchmarks.seeds import report as seeds_report
from benchmarks.seeds import seed_dir
from common.atomic import atomic_write_json
from common.cli import Parser, add_data_dir
from common.config import VARIANTS, parse_variant
from common.errors import UserError, run_cli
from common.report import markdown_table, paste_between_markers, require_markers, write_report

REFERENCE = {"rnn": 0.9728, "gru": 0.9810, "lstm": 0.9790, "lstm-last": 0.9840}  # the tutorial's test accuracy
DEFAULT_OUT = Path("runs/compare")
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "results"  # committed: full runs only
README = REFERENCE_DIR.parent / "README.md"
QUICK_CHECKS = ("limit_train", "limit_test", "hidden_size")  # overrides that make a run not comparable


def readme_block(preset: str, overrides: dict | None = None, multi_seed: bool = False) -> str:
    """The name of the README's markers for a table: one block per preset, per changed setting
    (an ablation such as --lr 0.001) and for the multi-seed summary."""
    changed = "".join(f"-{name.replace('_', '-')}{value}" for name, value in sorted((overrides or {}).items())
                      if name not in ("seed",) + QUICK_CHECKS)
    return f"{'seeds' if multi_seed else 'results'}:{preset}{changed}"


def check_out(out: Path, overrides: dict, update_readme: bool) -> None:
    """Refuse to put a quick check where the reference results (or the README's tables) live."""
    quick = [f"--{name.replace('_', '-')} {overrides[name]}" for name in QUICK_CHECKS if name in overrides]
    if not quick:
        return
    if out.resolve().is_relative_to(REFERENCE_DIR):
        raise UserError(f"{out} holds the reference results (full MNIST, full size); a quick check "
                        f"({', '.join(quick)}) goes elsewhere: drop --out (default {DEFAULT_OUT}) or choose another")
    if update_readme:
        raise UserError(f"--update-readme pastes reference tables; drop it for a quick check ({', '.join(quick)})")


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
    caption = (f"`{command}` — {first['machine']['processor']}, {first['machine']['cpu_count']} cores, "
               f"{'pairs in parallel' if jobs > 1 else 'one pair at a time'}, each on "
               f"{len(first.get('cores') or [])} core(s){wall}; {versions}, "
               f"python {first['versions']['python']}; {first['date'][:10]}")
    rows = []
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
        rows.append(cells)
    return f"{limits_note(first['config'])}{caption}\n\n{markdown_table(head, rows)}\n"


def plan(variants: Sequence[str], frameworks: Sequence[str], out: Path, preset: str, overrides: dict | None,
         rerun: bool, shared_init: bool) -> list[tuple]:
    """(framework, variant, config, run_dir, init_from) of every pair, the shared initial weights written."""
    pairs = []
    for variant in variants:
        config = preset_config(preset, variant, overrides)
        init = init_path(out, preset, variant)
        if rerun and init.exists():
            init.unlink()
        init_from = initial_weights(config, init) if shared_init else None
        pairs += [(framework, variant, config, pair_dir(out, preset, framework, variant), init_from)
                  for framework in frameworks]
    return pairs


def train_planned(pairs: list[tuple], *, jobs: int | None, data_dir, rerun: bool) -> tuple[list[dict], int]:
    """Train `plan`'s pairs (see train_pairs): their summaries in order, and the number of jobs."""
    return train_pairs([(framework, config, run_dir, init_from) for framework, _, config, run_dir, init_from in pairs],
                       jobs=jobs, data_dir=data_dir, rerun=rerun)


def report(pairs: list[tuple], summaries: list[dict], out: Path, *, preset: str, command: str, jobs: int,
           wall_seconds: float | None, onnx: bool, data_dir) -> list[dict]:
    """Check ONNX for every trained pair, then write OUT/results.{json,md} and OUT/curves.png."""
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
        metrics[(framework, variant)] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        record["curve"] = curve(metrics[(framework, variant)])
        runs.append(record)
    order = list(VARIANTS) + sorted({run["variant"] for run in runs} - set(VARIANTS))  # the tutorial's row order
    runs.sort(key=lambda run: (order.index(run["variant"]), FRAMEWORKS.index(run["framework"])))
    markdown = table(runs, command, wall_seconds, jobs)
    curves(runs, metrics, out / "curves.png")
    write_report(out, "results", {"command": command, "preset": preset, "jobs": jobs, "runs": runs,
                                  "training_wall_seconds": wall_seconds, "python": platform.python_version(),
                                  "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds")},
                 markdown)
    return runs


def compare(variants: Sequence[str], frameworks: Sequence[str], out: Path, *, preset: str = "default",
            overrides: dict | None = None, data_dir=None, rerun: bool = False, onnx: bool = True,
            shared_init: bool = True, jobs: int | None = None,
            command: str = "python -m benchmarks.compare") -> list[dict]:
    """Train every (variant, framework) pair, `jobs` at a time, then check ONNX and write the report."""
    pairs = plan(variants, frameworks, out, preset, overrides, rerun, shared_init)
    started = time.perf_counter()
    summaries, jobs = train_planned(pairs, jobs=jobs, data_dir=data_dir, rerun=rerun)
    fresh = all(not (summary["reused"] or summary["resumed"]) for summary in summaries)
    wall_seconds = time.perf_counter() - started if fresh else None  # end to end only if all ran here
    return report(pairs, summaries, out, preset=preset, command=command, jobs=jobs, wall_seconds=wall_seconds,
                  onnx=onnx, data_dir=data_dir)


def reported(out: Path, variants: Sequence[str], frameworks: Sequence[str], preset: str, overrides: dict, *,
             onnx: bool, shared_init: bool) -> bool:
    """Does OUT/results.json already hold every pair, made the way this run would make it (settings,
    initial weights, ONNX check)? Then a seed is reused from its committed report, even where its
    checkpoints (git-ignored) are gone."""
    try:
        runs = json.loads((out / "results.json").read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return False
    done = {(run["framework"], run["variant"]): run for run in runs if "curve" in run}

    def same(run: dict | None, variant: str) -> bool:
        return (run is not None and run["config"] == preset_config(preset, variant, overrides).to_dict()
                and run["initial_weights"].endswith(".safetensors") == shared_init
                and (not onnx or "onnx_test_accuracy" in run))

    return all(same(done.get((framework, variant)), variant) for variant in variants for framework in frameworks)


def compare_seeds(seeds: Sequence[int], variants: Sequence[str], frameworks: Sequence[str], out: Path, *,
                  preset: str = "default", overrides: dict | None = None, data_dir=None, rerun: bool = False,
                  onnx: bool = True, shared_init: bool = True, jobs: int | None = None,
                  command: str = "python -m benchmarks.compare --seeds") -> list[dict]:
    """Every seed's pairs into OUT/seed-N/, all in one queue (the cores stay busy to the end); then a
    one-seed report per seed and the multi-seed summary. A seed whose report holds every pair is not
    trained again, so seeds can be added later."""
    plans = {}
    for seed in dict.fromkeys(seeds):
        seed_overrides = {**(overrides or {}), "seed": seed}
        if rerun or not reported(seed_dir(out, seed), variants, frameworks, preset, seed_overrides, onnx=onnx,
                                 shared_init=shared_init):
            plans[seed] = plan(variants, frameworks, seed_dir(out, seed), preset, seed_overrides, rerun, shared_init)
        else:
            print(f"== seed {seed}: every pair is in {seed_dir(out, seed) / 'results.json'}, reusing it", flush=True)
    queue = [pair for seed_pairs in plans.values() for pair in seed_pairs]
    summaries, jobs = train_planned(queue, jobs=jobs, data_dir=data_dir, rerun=rerun) if queue else ([], 1)
    for seed, seed_pairs in plans.items():
        done, summaries = summaries[:len(seed_pairs)], summaries[len(seed_pairs):]
        report(seed_pairs, done, seed_dir(out, seed), preset=preset, command=command, jobs=jobs,
               wall_seconds=None, onnx=onnx, data_dir=data_dir)
    return seeds_report(out, seeds, command, variants, frameworks)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = Parser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="variants to train")
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    parser.add_argument("--preset", default="default", choices=PRESETS, help="tutorial settings or tuned ones")
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, help="override the seed (initial weights and data order; default 0)")
    seeds.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                       help="train every seed into OUT/seed-N/ and report the spread (mean ± sd, min-max, "
                            "torch - jax, the tutorial's place)")
    parser.add_argument("--lr", type=float, help="override the preset's learning rate (ablations)")
    parser.add_argument("--hidden-size", type=int, help="override the hidden size (quick checks)")
    parser.add_argument("--limit-train", type=int, help="train on the first N images (quick checks)")
    parser.add_argument("--limit-test", type=int, help="evaluate on the first N images (quick checks)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"results folder (default: {DEFAULT_OUT}; the committed reference: results)")
    add_data_dir(parser)
    parser.add_argument("--rerun", action="store_true", help="train finished pairs again")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX export check")
    parser.add_argument("--jobs", type=int, default=None,
                        help="pairs trained at once, each in its own process with cores/jobs threads "
                             "(default: one per core)")
    parser.add_argument("--independent-init", dest="shared_init", action="store_false",
                        help="each trainer starts from its own initial weights (common.checkpoint.initial_params, "
                             "the same NumPy draw in both), not from torch's own initialisation as results/ did")
    parser.add_argument("--update-readme", action="store_true", help="copy the table into README.md")
    args = parser.parse_args(argv)
    for variant in args.variants:
        parse_variant(variant)
    check_jobs(args.jobs)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed), ("hidden_size", args.hidden_size),
                                   ("limit_train", args.limit_train), ("limit_test", args.limit_test), ("lr", args.lr))
                 if v is not None}
    if args.seeds and min(args.seeds) < 0:
        raise UserError(f"--seeds must be non-negative integers, got {' '.join(map(str, args.seeds))}")
    check_out(args.out, overrides, args.update_readme)
    block = readme_block(args.preset, overrides, multi_seed=bool(args.seeds))
    if args.update_readme:
        require_markers(README, block)
    command = "python -m benchmarks.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    run = partial(compare_seeds, args.seeds) if args.seeds else compare
    with resumable_stop():
        runs = run(args.variants, args.frameworks, args.out, preset=args.preset, overrides=overrides,
                   data_dir=args.data_dir, rerun=args.rerun, onnx=args.onnx,
                   jobs=args.jobs, shared_init=args.shared_init, command=command.strip())
    if args.update_readme:
        paste_between_markers(README, block, (args.out / "results.md").read_text())
    return runs


if __name__ == "__main__":
    run_cli(main)
