"""Classify digit images with an exported model; needs only NumPy, onnxruntime and PIL.

    python -m export.predict model.onnx digit.png [more.png | FOLDER ...] [--json]
    python -m export.predict model.onnx --idx-images t10k-images-idx3-ubyte.gz --idx-labels t10k-labels-idx1-ubyte.gz
    python -m export.predict model.onnx --idx-images t10k-images-idx3-ubyte.gz     # no labels: classify each
    python -m export.predict model.step.onnx digit.png --stream                    # the prediction after each row

Preprocessing comes from the model's metadata (written by `python -m export.onnx`); export/images.py
makes any image MNIST-like (--invert overrides its light-border rule). An image that cannot be read
does not stop the others: it is reported, and the exit status is 2 at the end. No torch or JAX
here: this file and what it imports must run on a machine without them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from common.data import IMAGE_MAGIC, LABEL_MAGIC
from common.cli import Parser
from common.errors import UserError, run_cli
from export import metadata, streaming
from export.images import (BLANK_WARNING, SIDE, fit_like_mnist, image_files, is_blank, preprocess,  # noqa: F401
                           read_idx, read_image)
from export.runtime import run_onnx, session


def open_model(path: str | Path, stream_hint: str = "add --stream") -> tuple[ort.InferenceSession, metadata.ModelInfo]:
    """(session, metadata) of a whole-sequence model; `stream_hint`: what to say when it is a step file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model {path} not found")
    sess = session(path)
    info = metadata.parse(sess.get_modelmeta().custom_metadata_map, str(path))
    inputs = sess.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 3 or list(inputs[0].shape[1:]) != [SIDE, SIDE] \
            or inputs[0].type != "tensor(float)":
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        hint = f"; it is a streaming model: {stream_hint}" if streaming.STREAM_KEY in info.props else ""
        raise UserError(f"{path} takes {found}; predict needs one float input [batch, {SIDE}, {SIDE}]{hint}")
    return sess, info


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def read_all(paths: list[Path], invert: str) -> tuple[list[Path], np.ndarray, list[dict]]:
    """(readable paths, their pixels (N, 28, 28) uint8, [{"image", "error"}] for the others)."""
    good, pixels, errors = [], [], []
    for path in paths:
        try:
            pixels.append(read_image(path, invert))
            good.append(path)
        except UserError as error:
            errors.append({"image": str(path), "error": str(error)})
    return good, np.array(pixels, dtype=np.uint8).reshape(-1, SIDE, SIDE), errors


def prediction(name: str, probs: np.ndarray, labels: list[str]) -> dict:
    best = int(probs.argmax())
    return {"image": name, "class": labels[best], "probability": float(probs[best]), "probabilities": probs.tolist()}


def describe(pred: dict, labels: list[str]) -> str:
    return (f"{pred['image']}: {pred['class']} ({100 * pred['probability']:.1f}%) | "
            + " ".join(f"{name}:{p:.3f}" for name, p in zip(labels, pred["probabilities"])))


def stream_image(sess, stream: dict, info: metadata.ModelInfo, name: str, pixels: np.ndarray, say) -> dict:
    """Feed one image row by row; report the prediction after each row and from which row on it held."""
    labels, steps = info.class_labels, []
    for seen, logits, _ in streaming.run_stream(sess, stream, preprocess(pixels[None], info), [1] * len(pixels)):
        steps.append(prediction(name, softmax(logits)[0], labels))
        if stream["running_prediction"]:
            say(f"{name} row {seen:2d}: {steps[-1]['class']} ({100 * steps[-1]['probability']:.1f}%)")
    final = dict(steps[-1], rows=len(steps))
    if stream["running_prediction"]:
        final["known_from_row"] = next(i + 1 for i in range(len(steps))
                                       if all(s["class"] == final["class"] for s in steps[i:]))
        say(f"{name}: {final['class']} ({100 * final['probability']:.1f}%) after all {len(steps)} rows; "
            f"it has said {final['class']} since row {final['known_from_row']}")
        final["steps"] = [{k: s[k] for k in ("class", "probability")} for s in steps]
    else:
        say(f"{describe(final, labels)} (all-steps head: a prediction exists only after all {len(steps)} rows)")
    return final


