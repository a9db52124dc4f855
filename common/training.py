"""The training loop both frameworks share, so their runs produce the same files and logs.

A framework supplies a `Backend` (model, optimizer, one jitted/compiled step); this module
does everything else: config resolution, data order, logging, metrics, checkpoints, resume,
NaN checks and the summary. Run files, all written atomically, in the output folder:

    config.json              framework, config, options
    metrics.jsonl            one record per log interval and per epoch (no timings: reproducible)
    model.safetensors        weights (PyTorch names), written at each epoch end
    train_state.safetensors  weights + Adam + loop position, every --checkpoint-every steps
    summary.json             accuracies, time, throughput, versions, data checksums
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from common import checkpoint, data
from common.atomic import atomic_write_json, atomic_write_text
from common.config import MODEL_FIELDS, Config, RunOptions, parse_args
from common.errors import UserError
from common.precision import exact_float32

EXIT_INTERRUPTED = 130


class Backend(Protocol):
    """What a framework provides. Arrays cross this boundary as NumPy."""

    framework: str
    device: str

    def train_step(self, images: np.ndarray, labels: np.ndarray, lr: float) -> tuple[float, int]:
        """One optimizer step; returns (mean loss, correct predictions) of the batch."""

    def eval_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """Returns (summed loss, correct predictions) of the batch."""

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


# What may change when a run resumes: nothing that changes its numbers.
RESUME_OVERRIDES = {"resume", "device", "progress", "data_dir"}


def resolve(given: dict, given_options: dict) -> tuple[Config, RunOptions]:
    """The run's Config and options: flags, else the checkpoint's model (with --init-from),
    else defaults; with --resume, the run's saved ones."""
    if given_options.get("resume"):
        run_dir = Path(given_options["resume"])
        extra = sorted(set(given) | (set(given_options) - RESUME_OVERRIDES))
        if extra:
            raise UserError(f"--resume continues with the run's saved settings; drop {', '.join(extra)}")
        config = checkpoint.load_train_state(run_dir / "train_state.safetensors")[2]
        try:
            saved = json.loads((run_dir / "config.json").read_text())["options"]
            return config, RunOptions(**{**saved, "out": str(run_dir), "init_from": None, **given_options})
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"{run_dir}/config.json is missing or unreadable ({error}); cannot resume") from None
    options = RunOptions(**given_options)
    values = dict(given)
    if options.init_from:
        _, saved, _ = checkpoint.load_model(options.init_from)
        for name in (*MODEL_FIELDS, "normalize"):
            values.setdefault(name, getattr(saved, name))
    return Config(**values), options


