"""Images in, model input out: any image file (or an MNIST idx file) -> the 28x28 arrays a model takes.
NumPy and PIL only; `export.predict` and the browser page (export/web/app.js, the same steps in
JavaScript) prepare digits this way.

Any image is made MNIST-like: greyscale (transparent areas become white), inverted when its
border is light (MNIST is a white digit on black), and, unless it already is 28x28, the digit's
bounding box scaled to fit 20x20 and centred by its centre of mass in a 28x28 frame, as MNIST
was made. Pixels are then scaled by 1/255 and normalised if the model's metadata says so.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.data import parse_idx
from common.errors import UserError
from export import metadata

SIDE = 28
DIGIT_BOX = 20  # MNIST digits were scaled into a 20x20 box, then centred in 28x28
INK_THRESHOLD = 0.2  # pixels above this fraction of the brightest count as the digit when cropping
# No pixel brighter than this (of 255, after inversion): no digit drawn; the page (app.js) uses it too.
BLANK_BELOW = 26
BLANK_WARNING = "the image is blank (no ink); its prediction means nothing: draw or give a digit"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def image_files(paths: list[str]) -> list[Path]:
    """The files named, with each folder replaced by the image files in it (sorted, not recursive)."""
    found = []
    for name in map(Path, paths):
        if name.is_dir():
            inside = sorted(p for p in name.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise UserError(f"folder {name} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        else:
            found.append(name)
    return found


def is_blank(pixels_u8: np.ndarray) -> bool:
    """A white-on-black uint8 image with no ink: nothing for the model to read."""
    return int(pixels_u8.max(initial=0)) < BLANK_BELOW


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
    ink = np.argwhere(gray > INK_THRESHOLD * gray.max()) if gray.max() > 0 else np.empty((0, 2))
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


