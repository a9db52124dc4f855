"""Classify digit images with an exported model; needs only NumPy, onnxruntime and PIL.

    python -m export.predict model.onnx digit.png [more.png ...]
    python -m export.predict model.onnx --idx-images t10k-images-idx3-ubyte.gz --idx-labels t10k-labels-idx1-ubyte.gz

Preprocessing comes from the model's metadata (written by `python -m export.onnx`): pixels
scaled by 1/255, normalised if the model was trained so. Any image is made MNIST-like: greyscale
(transparent areas become white), inverted when its border is light (MNIST is a white digit on
black; --invert overrides), and, unless it already is 28x28, the digit's bounding box scaled to
fit 20x20 and centred by its centre of mass in a 28x28 frame, as MNIST was made.
No torch or JAX here: this file and what it imports must run on a machine without them.
"""
from __future__ import annotations

import argparse
import gzip
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from PIL import Image, UnidentifiedImageError

from common.data import IMAGE_MAGIC, LABEL_MAGIC, parse_idx
from common.errors import UserError, run_cli
from export import metadata

SIDE = 28
DIGIT_BOX = 20  # MNIST digits were scaled into a 20x20 box, then centred in 28x28
EVAL_BATCH = 1000


def open_model(path: str | Path) -> tuple[ort.InferenceSession, metadata.ModelInfo]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model {path} not found")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own pybind exception types
        raise UserError(f"{path} is not a loadable ONNX model ({str(error).splitlines()[0][:200]})") from None
    info = metadata.parse(session.get_modelmeta().custom_metadata_map, str(path))
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 3 or list(inputs[0].shape[1:]) != [SIDE, SIDE] \
            or inputs[0].type != "tensor(float)":
        found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise UserError(f"{path} takes {found}; predict needs one float input [batch, {SIDE}, {SIDE}]")
    return session, info


def preprocess(images_u8: np.ndarray, info: metadata.ModelInfo) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32, the same arithmetic as common.data.prepare."""
    pre = info.preprocessing
    images = images_u8.astype(np.float32) / np.float32(round(1 / pre.scale))
    if pre.normalize:
        images = (images - np.float32(pre.mean)) / np.float32(pre.std)
    return images


def read_image(path: str | Path, invert: str = "auto") -> np.ndarray:
    """Any image file -> uint8 (28, 28), white digit on black."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise UserError(f"image {path} not found") from None
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image PIL can read (PNG, JPEG, BMP, ...)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read image {path}: {error}") from None
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if invert == "yes" or (invert == "auto" and border.mean() > 127):  # dark digit on light paper
        gray = 255 - gray
    return gray if gray.shape == (SIDE, SIDE) else fit_like_mnist(gray)


def fit_like_mnist(gray: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale into 20x20 keeping the aspect, centre of mass at the centre of 28x28."""
    ink = np.argwhere(gray > 0.2 * gray.max()) if gray.max() > 0 else np.empty((0, 2))
    if len(ink) == 0:  # blank image: nothing to centre
        return np.asarray(Image.fromarray(gray).resize((SIDE, SIDE), Image.Resampling.BOX))
    (top, left), (bottom, right) = ink.min(0), ink.max(0) + 1
    crop = Image.fromarray(gray[top:bottom, left:right])
    scale = DIGIT_BOX / max(crop.size)
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    digit = np.asarray(crop.resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
    rows, cols = np.indices(digit.shape)
    mass = digit.sum() or 1.0
    centre = ((rows * digit).sum() / mass, (cols * digit).sum() / mass)
    top = int(np.clip(round(SIDE / 2 - centre[0]), 0, SIDE - digit.shape[0]))
    left = int(np.clip(round(SIDE / 2 - centre[1]), 0, SIDE - digit.shape[1]))
    canvas = np.zeros((SIDE, SIDE), dtype=np.uint8)
    canvas[top:top + digit.shape[0], left:left + digit.shape[1]] = np.clip(digit, 0, 255).round().astype(np.uint8)
    return canvas


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: .gz or not, by content
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise UserError(f"idx file {path} not found") from None
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"cannot read idx file {path}: {error}") from None
    return parse_idx(raw, magic, str(path))


def logits_of(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    step = 1 if session.get_inputs()[0].shape[0] == 1 else EVAL_BATCH  # a fixed batch of 1 runs one by one
    return np.concatenate([session.run(None, {name: images[i:i + step]})[0] for i in range(0, len(images), step)])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage text
        raise UserError(f"{message} (see --help)")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = _Parser(prog="python -m export.predict", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .onnx file written by `python -m export.onnx`")
    parser.add_argument("images", nargs="*", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--idx-images", help="MNIST idx image file (raw or .gz) to evaluate")
    parser.add_argument("--idx-labels", help="its idx label file")
    parser.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                        help="make dark-on-light images white-on-black (auto: when the border is light)")
    args = parser.parse_args(argv)
    if bool(args.idx_images) != bool(args.idx_labels):
        raise UserError("--idx-images and --idx-labels go together")
    if not args.images and not args.idx_images:
        raise UserError("give image files, or --idx-images and --idx-labels (see --help)")
    session, info = open_model(args.model)
    result = {"predictions": [], "accuracy": None}
    if args.images:
        pixels = np.stack([read_image(path, args.invert) for path in args.images])
        probabilities = softmax(logits_of(session, preprocess(pixels, info)))
        names = [info.class_labels[k] if k < len(info.class_labels) else str(k) for k in range(probabilities.shape[1])]
        for path, probs in zip(args.images, probabilities):
            best = int(probs.argmax())
            print(f"{path}: {names[best]} ({100 * probs[best]:.1f}%) | "
                  + " ".join(f"{name}:{p:.3f}" for name, p in zip(names, probs)))
            result["predictions"].append({"image": str(path), "class": names[best], "probabilities": probs.tolist()})
    if args.idx_images:
        images, labels = read_idx(args.idx_images, IMAGE_MAGIC), read_idx(args.idx_labels, LABEL_MAGIC)
        if len(images) != len(labels) or not len(labels):
            raise UserError(f"{args.idx_images} has {len(images)} images and {args.idx_labels} {len(labels)} labels; "
                            "they must be the same, non-zero count")
        predicted = logits_of(session, preprocess(images, info)).argmax(1)
        correct = int((predicted == labels).sum())
        result["accuracy"] = correct / len(labels)
        recorded = f"; the checkpoint recorded {100 * info.test_accuracy:.2f}%" if info.test_accuracy is not None else ""
        print(f"accuracy {100 * result['accuracy']:.2f}% ({correct}/{len(labels)}) on {args.idx_images}{recorded}")
    return result


if __name__ == "__main__":
    run_cli(main)
