"""Training (variant, framework) pairs as trainer subprocesses, each on its own cores, shared
by `benchmarks.compare` and `benchmarks.chaos`.

A pair runs the trainer's CLI, `python -m <framework>_impl.train`, so what the benchmarks do
is what a user can rerun by hand; a finished pair is reused, an interrupted one resumed, and
work made with other settings is refused.
"""
from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from common import checkpoint, ownership
from common.atomic import atomic_write_json
from common.config import FRAMEWORKS, Config, config_argv, parse_variant  # noqa: F401 (re-exported)
from common.errors import UserError
from common.run_state import Interrupted, exit_status

# Tuned: pixel normalisation, cosine decay and gradient clipping over 5 epochs (see README).
PRESETS = {
    "default": {},
    "tuned": {"epochs": 5, "normalize": True, "schedule": "cosine", "grad_clip": 1.0, "lr": 0.001},
}


def preset_config(preset: str, variant: str, overrides: dict | None = None) -> Config:
    cell, head = parse_variant(variant)
    return Config(**{**PRESETS[preset], **(overrides or {}), "cell": cell, "head": head})


def limits_note(config: dict) -> str:
    """A line above the table of a run on part of MNIST or a smaller model ('' for a full run)."""
    parts = [f"first {config[name]:,} {what} images" for name, what in (("limit_train", "training"),
                                                                          ("limit_test", "test")) if config.get(name)]
    if config.get("hidden_size") != Config().hidden_size:
        parts.append(f"hidden size {config['hidden_size']}")
    return f"**Limited run, not comparable with the reference:** {', '.join(parts)}.\n\n" if parts else ""


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
    """Torch's own initialisation for `config` (`torch.manual_seed(config.seed)`, then the module's
    constructor), written once to `path`: the weights the committed results/ were trained from.
    (The trainers' default is `common.checkpoint.initial_params`, a NumPy draw of the same
    distributions.)"""
    if path.exists():
        check_same_settings(checkpoint.load_model(path)[1].to_dict(), config, path)
    else:
        import torch

        from torch_impl.model import RecurrentClassifier, get_params

        torch.manual_seed(config.seed)
        params = get_params(RecurrentClassifier(config))
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


class Trainers:
    """The trainer processes running now. Ctrl-C in a terminal reaches them all (one process group),
    but a SIGTERM (`kill`, a scheduler) reaches only the benchmark: `forward_sigterm` passes it on to
    each trainer, which saves its state and stops, lets no new pair start, and raises Interrupted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, command: list[str], **popen) -> subprocess.Popen:
        with self.lock:
            if self.stopping:
                raise UserError("not started: the benchmark is stopping")
            process = subprocess.Popen(command, **popen)
            self.live.add(process)
            return process

    def finished(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.live.discard(process)

    def _stop(self, signum, frame) -> None:
        with self.lock:
            first, self.stopping = not self.stopping, True
            for process in self.live:
                process.send_signal(signum)
        if first:  # once: the pool then waits for the trainers to save and exit
            raise Interrupted(signum)

    @contextmanager
    def forward_sigterm(self):
        if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
            yield
            return
        previous = signal.signal(signal.SIGTERM, self._stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


def run_pair(framework: str, config: Config, run_dir: Path, *, data_dir, rerun: bool, cores: list[int],
             init_from: Path | None = None, trainers: Trainers | None = None) -> dict:
    """Train one pair in its own process on `cores` (or reuse/resume it), from `init_from`'s weights if given.

    The pair runs the trainer's CLI, `python -m <framework>_impl.train`, so what compare does is
    what a user can rerun by hand: the command is in the pair's train.log and results.json.
    Returns the trainer's summary.
    """
    label = run_dir.name  # e.g. default-torch-gru
    trainers = trainers or Trainers()
    summary_path = run_dir / "summary.json"
    if (run_dir / "config.json").exists() and not rerun:
        check_same_settings(json.loads((run_dir / "config.json").read_text())["config"], config, run_dir)
    if summary_path.exists() and not rerun:
        print(f"== {label}: done earlier, reusing {run_dir}", flush=True)
        how = json.loads((run_dir / "compare.json").read_text()) if (run_dir / "compare.json").exists() else {}
        return {**json.loads(summary_path.read_text()), **how, "reused": True, "resumed": False}
    resume = (run_dir / "train_state.safetensors").exists() and not rerun
    if run_dir.exists() and not resume:  # nothing to resume: start afresh
        ownership.refuse_if_owned(run_dir)  # a trainer of another compare run may be starting there
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
        process = trainers.start(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**os.environ, **thread_env(len(cores))})
        if hasattr(os, "sched_setaffinity"):  # before the child has imported torch or jax and made its threads
            os.sched_setaffinity(process.pid, cores)
        last = ""
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                last = line.strip() or last
                print(f"[{label}] {line}", end="", flush=True)
            process.wait()
        finally:
            trainers.finished(process)
    if process.returncode != 0:
        raise UserError(f"{label} failed (exit {process.returncode}): {last} — full log in {run_dir / 'train.log'}; "
                        "run the same command again to resume")
    summary = json.loads(summary_path.read_text())
    how = {"command": shlex.join(command), "cores": cores, "wall_seconds": time.perf_counter() - started}
    atomic_write_json(run_dir / "compare.json", how)  # how this pair ran, for the report when it is reused
    return {**summary, **how, "reused": False, "resumed": resume}


@contextmanager
def resumable_stop():
    """Ctrl-C or SIGTERM while pairs train: the trainers saved their state, so one line and the
    shell's status for the signal (130, 143) instead of a traceback."""
    try:
        yield
    except (KeyboardInterrupt, Interrupted) as stop:
        print("\ninterrupted: finished pairs are kept and interrupted ones resume; run the same command again",
              file=sys.stderr)
        raise SystemExit(exit_status(stop)) from None


def train_pairs(pairs: Sequence[tuple[str, Config, Path, Path | None]], *, jobs: int | None, data_dir,
                rerun: bool) -> tuple[list[dict], int]:
    """Train (framework, config, run_dir, init_from) pairs, `jobs` at a time (default: one per core),
    each process on its own cores. Returns the summaries in order, and the number of jobs.
    A SIGTERM stops every trainer (state saved, resumable) and raises Interrupted."""
    groups = core_groups(min(jobs or len(available_cores()), len(pairs)))
    free = queue.SimpleQueue()  # each running pair holds one group of cores: they never share one
    for group in groups:
        free.put(group)

    def train(pair):
        framework, config, run_dir, init_from = pair
        cores = free.get()
        try:
            return run_pair(framework, config, run_dir, data_dir=data_dir, rerun=rerun, cores=cores,
                            init_from=init_from, trainers=trainers)
        finally:
            free.put(cores)

    trainers = Trainers()
    with trainers.forward_sigterm(), ThreadPoolExecutor(max_workers=len(groups)) as pool:
        return list(pool.map(train, pairs)), len(groups)