def classify_idx(sess, info, args, result: dict, say) -> None:
    images = read_idx(args.idx_images, IMAGE_MAGIC)
    labels = read_idx(args.idx_labels, LABEL_MAGIC) if args.idx_labels else None
    if not len(images) or (labels is not None and len(images) != len(labels)):
        raise UserError(f"{args.idx_images} has {len(images)} images and {args.idx_labels} "
                        f"{len(labels) if labels is not None else 0} labels; they must be the same, non-zero count")
    probabilities = softmax(run_onnx(sess, preprocess(images, info)))
    if labels is None:
        for i, probs in enumerate(probabilities):
            result["predictions"].append(prediction(f"{args.idx_images}[{i}]", probs, info.class_labels))
            say(describe(result["predictions"][-1], info.class_labels))
        return
    correct = int((probabilities.argmax(1) == labels).sum())
    result["accuracy"] = correct / len(labels)
    recorded = f"; the checkpoint recorded {100 * info.test_accuracy:.2f}%" if info.test_accuracy is not None else ""
    say(f"accuracy {100 * result['accuracy']:.2f}% ({correct}/{len(labels)}) on {args.idx_images}{recorded}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python -m export.predict", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .onnx file written by `python -m export.onnx`")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...) or folders of them")
    parser.add_argument("--idx-images", help="MNIST idx image file (raw or .gz) to classify")
    parser.add_argument("--idx-labels", help="its idx label file: report the accuracy instead of each image")
    parser.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                        help="make dark-on-light images white-on-black (auto: when the border is light)")
    parser.add_argument("--stream", action="store_true", help="MODEL is a *.step.onnx: feed each image row by row")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    if args.idx_labels and not args.idx_images:
        raise UserError("--idx-labels needs --idx-images")
    if not args.images and not args.idx_images:
        raise UserError("give image files or folders, or --idx-images (see --help)")
    if args.stream and args.idx_images:
        raise UserError("--stream takes image files; --idx-images runs the whole-sequence model")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    say = (lambda line: None) if args.json else print
    if args.stream:
        sess, info, stream = streaming.open_step_model(args.model)
    else:
        (sess, info), stream = open_model(args.model), None
    result = {"model": str(args.model), "predictions": [], "errors": [], "accuracy": None}
    paths, pixels, result["errors"] = read_all(image_files(args.images), args.invert)
    for error in result["errors"]:
        say(f"skipped: {error['error']}")
    for path, image in zip(paths, pixels):
        if is_blank(image):  # a prediction is still given (the model always answers), but it means nothing
            result.setdefault("warnings", []).append({"image": str(path), "warning": BLANK_WARNING})
            print(f"warning: {path}: {BLANK_WARNING}", file=sys.stderr)
    if stream is not None:
        result["predictions"] = [stream_image(sess, stream, info, str(p), x, say) for p, x in zip(paths, pixels)]
    elif len(paths):
        for path, probs in zip(paths, softmax(run_onnx(sess, preprocess(pixels, info)))):
            result["predictions"].append(prediction(str(path), probs, info.class_labels))
            say(describe(result["predictions"][-1], info.class_labels))
    if args.idx_images:
        classify_idx(sess, info, args, result, say)
    if args.json:
        print(json.dumps(result, indent=1))
    if result["errors"]:
        first = result["errors"][0]["error"]
        rest = f"the other {len(paths)} were classified" if len(paths) else "none was classified"
        raise UserError(f"{len(result['errors'])} of {len(paths) + len(result['errors'])} images could not be read "
                        f"(first: {first}); {rest}")
    return result


if __name__ == "__main__":
    run_cli(main, broken_pipe_ok=True)
