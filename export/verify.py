"""Check an exported .onnx file against the torch model it was exported from.

    report = verify("model.onnx", model)          # model: torch_impl.model.RecurrentClassifier

1. `onnx.checker.check_model(full_check=True)`: structure, types, shape inference.
2. onnxruntime vs torch logits on random inputs and on real MNIST test images, each at batch 1
   and batch 257 (a second, odd size proves the batch axis is really dynamic), and over the whole
   test set: the max abs difference must stay within LOGIT_ATOL.
3. The same predicted class on every test image (`limit`: only the first N; 0: skip).

export.onnx runs this on every file before moving it into place; the comparison report reuses it.
Every failure is a UserError with one line saying what differed and by how much.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch

from common import data
from common.atomic import atomic_replace
from common.errors import UserError
from export import metadata
from export.runtime import EVAL_BATCH, run_onnx, session

# Measured with torch 2.14.1 / onnxruntime 1.32, float32: random inputs and batches of 257
# differ by 1e-7..7e-6; over all 10,000 test images the worst was 4.4e-5 (a lightly trained
# lstm-last: onnxruntime's LSTM kernel drifts 4e-5 from a float64 reference on that image while
# torch stays within 2e-6, so it is kernel rounding, not a wrong equation). Equation bugs are
# far larger: a GRU exported with linear_before_reset=0 is off by ~1e-1, wrong weights by more.
# 1e-3 leaves 20x headroom over the worst rounding seen and stays 100x below those bugs.
LOGIT_ATOL = 1e-3
# Where torch's own two best logits are closer than this (about twice the worst rounding
# measured), float32 rounding alone can pick either class: such images count as ties, reported
# but allowed. Any other differing prediction fails, even within LOGIT_ATOL.
TIE_MARGIN = 1e-4
BATCH_SIZES = (1, 257)


@torch.no_grad()
def run_torch(model: torch.nn.Module, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    model.eval()
    chunks = [model(torch.from_numpy(images[i:i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks)


def _check_interface(sess, path) -> None:
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    if inp.name != "input" or inp.type != "tensor(float)" or len(inp.shape) != 3 or inp.shape[1:] != [28, 28] \
            or isinstance(inp.shape[0], int):
        raise UserError(f"{path}: input is {inp.name} {inp.type} {inp.shape}, expected input float [batch, 28, 28]")
    if out.name != "logits" or len(out.shape) != 2 or isinstance(out.shape[0], int):
        raise UserError(f"{path}: output is {out.name} {out.shape}, expected logits [batch, classes]")


def _max_diff(sess, model, images: np.ndarray) -> float:
    return float(np.abs(run_onnx(sess, images) - run_torch(model, images)).max())


def optional_test_set(data_dir, normalize: bool, log: Callable[[str], None], without: str) -> data.Dataset | None:
    """The MNIST test set; None (with a note saying what is skipped) when no folder was named and
    the default one is missing. A folder the user named must be readable."""
    try:
        return data.load_split("test", data_dir, normalize=normalize)
    except UserError as error:
        if data_dir is not None:
            raise
        log(f"note: {error}; {without}")
        return None


def verify(onnx_path: str | Path, model: torch.nn.Module, *, normalize: bool | None = None,
           data_dir: str | Path | None = None, limit: int | None = None, seed: int = 0,
           log: Callable[[str], None] = print) -> dict:
    """Raise a UserError unless `onnx_path` computes what `model` computes; return the numbers.

    `normalize`: how test images are preprocessed (default: the file's metadata says).
    `data_dir`: MNIST folder; when not given and MNIST is absent, only random inputs are checked.
    `limit`: compare predictions on the first N test images (None: all; 0: none).
    Returns {"max_abs_diff": {check: value}, "tolerance", "test_images", "mismatches", "ties",
    "onnx_test_accuracy", "torch_test_accuracy"}.
    """
    path = Path(onnx_path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:  # ValidationError, or a file that does not parse at all
        raise UserError(f"{path} fails onnx.checker: {str(error).splitlines()[0]}") from None
    sess = session(path)
    _check_interface(sess, path)
    if normalize is None:
        normalize = metadata.parse(sess.get_modelmeta().custom_metadata_map, str(path)).preprocessing.normalize

    rng = np.random.default_rng(seed)
    random_images = rng.standard_normal((max(BATCH_SIZES), 28, 28), dtype=np.float32)
    diffs = {f"random_b{n}": _max_diff(sess, model, random_images[:n]) for n in BATCH_SIZES}
    report = {"tolerance": LOGIT_ATOL, "max_abs_diff": diffs, "test_images": 0, "mismatches": 0, "ties": 0,
              "onnx_test_accuracy": None, "torch_test_accuracy": None}
    test = optional_test_set(data_dir, normalize, log, "verified on random inputs only")
    if test is not None:
        diffs.update({f"mnist_b{n}": _max_diff(sess, model, test.images[:n]) for n in BATCH_SIZES})
    count = min(len(test), limit if limit is not None else len(test)) if test is not None else 0
    if count:
        images, labels = test.images[:count], test.labels[:count]
        onnx_logits, torch_logits = run_onnx(sess, images), run_torch(model, images)
        diffs["mnist_test_set"] = float(np.abs(onnx_logits - torch_logits).max())
        report.update(compare_predictions(onnx_logits, torch_logits, labels))
    log("max |onnx - torch| logits: " + ", ".join(f"{name} {value:.1e}" for name, value in diffs.items())
        + f" (tolerance {LOGIT_ATOL:.0e})")
    check_diffs(diffs, path)
    check_predictions(report, path, log)
    return report


def compare_predictions(onnx_logits: np.ndarray, torch_logits: np.ndarray, labels: np.ndarray) -> dict:
    """How many predicted classes differ (beyond a float32 tie), and both accuracies."""
    onnx_pred, torch_pred = onnx_logits.argmax(1), torch_logits.argmax(1)
    differ = np.flatnonzero(onnx_pred != torch_pred)
    margins = torch_logits[differ, torch_pred[differ]] - torch_logits[differ, onnx_pred[differ]]
    flipped = differ[margins > TIE_MARGIN]
    first = {"image": int(flipped[0]), "onnx": int(onnx_pred[flipped[0]]), "torch": int(torch_pred[flipped[0]])} \
        if len(flipped) else None
    return {"test_images": len(labels), "mismatches": len(flipped), "ties": int((margins <= TIE_MARGIN).sum()),
            "first_mismatch": first, "onnx_test_accuracy": float((onnx_pred == labels).mean()),
            "torch_test_accuracy": float((torch_pred == labels).mean())}


def check_predictions(report: dict, path: Path, log: Callable[[str], None]) -> None:
    count, first = report["test_images"], report.get("first_mismatch")
    if report["mismatches"]:
        raise UserError(f"{path} predicts a different class than torch on {report['mismatches']} of {count} "
                        f"test images (first: image {first['image']}, onnx {first['onnx']}, torch {first['torch']})")
    if count:
        log(f"predictions: {count - report['ties']}/{count} test images identical"
            + (f", {report['ties']} float32 ties" if report["ties"] else "")
            + f"; onnx test accuracy {100 * report['onnx_test_accuracy']:.2f}%")


def check_diffs(diffs: dict[str, float], path: Path) -> None:
    # `not <=` also catches NaN, which compares false with everything.
    bad = {name: value for name, value in diffs.items() if not value <= LOGIT_ATOL}
    if bad:
        worst = max(bad, key=lambda name: bad[name] if np.isfinite(bad[name]) else np.inf)
        raise UserError(f"{path} disagrees with torch: max abs logit difference {bad[worst]:.3g} on {worst} "
                        f"exceeds LOGIT_ATOL {LOGIT_ATOL:.0e}; the export is wrong, not just rounded")


def write_verified(proto: onnx.ModelProto, path: Path, check: Callable[[Path], dict]) -> dict:
    """Save `proto` beside `path`, run `check` on that file, and only if it passes move it to
    `path` (atomically). On any failure `path` keeps what it held."""
    def save_and_check(tmp: Path) -> dict:
        onnx.save_model(proto, str(tmp))
        return check(tmp)

    return atomic_replace(path, save_and_check)
