"""The training loop both frameworks share, so their runs produce the same files and logs.

A framework supplies a `Backend` (model, optimizer, one jitted/compiled step); this module
does everything else: config resolution, data order, logging, metrics, checkpoints, resume,
NaN checks and the summary. Run files, all written atomically, in the output folder:

    config.json              framework, config, options
    metrics.jsonl            one record per log interval and per epoch (no timings: reproducible)
    model.safetensors        weights (PyTorch names), written at each epoch end
    train_state.safetensors  weights + Adam + loop position, every --checkpoint-every steps
    summary.json             accuracies, time, throughput, versions, data checksums

Data parallel (torch DDP under torchrun, JAX sharded over several devices or processes): every
worker runs this loop on the same global batches; the backend takes its shard
(common/distributed.py) and agrees with the others when to stop. Only the main worker (rank 0)
writes files and logs.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from common import checkpoint, data, ownership
from common.atomic import atomic_write_json, atomic_write_text
from common.config import MODEL_FIELDS, Config, RunOptions, parse_args
from common.errors import UserError
from common.precision import exact_float32
from common.run_state import DeferredInterrupt, Interrupted, RunState, exit_status
from common.summary import run_summary


class Backend(Protocol):
    """What a framework provides. Arrays cross this boundary as NumPy; batches are global."""

    framework: str
    device: str
    is_main: bool  # the one worker that writes files and logs (always True without data parallel)

    def train_step(self, images: np.ndarray, labels: np.ndarray, lr: float) -> tuple[float, int]:
        """One optimizer step; returns (mean loss, correct predictions) of the global batch."""

    def eval_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """Returns (summed loss, correct predictions) of the batch."""

    def agree_stop(self, signum: int) -> int:
        """The signal any worker received (0: none), the same answer on every worker."""

    def get_params(self) -> dict[str, np.ndarray]: ...
    def set_params(self, params: dict[str, np.ndarray]) -> None: ...
    def get_adam(self) -> dict[str, np.ndarray]: ...
    def set_adam(self, adam: dict[str, np.ndarray]) -> None: ...
    def versions(self) -> dict[str, str]: ...


BackendFactory = Callable[[Config, str], Backend]  # (config, device flag) -> backend with fresh weights


def learning_rate(config: Config, step: int, total_steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based)."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return config.lr


def evaluate(backend: Backend, dataset: data.Dataset, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy in [0, 1]) over the whole dataset."""
    loss_sum, correct = 0.0, 0
    for images, labels in data.batches(dataset, batch_size):
        batch_loss, batch_correct = backend.eval_batch(images, labels)
        loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
    return loss_sum / len(dataset), correct / len(dataset)


# What may change when a run resumes: nothing that changes its numbers (data parallel changes
# only the order of sums: a run trained on N devices resumes on M or one).
RESUME_OVERRIDES = {"resume", "device", "progress", "data_dir", "devices", "dist_backend"}