def output_dir(framework: str, config: Config, options: RunOptions) -> Path:
    if options.resume:
        return Path(options.resume)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(options.out or f"runs/{framework}-{config.variant}-{stamp}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if (out / "config.json").exists():
        raise UserError(f"{out} already holds a run; choose another --out, or --resume {out} to continue it")
    return out


class DeferredInterrupt:
    """Ctrl-C (SIGINT) sets a flag that the loop checks between steps, so the saved state is
    never caught halfway through a step (weights updated, counters not): resume stays exact."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            self.previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(line: str) -> None:
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def _summary(backend, config, options, state, train_set, test_set, test_loss, test_acc) -> dict:
    seconds = state["train_seconds"]
    return {
        "framework": backend.framework, "variant": config.variant, "epochs": config.epochs, "seed": config.seed,
        "config": config.to_dict(), "options": options.__dict__,
        "train_accuracy": state.get("train_accuracy"), "test_accuracy": test_acc, "test_loss": test_loss,
        "train_seconds": seconds, "samples_per_second": state["samples"] / seconds if seconds else None,
        "parameters": checkpoint.count_params(config), "device": backend.device,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **backend.versions()},
        "machine": {"platform": platform.platform(), "processor": cpu_name(),
                    "cpu_count": os.cpu_count()},
        "data_sha256": {**(train_set.sha256 if train_set else {}), **test_set.sha256},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def run(framework: str, make_backend: BackendFactory, argv: Sequence[str] | None = None) -> dict:
    """The CLI: parse flags, then train (or evaluate). Returns the summary."""
    config, options = resolve(*parse_args(argv, prog=f"python -m {framework}_impl.train"))
    exact_float32()
    return train(make_backend, config, options, framework)


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
        test_loss, test_acc = evaluate(backend, test_set, options.eval_batch_size)
        log(f"eval {options.init_from} | test loss {test_loss:.4f} | test acc {100 * test_acc:.2f}% "
            f"({round(test_acc * len(test_set))}/{len(test_set)})")
        summary = _summary(backend, config, options, {"train_seconds": 0, "samples": 0},
                           None, test_set, test_loss, test_acc)
        if options.out:
            atomic_write_json(Path(options.out) / "summary.json", summary)
        return summary
    if train_set is None:
        train_set = data.load_split("train", options.data_dir, limit=config.limit_train, normalize=config.normalize)

    out = output_dir(framework, config, options)
    state = {"epoch": 0, "batch": 0, "step": 0, "samples": 0, "train_seconds": 0.0, "metrics": [],
             "interval": [0.0, 0, 0], "running": [0.0, 0, 0]}  # [loss sum, correct, samples]
    if options.resume:
        params, adam, _, state = checkpoint.load_train_state(out / "train_state.safetensors")
        backend.set_params(params)
        backend.set_adam(adam)
        log(f"resuming {out} at epoch {state['epoch'] + 1} batch {state['batch']}")
    else:
        atomic_write_json(out / "config.json", {"framework": framework, "config": config.to_dict(),
                                                "options": options.__dict__})

    def save_state() -> None:
        checkpoint.save_train_state(out / "train_state.safetensors", backend.get_params(), backend.get_adam(),
                                    config, state)
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state["metrics"]))

    interrupt = DeferredInterrupt()
    steps_per_epoch = data.num_batches(len(train_set), config.batch_size, config.drop_last)
    total_steps = steps_per_epoch * config.epochs
    test_loss = test_acc = None
    interrupt.install()
    try:
        while state["epoch"] < config.epochs:
            epoch = state["epoch"]
            bar = tqdm(total=steps_per_epoch, initial=state["batch"], desc=f"epoch {epoch + 1}", leave=False,
                       disable=not options.progress, file=sys.stderr, unit="step")
            interval_start = time.perf_counter()
            batches = data.batches(train_set, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                                   drop_last=config.drop_last, start=state["batch"])
            for images, labels in batches:
                started = time.perf_counter()
                loss, correct = backend.train_step(images, labels, learning_rate(config, state["step"], total_steps))
                state["train_seconds"] += time.perf_counter() - started
                if not math.isfinite(loss):
                    raise UserError(f"loss became {loss} at epoch {epoch + 1} step {state['batch'] + 1}; "
                                    f"lower --lr (now {config.lr}) or set --grad-clip; last good checkpoint in {out}")
                n = len(labels)
                for acc in (state["interval"], state["running"]):
                    acc[0] += loss * n
                    acc[1] += correct
                    acc[2] += n
                state["batch"] += 1
                state["step"] += 1
                state["samples"] += n
                bar.update(1)
                if state["step"] % options.log_every == 0:
                    loss_sum, hits, seen = state["interval"]
                    rate = seen / (time.perf_counter() - interval_start)
                    state["metrics"].append({"epoch": epoch + 1, "step": state["step"], "loss": loss_sum / seen,
                                             "accuracy": hits / seen})
                    log(f"epoch {epoch + 1} step {state['batch']}/{steps_per_epoch} | loss {loss_sum / seen:.4f} "
                        f"| acc {100 * hits / seen:.2f}% | {rate:.0f} samples/s")
                    state["interval"] = [0.0, 0, 0]
                    interval_start = time.perf_counter()
                if state["step"] % options.checkpoint_every == 0:
                    save_state()
                if interrupt.requested:
                    raise KeyboardInterrupt
            bar.close()
            loss_sum, hits, seen = state["running"]
            test_loss, test_acc = evaluate(backend, test_set, options.eval_batch_size)
            state["train_accuracy"] = hits / seen
            state["metrics"].append({"epoch": epoch + 1, "step": state["step"], "train_loss": loss_sum / seen,
                                     "train_accuracy": hits / seen, "test_loss": test_loss, "test_accuracy": test_acc})
            log(f"epoch {epoch + 1} done | train loss {loss_sum / seen:.4f} | train acc {100 * hits / seen:.2f}% "
                f"| test loss {test_loss:.4f} | test acc {100 * test_acc:.2f}% | {state['train_seconds']:.1f} s")
            state.update(epoch=epoch + 1, batch=0, interval=[0.0, 0, 0], running=[0.0, 0, 0])
            checkpoint.save_model(out / "model.safetensors", backend.get_params(), config, framework=framework,
                                  test_accuracy=repr(test_acc))
            save_state()
    except KeyboardInterrupt:
        save_state()
        print(f"\ninterrupted; state saved. Resume with: python -m {framework}_impl.train --resume {out}",
              file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        interrupt.restore()
    if test_acc is None:  # resumed a finished run: nothing left to train
        test_loss, test_acc = evaluate(backend, test_set, options.eval_batch_size)
    summary = _summary(backend, config, options, state, train_set, test_set, test_loss, test_acc)
    atomic_write_json(out / "summary.json", summary)
    log(f"done | {framework} {config.variant} | test acc {100 * test_acc:.2f}% | "
        f"{summary['samples_per_second']:.0f} samples/s | {out}")
    return summary
