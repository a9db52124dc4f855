"""Several seeds per (variant, framework): the spread of test accuracy, where the tutorial's number
falls in it, and whether torch and JAX differ by more than the seeds do.

    python -m benchmarks.compare --seeds 0 1 2 3 4 --out results/seeds/default --update-readme
    python -m benchmarks.seeds --out results/seeds/default --seeds 0 1 2 3 4   # the report again, no training

`benchmarks.compare --seeds` trains every seed into OUT/seed-N/ (a one-seed report each, as
`--seed N --out OUT/seed-N` writes it), then this module reads those reports and writes
OUT/results.json, OUT/results.md and OUT/bands.png (mean curve and min-max band per framework).

Statistics (every run is one sample; a seed sets the initial weights, shared by both frameworks,
and the data order):
- per pair: mean ± sample standard deviation and min-max of the runs that trained; a run that
  ends below DIVERGED_BELOW is counted as diverged and left out of those (it is at chance);
- torch - JAX: the mean of the per-seed differences (same seed, same start: a paired comparison),
  its standard error, and whether it is distinguishable from zero by a two-sided t-test at 95%;
- the tutorial's number: how many of our standard deviations it lies from each framework's mean;
  "reproduced" when it is within REPRODUCED_WITHIN_SD of both.
"""
from __future__ import annotations

import datetime
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Sequence

from benchmarks import plots
from benchmarks.pairs import FRAMEWORKS, limits_note
from common.cli import Parser
from common.errors import UserError, run_cli
from common.report import markdown_table, write_report

# A diverged run ends at chance (10% give or take 1.5 points, the RNN at lr 0.005); the runs that
# trained in results/seeds all ended far above 50%, so 50% splits the two without a knife edge.
DIVERGED_BELOW = 0.5
# A run drawn from our distribution lands within 2 standard deviations of its mean ~95% of the time.
REPRODUCED_WITHIN_SD = 2.0
CONFIDENCE = 0.95  # of the t-test on the torch - JAX difference


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed-{seed}"


def spread(accuracies: Sequence[float]) -> dict:
    """Count, diverged count, and mean/sd/min/max of the runs that trained (None where undefined)."""
    trained = [a for a in accuracies if a >= DIVERGED_BELOW]
    return {"runs": len(accuracies), "diverged": len(accuracies) - len(trained),
            "mean": statistics.fmean(trained) if trained else None,
            "sd": statistics.stdev(trained) if len(trained) > 1 else None,
            "min": min(trained, default=None), "max": max(trained, default=None),
            "all_min": min(accuracies, default=None), "all_max": max(accuracies, default=None)}


def paired_difference(pairs: Sequence[tuple[float, float]]) -> dict | None:
    """Mean of a - b over the seeds where both trained, its standard error, t and the verdict."""
    from scipy.stats import t as student_t

    differences = [a - b for a, b in pairs if min(a, b) >= DIVERGED_BELOW]
    if len(differences) < 2:
        return None
    mean, n = statistics.fmean(differences), len(differences)
    se = statistics.stdev(differences) / math.sqrt(n)
    critical = float(student_t.ppf(0.5 + CONFIDENCE / 2, n - 1))
    t = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    return {"seeds": n, "mean": mean, "se": se, "t": t, "critical_t": critical, "distinguishable": abs(t) > critical}


def sds_from_mean(reference: float, stats: dict) -> float | None:
    """(reference - mean) / sd: where the tutorial's number lies in our distribution."""
    if stats["mean"] is None or stats["sd"] is None:
        return None
    if stats["sd"] == 0:
        return 0.0 if reference == stats["mean"] else math.copysign(math.inf, reference - stats["mean"])
    return (reference - stats["mean"]) / stats["sd"]