def _saved_run(run_dir: Path, framework: str) -> dict:
    """config.json of the run to resume, which must be this framework's."""
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        saved_framework, options = saved["framework"], saved["options"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{run_dir}/config.json is missing or unreadable ({error}); cannot resume") from None
    if saved_framework != framework:
        raise UserError(f"{run_dir} is a {saved_framework} run; resume it with python -m {saved_framework}_impl.train "
                        f"--resume {run_dir}, or start a new {framework} run from its weights with "
                        f"--init-from {run_dir}/model.safetensors")
    return options


def resolve(given: dict, given_options: dict, framework: str) -> tuple[Config, RunOptions]:
    """The run's Config and options: flags, else the checkpoint's model (with --init-from),
    else defaults; with --resume, the run's saved ones."""
    if given_options.get("resume"):
        run_dir = Path(given_options["resume"])
        extra = sorted(set(given) | (set(given_options) - RESUME_OVERRIDES))
        if extra:
            raise UserError(f"--resume continues with the run's saved settings; drop {', '.join(extra)}")
        config = checkpoint.load_newest_train_state(run_dir)[1][2]
        saved = _saved_run(run_dir, framework)
        return config, RunOptions(**{**saved, "out": str(run_dir), "init_from": None, **given_options})
    options = RunOptions(**given_options)
    values = dict(given)
    if options.init_from:
        _, saved, _ = checkpoint.load_model(options.init_from)
        for name in (*MODEL_FIELDS, "normalize"):
            values.setdefault(name, getattr(saved, name))
    return Config(**values), options


def output_dir(framework: str, config: Config, options: RunOptions, check: bool = True) -> Path:
    """The run's folder; `check` (the main worker only) refuses a file."""
    if options.resume:
        return Path(options.resume)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(options.out or f"runs/{framework}-{config.variant}-{stamp}")
    if check and out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    return out


def own(out: Path, options: RunOptions, main: bool):
    """The main worker's claim on the run folder for the whole run (common/ownership.py); a new
    run's folder must not hold a run, checked under the claim so two trainers cannot both pass."""
    if not main:
        return contextlib.nullcontext()

    def no_run_there() -> None:
        if not options.resume and (out / "config.json").exists():
            raise UserError(f"{out} already holds a run; choose another --out, or --resume {out} to continue it")
    return ownership.claim(out, check=no_run_there)


def log(line: str, backend: Backend | None = None) -> None:
    """Print a log line (on the main worker only)."""
    if backend is None or backend.is_main:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()


def run(framework: str, make_backend: Callable[[Config, RunOptions], Backend], argv: Sequence[str] | None = None) -> dict:
    """The CLI: parse flags, then train (or evaluate). Returns the summary."""
    config, options = resolve(*parse_args(argv, prog=f"python -m {framework}_impl.train"), framework)
    exact_float32(framework)
    return train(lambda c, _device: make_backend(c, options), config, options, framework)


def train(make_backend: BackendFactory, config: Config, options: RunOptions, framework: str,
          train_set: data.Dataset | None = None, test_set: data.Dataset | None = None) -> dict:
    """Train (or with eval_only, evaluate) and return the summary. Datasets default to MNIST."""
    if (config.seq_len, config.input_size) != (data.ROWS, data.COLS) and test_set is None:
        raise UserError(f"MNIST images are {data.ROWS} steps of {data.COLS} pixels; "
                        f"--seq-len {config.seq_len} --input-size {config.input_size} do not fit")
    if test_set is None:
        test_set = data.load_split("test", options.data_dir, limit=config.limit_test, normalize=config.normalize)
    backend = make_backend(config, options.device)
    if options.init_from:
        backend.set_params(checkpoint.load_model(options.init_from, expect=config)[0])
    if options.eval_only:
        return evaluate_only(backend, config, options, test_set)
    if train_set is None:
        train_set = data.load_split("train", options.data_dir, limit=config.limit_train, normalize=config.normalize)
    out = output_dir(framework, config, options, check=backend.is_main)
    with own(out, options, backend.is_main):
        return Loop(backend, config, options, framework, out, train_set, test_set).run()


def evaluate_only(backend: Backend, config: Config, options: RunOptions, test_set: data.Dataset) -> dict:
    """--eval-only: the --init-from weights on the test set; summary.json in --out if given."""
    test_loss, test_acc = evaluate(backend, test_set, options.eval_batch_size)
    log(f"eval {options.init_from} | test loss {test_loss:.4f} | test acc {100 * test_acc:.2f}% "
        f"({round(test_acc * len(test_set))}/{len(test_set)})", backend)
    summary = run_summary(backend, config, options, RunState(), None, test_set, test_loss, test_acc)
    if options.out and backend.is_main:
        with ownership.claim(options.out):  # not into a folder a trainer is writing
            atomic_write_json(Path(options.out) / "summary.json", summary)
    return summary


class Loop:
    """One training run: epochs of steps, logs, checkpoints, resume and interrupts."""

    def __init__(self, backend: Backend, config: Config, options: RunOptions, framework: str, out: Path,
                 train_set: data.Dataset, test_set: data.Dataset) -> None:
        self.backend, self.config, self.options, self.framework, self.out = backend, config, options, framework, out
        self.train_set, self.test_set = train_set, test_set
        self.steps_per_epoch = data.num_batches(len(train_set), config.batch_size, config.drop_last)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.state = RunState()
        self.main = backend.is_main

    def start(self) -> None:
        """Load the state to resume, or write config.json of a new run."""
        if self.options.resume:
            path, (params, adam, _, saved), passed_over = checkpoint.load_newest_train_state(self.out)
            self.backend.set_params(params)
            self.backend.set_adam(adam)
            self.state = RunState.from_json(saved)
            fallback = f" (the newer one was passed over: {passed_over})" if passed_over else ""
            log(f"resuming {self.out} at epoch {self.state.epoch + 1} batch {self.state.batch} from {path.name}"
                f"{fallback}", self.backend)
        elif self.main:
            atomic_write_json(self.out / "config.json", {"framework": self.framework, "config": self.config.to_dict(),
                                                         "options": self.options.__dict__})

    def save_state(self) -> None:
        if self.main:
            checkpoint.save_train_state(self.out / "train_state.safetensors", self.backend.get_params(),
                                        self.backend.get_adam(), self.config, self.state.to_json())
            atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.state.metrics))

    def run(self) -> dict:
        self.start()
        interrupt = DeferredInterrupt()
        interrupt.install()
        try:
            test = None
            while self.state.epoch < self.config.epochs:
                self.train_epoch(interrupt)
                test = self.end_epoch()
        except (Interrupted, KeyboardInterrupt) as stop:  # KeyboardInterrupt: no handler (not the main thread)
            self.save_state()
            if self.main:
                # The interpreter's own path: the command works outside the venv too.
                print(f"\ninterrupted; state saved. Resume with: {shlex.quote(sys.executable)} -m "
                      f"{self.framework}_impl.train --resume {shlex.quote(str(self.out))}", file=sys.stderr)
            raise SystemExit(exit_status(stop)) from None
        finally:
            interrupt.restore()
        test_loss, test_acc = test or evaluate(self.backend, self.test_set, self.options.eval_batch_size)
        summary = run_summary(self.backend, self.config, self.options, self.state, self.train_set, self.test_set,
                           test_loss, test_acc)  # test is None: resumed a finished run
        if self.main:
            atomic_write_json(self.out / "summary.json", summary)
        log(f"done | {self.framework} {self.config.variant} | test acc {100 * test_acc:.2f}% | "
            f"{summary['samples_per_second']:.0f} samples/s | {self.out}", self.backend)
        return summary

    def train_epoch(self, interrupt: DeferredInterrupt) -> None:
        """The rest of the current epoch, from batch `state.batch` on."""
        state, config = self.state, self.config
        show = self.options.progress and self.main and sys.stderr.isatty()  # no bar updates in log files
        bar = tqdm(total=self.steps_per_epoch, initial=state.batch, desc=f"epoch {state.epoch + 1}", leave=False,
                   disable=not show, file=sys.stderr, unit="step")
        self.interval_start = time.perf_counter()
        for images, labels in data.batches(self.train_set, config.batch_size, shuffle=True, seed=config.seed,
                                           epoch=state.epoch, drop_last=config.drop_last, start=state.batch):
            started = time.perf_counter()
            loss, correct = self.backend.train_step(images, labels,
                                                    learning_rate(config, state.step, self.total_steps))
            state.train_seconds += time.perf_counter() - started
            if not math.isfinite(loss):
                raise UserError(f"loss became {loss} at epoch {state.epoch + 1} step {state.batch + 1}; lower --lr "
                                f"(now {config.lr}) or set --grad-clip; last good checkpoint in {self.out}")
            for tally in (state.interval, state.running):
                tally.add(loss, correct, len(labels))
            state.batch, state.step, state.samples = state.batch + 1, state.step + 1, state.samples + len(labels)
            bar.update(1)
            if state.batch % self.options.log_every == 0:  # counted within the epoch, like the log line
                self.log_interval()
            if state.step % self.options.checkpoint_every == 0:
                self.save_state()
            signum = self.backend.agree_stop(interrupt.signum)
            if signum:
                raise Interrupted(signum)
        bar.close()

    def log_interval(self) -> None:
        state, tally = self.state, self.state.interval
        rate = tally.seen / (time.perf_counter() - self.interval_start)
        state.metrics.append({"epoch": state.epoch + 1, "step": state.step, "loss": tally.loss,
                              "accuracy": tally.accuracy})
        log(f"epoch {state.epoch + 1} step {state.batch}/{self.steps_per_epoch} | loss {tally.loss:.4f} "
            f"| acc {100 * tally.accuracy:.2f}% | {rate:.0f} samples/s", self.backend)
        state.interval = type(tally)()
        self.interval_start = time.perf_counter()

    def end_epoch(self) -> tuple[float, float]:
        """Evaluate, record, save the model and the state; returns (test loss, test accuracy)."""
        state, running = self.state, self.state.running
        test_loss, test_acc = evaluate(self.backend, self.test_set, self.options.eval_batch_size)
        state.train_accuracy = running.accuracy
        state.metrics.append({"epoch": state.epoch + 1, "step": state.step, "train_loss": running.loss,
                              "train_accuracy": running.accuracy, "test_loss": test_loss, "test_accuracy": test_acc})
        log(f"epoch {state.epoch + 1} done | train loss {running.loss:.4f} | train acc {100 * running.accuracy:.2f}% "
            f"| test loss {test_loss:.4f} | test acc {100 * test_acc:.2f}% | {state.train_seconds:.1f} s",
            self.backend)
        state.next_epoch()
        if self.main:
            checkpoint.save_model(self.out / "model.safetensors", self.backend.get_params(), self.config,
                                  framework=self.framework, test_accuracy=repr(test_acc))
        self.save_state()
        return test_loss, test_acc
