"""The NumPy-only MNIST loader: parsing, errors, batching, and equality with torchvision."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import data
from common.errors import UserError
from tests.conftest import idx_bytes, write_idx_dir


def test_common_imports_neither_torch_nor_jax():
    code = ("import sys, common.data, common.config, common.checkpoint, common.training;"
            "bad = [m for m in ('torch', 'jax', 'flax') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("gz", [False, True])
def test_reads_raw_and_gz(tmp_path, gz):
    folder = write_idx_dir(tmp_path / "m", n_train=10, n_test=7, gz=gz)
    train = data.load_split("train", folder)
    assert train.images.shape == (10, 28, 28) and train.images.dtype == np.float32
    assert train.labels.shape == (10,) and train.labels.dtype == np.int64
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert len(data.load_split("test", folder)) == 7


def test_torchvision_layout_and_normalisation(tmp_path):
    folder = write_idx_dir(tmp_path / "root" / "MNIST" / "raw")
    plain = data.load_split("test", tmp_path / "root")
    normalized = data.load_split("test", tmp_path / "root", normalize=True)
    np.testing.assert_allclose(normalized.images, (plain.images - data.MEAN) / data.STD, rtol=1e-6, atol=1e-6)
    assert folder.is_dir()


def test_limit_and_limit_too_large(idx_dir):
    assert len(data.load_split("train", idx_dir, limit=5)) == 5
    with pytest.raises(UserError, match="exceeds the 64 train images"):
        data.load_split("train", idx_dir, limit=65)


def test_missing_directory_says_how_to_fetch(tmp_path):
    with pytest.raises(UserError, match="common.data fetch"):
        data.load_split("train", tmp_path / "nowhere")


def test_missing_file(idx_dir):
    (idx_dir / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="train-labels-idx1-ubyte not found"):
        data.load_split("train", idx_dir)


def test_non_idx_file(idx_dir):
    (idx_dir / "train-images-idx3-ubyte").write_text("hello, this is not MNIST")
    with pytest.raises(UserError, match="magic number"):
        data.load_split("train", idx_dir)


def test_wrong_magic(idx_dir):
    labels = (idx_dir / "t10k-labels-idx1-ubyte").read_bytes()
    (idx_dir / "t10k-images-idx3-ubyte").write_bytes(labels)  # a label file where images belong
    with pytest.raises(UserError, match="magic number 0x801, expected 0x803"):
        data.load_split("test", idx_dir)


def test_truncated(idx_dir):
    path = idx_dir / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated"):
        data.load_split("train", idx_dir)


def test_corrupt_gzip(tmp_path):
    folder = write_idx_dir(tmp_path / "m", gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UserError, match="cannot read"):
        data.load_split("train", folder)


def test_wrong_image_size(idx_dir):
    array = np.zeros((4, 20, 20), np.uint8)
    (idx_dir / "train-images-idx3-ubyte").write_bytes(idx_bytes(array)[:16] + array.tobytes())
    with pytest.raises(UserError, match="20x20 images"):
        data.load_split("train", idx_dir)


def test_count_mismatch(idx_dir):
    (idx_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(63, np.uint8)))
    with pytest.raises(UserError, match="64 images but 63 labels"):
        data.load_split("train", idx_dir)


def test_label_out_of_range(idx_dir):
    (idx_dir / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(64, 10, np.uint8)))
    with pytest.raises(UserError, match="label 10"):
        data.load_split("train", idx_dir)


def test_batches_are_deterministic_cover_everything_and_differ_per_epoch():
    dataset = data.synthetic(50, seed=3)
    epoch0 = list(data.batches(dataset, 16, shuffle=True, seed=7, epoch=0))
    again = list(data.batches(dataset, 16, shuffle=True, seed=7, epoch=0))
    epoch1 = list(data.batches(dataset, 16, shuffle=True, seed=7, epoch=1))
    assert [len(y) for _, y in epoch0] == [16, 16, 16, 2]
    for (x0, y0), (x1, y1) in zip(epoch0, again):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)
    assert sorted(np.concatenate([y for _, y in epoch0])) == sorted(dataset.labels)
    assert not np.array_equal(epoch0[0][1], epoch1[0][1])
    assert [len(y) for _, y in data.batches(dataset, 16, drop_last=True)] == [16, 16, 16]
    resumed = list(data.batches(dataset, 16, shuffle=True, seed=7, epoch=0, start=2))
    np.testing.assert_array_equal(resumed[0][0], epoch0[2][0])


def test_synthetic_is_learnable_shape():
    dataset = data.synthetic(20, seq_len=5, input_size=3)
    assert dataset.images.shape == (20, 5, 3) and dataset.images.dtype == np.float32


def test_fetch_is_a_no_op_when_files_verify(mnist_dir):
    assert data.fetch(mnist_dir) == mnist_dir
    assert data.verify(mnist_dir) == []


def test_verify_names_the_bad_file(tmp_path):
    folder = write_idx_dir(tmp_path / "m")
    problems = data.verify(folder)
    assert any("train-images-idx3-ubyte" in p and "sha256" in p for p in problems)


def test_real_mnist_equals_torchvision(mnist_dir, tmp_path):
    import torchvision
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.SHA256:
        (raw / name).symlink_to(data.find_file(mnist_dir, name).resolve())
    for split, train in (("train", True), ("test", False)):
        reference = torchvision.datasets.MNIST(str(tmp_path), train=train, download=False)
        ours = data.load_split(split, mnist_dir)
        np.testing.assert_array_equal(ours.images, reference.data.numpy().astype(np.float32) / 255.0)
        np.testing.assert_array_equal(ours.labels, reference.targets.numpy())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from([data.IMAGE_MAGIC, data.LABEL_MAGIC]),
       st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6), st.booleans())
def test_fuzzed_idx_bytes_fail_only_with_our_error(blob, magic, flips, valid_start):
    if valid_start:  # a valid file, then mutated: flipped bytes and a random cut
        shape = (3, 28, 28) if magic == data.IMAGE_MAGIC else (3,)
        good = bytearray(idx_bytes(np.arange(np.prod(shape)).reshape(shape) % 10))
        for position, value in flips:
            good[position % len(good)] = value
        blob = bytes(good[: len(blob) % (len(good) + 1)])
    try:
        array = data.parse_idx(blob, magic)
    except UserError:
        return
    assert array.dtype == np.uint8 and array.ndim == (3 if magic == data.IMAGE_MAGIC else 1)
