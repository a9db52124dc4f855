"""The one checkpoint format both frameworks read and write: safetensors with PyTorch's names.

`model.safetensors` holds the weights (`rnn.weight_ih_l0`, ..., `fc.weight`, `fc.bias`) with
the run's config as JSON in the metadata. `train_state.safetensors` adds Adam's moments and
the loop's position, so an interrupted run can resume exactly. Weights are float32 NumPy
arrays; converting to torch or JAX is a copy.

Every file records `sha256`, a checksum of its tensors (names, dtypes, shapes, bytes) and its
other metadata, checked on every load: safetensors itself catches a truncated file, not a
flipped bit. Saving a training state keeps the one it replaces as `train_state.prev.safetensors`,
so a damaged newest state has a fallback (`load_newest_train_state`).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from common.atomic import atomic_replace, atomic_write_bytes
from common.config import GATES, MODEL_FIELDS, Config
from common.errors import UserError

FORMAT = "rnn-mnist-parity/1"
ADAM_PREFIXES = ("adam.exp_avg.", "adam.exp_avg_sq.")
CHECKSUM = "sha256"  # the metadata key of the checksum
TRAIN_STATE, PREVIOUS_TRAIN_STATE = "train_state.safetensors", "train_state.prev.safetensors"
_unchecked_noted: set[Path] = set()


def param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """Every parameter's PyTorch name and shape, in nn.Module order."""
    rows, hidden = GATES[config.cell] * config.hidden_size, config.hidden_size
    shapes = {}
    for layer in range(config.num_layers):
        inputs = config.input_size if layer == 0 else hidden
        shapes[f"rnn.weight_ih_l{layer}"] = (rows, inputs)
        shapes[f"rnn.weight_hh_l{layer}"] = (rows, hidden)
        shapes[f"rnn.bias_ih_l{layer}"] = (rows,)
        shapes[f"rnn.bias_hh_l{layer}"] = (rows,)
    shapes["fc.weight"] = (config.num_classes, config.head_features)
    shapes["fc.bias"] = (config.num_classes,)
    return shapes


def count_params(config: Config) -> int:
    return sum(int(np.prod(shape)) for shape in param_shapes(config).values())


