"""How far apart can two correct runs end? Each framework from the same weights, and from the same
weights nudged by one float32 ulp.

    python -m benchmarks.chaos --variants lstm-last                  # tutorial settings, into runs/compare
    python -m benchmarks.chaos --variants lstm-last gru --out results  # beside the reference runs

For each variant it trains, with the preset's settings and seed, in `--out`/runs/:
torch and JAX from the shared initial weights (as `benchmarks.compare` does) and torch and JAX
from a copy in which every weight moved by one ulp, up or down at random (a change of ~6e-8
relative, the size of one rounding). If the torch-vs-torch gap (same code, one-ulp start) is as
large as the torch-vs-JAX gap, the latter is the chaos of training, not a difference between
the frameworks. Writes OUT/chaos.json and OUT/chaos.md (--update-docs: also into docs/RESULTS.md). Finished runs are reused, among them
those of `benchmarks.compare` with the same --out and preset: only the one-ulp runs are new.
"""
from __future__ import annotations

import datetime
import itertools
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.compare import DEFAULT_OUT, REFERENCE_DIR
from benchmarks.pairs import (FRAMEWORKS, PRESETS, check_jobs, init_path, initial_weights, pair_dir, preset_config,
                              resumable_stop, train_pairs)
from common import checkpoint
from common.cli import Parser, add_data_dir
from common.config import parse_variant
from common.errors import run_cli
from common.report import markdown_table, paste_between_markers, require_markers, write_report

STARTS = ("shared", "one ulp off")


def nudged(path: Path, out: Path, seed: int) -> Path:
    """A copy of the checkpoint at `path` with every weight moved one float32 ulp, up or down."""
    if not out.exists():
        params, config, _ = checkpoint.load_model(path)
        rng = np.random.default_rng([seed, 1])
        down = np.float32(-np.inf)  # float32 targets: nextafter steps in the type of its arguments
        moved = {name: np.nextafter(value, np.where(rng.random(value.shape) < 0.5, down, -down))
                 for name, value in params.items()}
        checkpoint.save_model(out, moved, config, framework="torch (initial weights, one ulp off)")
    return out


def chaos(variants: Sequence[str], out: Path, *, preset: str, jobs: int | None = None, data_dir=None,
          overrides: dict | None = None) -> list[dict]:
    runs = []  # (variant, framework, start, config, run_dir, init_from)
    for variant in variants:
        config = preset_config(preset, variant, overrides)
        shared = initial_weights(config, init_path(out, preset, variant))
        off = nudged(shared, init_path(out, preset, f"ulp-{variant}"), config.seed)
        for framework, (start, init) in itertools.product(FRAMEWORKS, zip(STARTS, (shared, off))):
            run_dir = pair_dir(out, preset, framework, variant)
            runs.append((variant, framework, start, config, run_dir if init is shared else
                         run_dir.with_name(run_dir.name + "-ulp"), init))
    summaries, _ = train_pairs([(framework, config, run_dir, init) for _, framework, _, config, run_dir, init in runs],
                               jobs=jobs, data_dir=data_dir, rerun=False)
    accuracy = {(v, f, s): summary["test_accuracy"] for (v, f, s, *_), summary in zip(runs, summaries)}
    rows = []
    for variant in variants:
        a = {key[1:]: value for key, value in accuracy.items() if key[0] == variant}
        rows.append({"variant": variant, **{f"{f}, {s}": a[(f, s)] for f, s in itertools.product(FRAMEWORKS, STARTS)},
                     "torch - jax": a[("torch", "shared")] - a[("jax", "shared")],
                     "torch - torch one ulp off": a[("torch", "shared")] - a[("torch", "one ulp off")],
                     "jax - jax one ulp off": a[("jax", "shared")] - a[("jax", "one ulp off")]})
    head = list(rows[0])
    cells = [[row["variant"]] + [f"{100 * row[k]:.2f}%" for k in head[1:5]] + [f"{100 * row[k]:+.2f}" for k in head[5:]]
             for row in rows]
    markdown = (f"`python -m benchmarks.chaos --preset {preset} --variants {' '.join(variants)}` — "
                f"{summaries[0]['machine']['processor']}; {datetime.date.today()}\n\n{markdown_table(head, cells)}\n")
    write_report(out, "chaos", {"preset": preset, "rows": rows}, markdown)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = Parser(prog="python -m benchmarks.chaos", description=__doc__)
    parser.add_argument("--variants", nargs="+", default=["lstm-last"], help="variants to train")
    parser.add_argument("--preset", default="default", choices=PRESETS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"results folder (default: {DEFAULT_OUT}, where compare's runs of the same preset "
                             "are reused)")
    parser.add_argument("--jobs", type=int, default=None, help="runs at once, one per core by default")
    add_data_dir(parser)
    parser.add_argument("--update-docs", action="store_true", help="paste the table into docs/RESULTS.md")
    args = parser.parse_args(argv)
    for variant in args.variants:
        parse_variant(variant)
    check_jobs(args.jobs)
    docs = REFERENCE_DIR.parent / "docs" / "RESULTS.md"
    if args.update_docs:
        require_markers(docs, f"chaos:{args.preset}")
    with resumable_stop():
        rows = chaos(args.variants, args.out, preset=args.preset, jobs=args.jobs, data_dir=args.data_dir)
    if args.update_docs:
        paste_between_markers(docs, f"chaos:{args.preset}", (args.out / "chaos.md").read_text())
    return rows


if __name__ == "__main__":
    run_cli(main)
