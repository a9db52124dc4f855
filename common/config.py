"""Hyperparameters shared by both frameworks, and the CLI that maps flags onto them.

`Config` holds everything that decides the numbers a run produces (model shape, optimizer,
data). `RunOptions` holds how a run is carried out (where to write, which device). Flags are
the field names with dashes: `--hidden-size` sets `hidden_size`. Unknown flags and invalid
values are errors.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from typing import Sequence

from common.cli import DATA_DIR_HELP, Parser
from common.errors import UserError

CELLS = ("rnn", "gru", "lstm")
HEADS = ("all", "last")
SCHEDULES = ("constant", "cosine")
KERNELS = ("scan", "cudnn")
# Gates per cell: the rows of weight_ih are G * hidden_size.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# The four variants of the tutorial; `--cell/--head` reach the other two combinations.
FRAMEWORKS = ("torch", "jax")  # the two implementations, in the order tables list them
VARIANTS = {"rnn": ("rnn", "all"), "gru": ("gru", "all"), "lstm": ("lstm", "all"), "lstm-last": ("lstm", "last")}
# Fields that define the model's parameters: a checkpoint must match all of them.
MODEL_FIELDS = ("cell", "head", "input_size", "seq_len", "hidden_size", "num_layers", "num_classes")


def variant_name(cell: str, head: str) -> str:
    return cell if head == "all" else f"{cell}-last"


def parse_variant(name: str) -> tuple[str, str]:
    cell, _, last = name.partition("-")
    if cell not in CELLS or last not in ("", "last"):
        raise UserError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)} (or rnn-last, gru-last)")
    return cell, "last" if last else "all"


def _opt(help_text: str, **kwargs):
    return field(metadata={"help": help_text}, **kwargs)


@dataclass(frozen=True)
class Config:
    """Hyperparameters. Defaults are the tutorial's."""

    cell: str = _opt("recurrent cell: rnn, gru or lstm", default="lstm")
    head: str = _opt("classifier input: 'all' flattens every step, 'last' takes out[:, -1]", default="last")
    input_size: int = _opt("features per time step (pixels per image row)", default=28)
    seq_len: int = _opt("time steps (image rows)", default=28)
    hidden_size: int = _opt("hidden units per layer", default=256)
    num_layers: int = _opt("stacked recurrent layers", default=2)
    num_classes: int = _opt("output classes", default=10)
    epochs: int = _opt("training epochs", default=2)
    batch_size: int = _opt("training batch size", default=64)
    lr: float = _opt("Adam learning rate (peak, with a schedule)", default=0.005)
    schedule: str = _opt("learning-rate schedule: constant or cosine (decay to 0 over the run)", default="constant")
    grad_clip: float = _opt("clip the gradients' global norm to this (0: off)", default=0.0)
    seed: int = _opt("seed for initial weights and the data order", default=0)
    normalize: bool = _opt("normalise pixels with MNIST mean 0.1307 / std 0.3081", default=False)
    drop_last: bool = _opt("drop the last partial training batch of each epoch", default=False)
    limit_train: int | None = _opt("train on the first N training images", default=None)
    limit_test: int | None = _opt("evaluate on the first N test images", default=None)
    rnn_kernel: str = _opt("JAX's recurrent kernel: scan (jax.lax.scan, the reference) or cudnn (cuDNN's LSTM, "
                           "GPU only); torch always runs its own fused kernel", default="scan")

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise UserError(f"--cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.head not in HEADS:
            raise UserError(f"--head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("input_size", "seq_len", "hidden_size", "num_layers", "num_classes", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise UserError(f"--grad-clip must be 0 (off) or positive, got {self.grad_clip}")
        if self.rnn_kernel not in KERNELS:
            raise UserError(f"--rnn-kernel must be one of {', '.join(KERNELS)}, got {self.rnn_kernel!r}")
        if self.rnn_kernel == "cudnn" and self.cell != "lstm":
            raise UserError(f"--rnn-kernel cudnn exists only for the LSTM in JAX; use --rnn-kernel scan for {self.cell}")

    @property
    def head_features(self) -> int:
        """Width of the classifier's input: every step's output flattened, or the last step's."""
        return self.hidden_size * self.seq_len if self.head == "all" else self.hidden_size

    @property
    def variant(self) -> str:
        return variant_name(self.cell, self.head)

    def model_dict(self) -> dict:
        return {name: getattr(self, name) for name in MODEL_FIELDS}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown config keys {unknown}; this file was not written by this project")
        return cls(**values)


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out; none of it changes the numbers."""

    data_dir: str | None = _opt(DATA_DIR_HELP, default=None)
    out: str | None = _opt("output folder (default: runs/<framework>-<variant>-<time>)", default=None)
    init_from: str | None = _opt("start from the weights of this model.safetensors", default=None)
    eval_only: bool = _opt("only evaluate (the --init-from weights) on the test set", default=False)
    resume: str | None = _opt("continue the interrupted run in this folder", default=None)
    checkpoint_every: int = _opt("save a resumable checkpoint every N steps (and at each epoch end)", default=500)
    log_every: int = _opt("log a line every N steps", default=100)
    eval_batch_size: int = _opt("batch size for evaluation", default=1000)
    device: str = _opt("auto (GPU when present), cpu or cuda", default="auto")
    progress: bool = _opt("show a progress bar (only when stderr is a terminal)", default=True)
    devices: int = _opt("JAX: data-parallel over this many local devices (torch: one per process; "
                        "start N with torchrun --nproc-per-node N)", default=1)
    dist_backend: str = _opt("torch.distributed backend under torchrun: auto (nccl on GPU, gloo on CPU), "
                             "gloo or nccl", default="auto")

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.dist_backend not in ("auto", "gloo", "nccl"):
            raise UserError(f"--dist-backend must be auto, gloo or nccl, got {self.dist_backend!r}")
        for name in ("checkpoint_every", "log_every", "eval_batch_size", "devices"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.eval_only and not self.init_from:
            raise UserError("--eval-only needs --init-from CHECKPOINT (the weights to evaluate)")
        if self.resume and self.init_from:
            raise UserError("--resume continues a run with its own weights; drop --init-from")


_METAVARS = {"data_dir": "DIR", "out": "DIR", "resume": "RUN_DIR", "init_from": "CKPT", "limit_train": "N",
             "limit_test": "N", "seed": "N", "epochs": "N", "lr": "X", "grad_clip": "X"}


def _value_type(field_: dataclasses.Field):
    default = field_.default
    if isinstance(default, bool):
        return bool
    if isinstance(default, (int, float)):
        return type(default)
    return int if field_.name.startswith("limit_") else str


def _with_default(field_: dataclasses.Field) -> str:
    """The field's help, with its default unless the help already says it (or there is none)."""
    text = field_.metadata["help"]
    return text if "default" in text or field_.default is None else f"{text} (default: {field_.default})"


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="Train or evaluate a recurrent MNIST classifier.")
    parser.add_argument("--variant", default=None,
                        help=f"one of {', '.join(VARIANTS)} (or rnn-last, gru-last); sets --cell and --head "
                             "(default: lstm-last)")
    for dataclass_ in (Config, RunOptions):
        for field_ in dataclasses.fields(dataclass_):
            flag = "--" + field_.name.replace("_", "-")
            kind = _value_type(field_)
            # Defaults are None here so that we can tell which flags were given.
            if kind is bool and field_.default:
                parser.add_argument(f"--no-{field_.name.replace('_', '-')}", dest=field_.name, action="store_false",
                                    default=None, help=f"don't {field_.metadata['help']}")
            elif kind is bool:
                parser.add_argument(flag, action="store_true", default=None, help=field_.metadata["help"])
            else:
                parser.add_argument(flag, type=kind, default=None, metavar=_METAVARS.get(field_.name, kind.__name__.upper()),
                                    help=_with_default(field_))
    return parser


def config_argv(config: Config) -> list[str]:
    """The flags that make a trainer run `config` exactly: the inverse of `parse_args`."""
    argv = []
    for field_ in dataclasses.fields(Config):
        value, flag = getattr(config, field_.name), "--" + field_.name.replace("_", "-")
        if isinstance(field_.default, bool):
            argv += [flag] if value else []  # every bool field defaults to off
        elif value is not None:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def parse_args(argv: Sequence[str] | None, prog: str) -> tuple[dict, dict]:
    """Return the flags that were given (field -> value): hyperparameters, run options."""
    args = vars(build_parser(prog).parse_args(sys.argv[1:] if argv is None else list(argv)))
    given = {name: value for name, value in args.items() if value is not None}
    variant = given.pop("variant", None)
    if variant is not None:
        cell, head = parse_variant(variant)
        for name, value in (("cell", cell), ("head", head)):
            if given.get(name, value) != value:
                raise UserError(f"--variant {variant} conflicts with --{name} {given[name]}; give one or the other")
            given[name] = value
    run_names = {f.name for f in dataclasses.fields(RunOptions)}
    return ({k: v for k, v in given.items() if k not in run_names},
            {k: v for k, v in given.items() if k in run_names})
