"""Timing helpers shared by the benchmarks and the int8 comparison of the exporter.

    medians = measure_rotated({"a": fn_a, "b": fn_b}, rounds=7, block_seconds=0.5)

Contenders run in rotation (A B A B ...), each in a block of about `block_seconds`, so that
drifting machine speed and competing thread pools hit them alike (/work/shared/BENCHMARKING.md).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable


def time_block(fn: Callable[[], object], seconds: float) -> float:
    """Median seconds per call over a block of about `seconds` (at least 3 calls)."""
    times = []
    block_start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - block_start < seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_rotated(contenders: dict[Hashable, Callable[[], object]], rounds: int,
                    block_seconds: float) -> dict[Hashable, float]:
    """Median over `rounds` of each contender's block median; one warm-up call each first."""
    for fn in contenders.values():
        fn()
    blocks = {key: [] for key in contenders}
    for _ in range(rounds):
        for key, fn in contenders.items():
            blocks[key].append(time_block(fn, block_seconds))
    return {key: statistics.median(values) for key, values in blocks.items()}


def add_timing_flags(parser, rounds: int = 7, block_seconds: float = 0.5) -> None:
    """The flags every benchmark takes: --rounds, --block-seconds, --json."""
    parser.add_argument("--rounds", type=int, default=rounds, help="rotations over all contenders (median taken)")
    parser.add_argument("--block-seconds", type=float, default=block_seconds,
                        help="seconds each contender runs per round")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the numbers here")


def check_timing_flags(args) -> None:
    from common.errors import UserError
    if args.rounds < 1 or not args.block_seconds > 0:
        raise UserError("--rounds must be at least 1 and --block-seconds positive")


def write_json(args, report: dict) -> None:
    """--json FILE: the report, written atomically."""
    if args.json:
        from common.atomic import atomic_write_json
        atomic_write_json(args.json, report)