def verdict(reference: float, by_framework: dict[str, dict]) -> tuple[bool | None, str]:
    """Is the tutorial's number within REPRODUCED_WITHIN_SD of every framework's mean? And a sentence."""
    parts, inside = [], []
    for framework, stats in by_framework.items():
        z = sds_from_mean(reference, stats)
        if stats["mean"] is None:
            parts.append(f"{framework}: all {stats['runs']} diverged")
            inside.append(False)
        elif z is None:
            parts.append(f"{framework}: one run, no spread")
            inside.append(None)
        else:
            in_range = stats["min"] <= reference <= stats["max"]
            parts.append(f"{framework} {z:+.1f} sd{', inside min-max' if in_range else ''}")
            inside.append(abs(z) <= REPRODUCED_WITHIN_SD)
    # One framework that misses it decides; one without a spread leaves the verdict open.
    reproduced = False if False in inside else None if None in inside else True
    word = {True: "**yes**", False: "**no**", None: "—"}[reproduced]
    return reproduced, f"{word} ({'; '.join(parts)})"


def percent(stats: dict) -> str:
    """'97.71 ± 0.35% (97.21-98.10)', with the diverged runs named."""
    n, diverged = stats["runs"], stats["diverged"]
    if stats["mean"] is None:
        return f"{diverged} of {n} diverged ({100 * stats['all_min']:.2f}-{100 * stats['all_max']:.2f}%)"
    sd = "" if stats["sd"] is None else f" ± {100 * stats['sd']:.2f}"
    text = f"{100 * stats['mean']:.2f}{sd}% ({100 * stats['min']:.2f}-{100 * stats['max']:.2f})"
    return text + (f"; {diverged} of {n} diverged" if diverged else "")


def difference_cell(difference: dict | None) -> str:
    if difference is None:
        return "—"
    if difference["se"] == 0 and difference["mean"] == 0:  # t is 0/0: say what happened instead
        return f"0 in each of the {difference['seeds']} seeds (identical accuracies)"
    verdict_text = "distinguishable from 0" if difference["distinguishable"] else "not distinguishable from 0"
    return (f"{100 * difference['mean']:+.2f} ± {100 * difference['se']:.2f} "
            f"(t {difference['t']:+.1f}, {verdict_text})")


def load_seed(out: Path, seed: int) -> list[dict]:
    path = seed_dir(out, seed) / "results.json"
    try:
        return json.loads(path.read_text())["runs"]
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: train seed {seed} first "
                        f"(python -m benchmarks.compare --seeds ... --out {out})") from None
    except (ValueError, KeyError) as error:
        raise UserError(f"{path} is not a report of benchmarks.compare ({type(error).__name__}: {error}); "
                        f"train seed {seed} again with --rerun") from None


def summarise(runs_by_seed: dict[int, list[dict]]) -> list[dict]:
    """One row per variant: per-framework spreads, the paired torch - JAX difference, the tutorial's place."""
    runs = [run for seed_runs in runs_by_seed.values() for run in seed_runs]
    accuracy = {(run["framework"], run["variant"], run["seed"]): run["test_accuracy"] for run in runs}
    frameworks = [f for f in FRAMEWORKS if any(run["framework"] == f for run in runs)]
    rows = []
    for variant in dict.fromkeys(run["variant"] for run in runs):
        row = {"variant": variant, "reference": next(r["reference_accuracy"] for r in runs if r["variant"] == variant),
               "frameworks": {}}
        for framework in frameworks:
            values = [accuracy[framework, variant, seed] for seed in runs_by_seed
                      if (framework, variant, seed) in accuracy]
            row["frameworks"][framework] = {**spread(values), "accuracies": values}
        if len(frameworks) == 2:
            both = [(accuracy[frameworks[0], variant, s], accuracy[frameworks[1], variant, s]) for s in runs_by_seed
                    if (frameworks[0], variant, s) in accuracy and (frameworks[1], variant, s) in accuracy]
            row["difference"] = paired_difference(both)
        if row["reference"] is not None:
            row["reproduced"], row["verdict"] = verdict(row["reference"], row["frameworks"])
        rows.append(row)
    return rows