def initial_params(config: Config, seed: int) -> dict[str, np.ndarray]:
    """Fresh weights with torch.nn's initialisation, drawn from `np.random.default_rng(seed)` in
    param_shapes order: U(-1/sqrt(H), 1/sqrt(H)) for the recurrent layers, U(-1/sqrt(in), 1/sqrt(in))
    for the Linear. Both trainers start from these, so one seed is one set of initial weights."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(config).items():
        bound = 1 / np.sqrt(config.hidden_size if name.startswith("rnn.") else config.head_features)
        params[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    return params


def check_params(params: dict[str, np.ndarray], config: Config, source: str) -> None:
    """Raise a UserError unless `params` has exactly the names and shapes `config` needs."""
    expected = param_shapes(config)
    missing, extra = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    if missing or extra:
        raise UserError(f"{source} does not fit a {config.variant} model: missing {missing}, unexpected {extra}")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise UserError(f"{source}: {name} has shape {tuple(params[name].shape)}, "
                            f"a {config.variant} model with hidden {config.hidden_size} needs {shape}")


def checksum(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (in name order), then the metadata
    other than the checksum itself (in key order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape), array.nbytes]).encode())
        digest.update(array.tobytes())
    digest.update(json.dumps({k: v for k, v in metadata.items() if k != CHECKSUM}, sort_keys=True).encode())
    return digest.hexdigest()


def _encode(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    return st_save(tensors, metadata={**metadata, CHECKSUM: checksum(tensors, metadata)})


def _verify(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str], what: str) -> None:
    if CHECKSUM not in metadata:
        if path.resolve() not in _unchecked_noted:  # resume and every data-parallel worker read it again
            _unchecked_noted.add(path.resolve())
            print(f"note: {path} has no checksum (written before checkpoints had one); loaded unchecked",
                  file=sys.stderr)
        return
    if metadata[CHECKSUM] != checksum(tensors, metadata):
        raise UserError(f"{path} is damaged: its contents do not match the checksum it was saved with; "
                        f"this {what} cannot be trusted (restore it from a copy, or use another one)")


def _read(path: str | Path, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        (header_size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + header_size])
        metadata = header.get("__metadata__") or {}
        tensors = st_load(data)
    except Exception as error:  # any corruption: bad header, bad JSON, short data
        raise UserError(f"{path} is not a valid safetensors {what} ({type(error).__name__}); "
                        "it may be truncated or corrupt") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(f"{path} is a safetensors file but not one of this project's {what}s (no '{FORMAT}' metadata)")
    _verify(path, tensors, metadata, what)
    return tensors, metadata


def _config_from(metadata: dict[str, str], path) -> Config:
    try:
        values = json.loads(metadata["config"])
        return Config.from_dict(values)
    except (KeyError, TypeError, ValueError, UserError) as error:
        raise UserError(f"{path} has an unreadable config in its metadata ({error})") from None


def save_model(path, params: dict[str, np.ndarray], config: Config, **extra: str) -> None:
    check_params(params, config, "weights to save")
    metadata = {"format": FORMAT, "config": json.dumps(config.to_dict(), sort_keys=True), **extra}
    tensors = {name: np.ascontiguousarray(params[name], dtype=np.float32) for name in param_shapes(config)}
    atomic_write_bytes(path, _encode(tensors, metadata))


def load_model(path, expect: Config | None = None) -> tuple[dict[str, np.ndarray], Config, dict[str, str]]:
    """Weights, the config they were trained with, and the metadata. With `expect`, the model
    fields (cell, head, sizes) must match it."""
    tensors, metadata = _read(path, "checkpoint")
    config = _config_from(metadata, path)
    if expect is not None:
        diffs = [f"{name} {getattr(config, name)} (run asks for {getattr(expect, name)})"
                 for name in MODEL_FIELDS if getattr(config, name) != getattr(expect, name)]
        if diffs:
            raise UserError(f"{path} holds a different model: {', '.join(diffs)}; "
                            "drop the model flags to use the checkpoint's, or pick a matching checkpoint")
    check_params(tensors, config, str(path))
    for name, array in tensors.items():
        if array.dtype != np.float32:
            raise UserError(f"{path}: {name} is {array.dtype}, expected float32")
    return tensors, config, metadata


def save_train_state(path, params, adam: dict[str, np.ndarray], config: Config, state: dict) -> None:
    """Weights, Adam's moments (`adam.exp_avg.<name>`, `adam.exp_avg_sq.<name>`, `adam.step`)
    and the loop's state (JSON: epoch, batch, metrics so far). The state `path` held becomes
    its `previous_path` first."""
    tensors = {f"model.{name}": np.require(value, requirements="C") for name, value in params.items()}
    tensors.update({name: np.require(value, requirements="C") for name, value in adam.items()})  # keeps 0-d
    metadata = {"format": FORMAT, "config": json.dumps(config.to_dict(), sort_keys=True),
                "state": json.dumps(state)}
    data = _encode(tensors, metadata)
    keep_previous(Path(path))
    atomic_write_bytes(path, data)


def previous_path(path: Path) -> Path:
    """train_state.safetensors -> train_state.prev.safetensors, beside it."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def keep_previous(path: Path) -> None:
    """Make `previous_path(path)` a copy of `path` (a hard link, else a real copy), replacing the
    older one atomically: at every moment `path` and a whole previous state exist. A `path`
    that does not verify is not kept: the older previous state stays the fallback."""
    try:
        _read(path, "training state")
    except UserError:
        return  # missing, or damaged: nothing worth keeping
    previous = previous_path(path)

    def link(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(path, tmp)  # no bytes copied: `path` is replaced by a rename, the old inode stays here
        except OSError:  # a filesystem without hard links
            tmp.write_bytes(path.read_bytes())
    atomic_replace(previous, link)


def load_newest_train_state(run_dir: Path) -> tuple[Path, tuple[dict, dict, Config, dict], str]:
    """The newest of the run's training states that loads and verifies: (its path, what
    `load_train_state` returns, why the newer one was passed over ('' if it was not)).
    A UserError if none does."""
    newest, previous = run_dir / TRAIN_STATE, run_dir / PREVIOUS_TRAIN_STATE
    try:
        return newest, load_train_state(newest), ""
    except UserError as newest_error:
        if not previous.exists():
            raise
        try:
            return previous, load_train_state(previous), str(newest_error)
        except UserError as previous_error:
            raise UserError(f"no training state in {run_dir} can be resumed: {newest_error}; and {previous_error}; "
                            f"start a new run (--init-from {run_dir}/model.safetensors keeps the last epoch's "
                            "weights)") from None


def load_train_state(path) -> tuple[dict, dict, Config, dict]:
    tensors, metadata = _read(path, "training state")
    config = _config_from(metadata, path)
    params = {name[len("model."):]: value for name, value in tensors.items() if name.startswith("model.")}
    adam = {name: value for name, value in tensors.items() if name.startswith("adam.")}
    check_params(params, config, str(path))
    for prefix in ADAM_PREFIXES:
        check_params({n[len(prefix):]: v for n, v in adam.items() if n.startswith(prefix)}, config, f"{path} ({prefix})")
    if "adam.step" not in adam:
        raise UserError(f"{path} has no adam.step; it is not a resumable training state")
    try:
        state = json.loads(metadata["state"])
    except (KeyError, ValueError):
        raise UserError(f"{path} has no readable loop state in its metadata") from None
    return params, adam, config, state