def table(rows: list[dict], runs_by_seed: dict[int, list[dict]], command: str) -> str:
    runs = [run for seed_runs in runs_by_seed.values() for run in seed_runs]
    frameworks = list(rows[0]["frameworks"])
    first = runs[0]
    versions = ", ".join(dict.fromkeys(f"{k} {v}" for run in runs for k, v in run["versions"].items()
                                       if k in ("torch", "jax", "optax")))
    machines = ", ".join(dict.fromkeys(f"{run['machine']['processor']} ({run['machine']['cpu_count']} cores)"
                                       for run in runs))
    dates = sorted({run["date"][:10] for run in runs})
    seeds = " ".join(str(seed) for seed in runs_by_seed)
    caption = (f"`{command}` — seeds {seeds}; {machines}; {versions}, python {first['versions']['python']}; "
               f"{dates[0]}{'' if len(dates) == 1 else ' to ' + dates[-1]}. Test accuracy: mean ± sd "
               f"(min-max) over the seeds that trained; a run below {100 * DIVERGED_BELOW:.0f}% is counted as diverged.")
    head = ["variant", "tutorial"] + [f"{f} (n={len(runs_by_seed)})" for f in frameworks]
    head += ["torch - jax, paired (± SE)"] if len(frameworks) == 2 else []
    head += [f"tutorial within {REPRODUCED_WITHIN_SD:g} sd?"]
    body = []
    for row in rows:
        cells = [row["variant"], "—" if row["reference"] is None else f"{100 * row['reference']:.2f}%"]
        cells += [percent(row["frameworks"][f]) for f in frameworks]
        cells += [difference_cell(row.get("difference"))] if len(frameworks) == 2 else []
        cells.append(row.get("verdict", "—"))
        body.append(cells)
    return f"{limits_note(first['config'])}{caption}\n\n{markdown_table(head, body)}\n\n{in_words(rows)}\n"


def in_words(rows: list[dict]) -> str:
    """The table's verdicts as sentences: which variants reproduce the tutorial (and which way the
    others miss), which differ by framework."""
    def distinguishable(row: dict):
        return (row.get("difference") or {}).get("distinguishable")

    groups = (
        (f"Reproduced (the tutorial's number within {REPRODUCED_WITHIN_SD:g} sd of our mean in both frameworks)",
         [row["variant"] for row in rows if row.get("reproduced") is True]),
        ("Not reproduced", [f"{row['variant']} ({side(row)})" for row in rows if row.get("reproduced") is False]),
        ("Torch and JAX differ by more than the seeds scatter",
         [row["variant"] for row in rows if distinguishable(row) is True]),
        ("Torch and JAX within the seeds' scatter", [row["variant"] for row in rows if distinguishable(row) is False]))
    return " ".join(f"{label}: {', '.join(variants)}." for label, variants in groups if variants)


def side(row: dict) -> str:
    """Which way a tutorial's number that we do not reproduce misses our runs."""
    stats = row["frameworks"].values()
    if any(s["mean"] is None for s in stats):
        return "our runs diverge"
    above = [row["reference"] > s["mean"] for s in stats]
    return "the tutorial's is higher" if all(above) else "the tutorial's is lower" if not any(above) else "mixed"


def report(out: Path, seeds: Sequence[int], command: str, variants: Sequence[str] | None = None,
           frameworks: Sequence[str] | None = None) -> list[dict]:
    """Read OUT/seed-N/results.json for every seed (the pairs of `variants` and `frameworks`, default
    all); write OUT/results.{json,md} and OUT/bands.png."""
    runs_by_seed = {seed: [run for run in load_seed(out, seed)
                           if (variants is None or run["variant"] in variants)
                           and (frameworks is None or run["framework"] in frameworks)]
                    for seed in dict.fromkeys(seeds)}
    rows = summarise(runs_by_seed)
    markdown = table(rows, runs_by_seed, command)
    plots.bands(runs_by_seed, out / "bands.png")
    write_report(out, "results", {"command": command, "seeds": list(runs_by_seed), "rows": rows,
                                  "diverged_below": DIVERGED_BELOW, "reproduced_within_sd": REPRODUCED_WITHIN_SD,
                                  "confidence": CONFIDENCE,
                                  "written": datetime.datetime.now().astimezone().isoformat(timespec="seconds")},
                 markdown)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = Parser(prog="python -m benchmarks.seeds", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the folder `benchmarks.compare --seeds` wrote")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds to summarise")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.seeds " + " ".join(sys.argv[1:] if argv is None else argv)
    return report(args.out, args.seeds, command)


if __name__ == "__main__":
    run_cli(main)
