"""Data parallelism, the part both frameworks share: which rows of a global batch each worker gets.

Every process reads the same global batches from the shared loader (one order per seed and
epoch); the `count` workers (torch: DDP ranks, one device each; JAX: the devices of the mesh)
split each global batch of `batch_size` rows into `count` contiguous shards of
`batch_size / count` rows: worker k gets rows [k * s, (k + 1) * s). The gradient is the mean
over the real rows of the global batch, so N-way data parallel computes the same step as one
process with the same global batch, up to the order of the sums (parity/tolerances.py, DP_*).

The last partial batch of an epoch (n < batch_size rows, unless --drop-last) is padded with
zero rows to batch_size and the padding is masked out of loss, gradient and accuracy. Shards
that hold only padding still take part in the collective step (their gradient is zero), so
every worker runs the same number of steps and shapes never change.
"""
from __future__ import annotations

import numpy as np

from common.errors import UserError


def check_divisible(batch_size: int, count: int, what: str) -> None:
    """The global batch must split evenly over the workers."""
    if batch_size % count:
        raise UserError(f"--batch-size {batch_size} is the global batch and must split evenly over {count} {what}; "
                        f"use a multiple of {count}")


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def padded_batch(images: np.ndarray, labels: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Pad (n, T, F), (n,) with zero rows to `size` rows; `mask` marks the n real ones (1.0)."""
    n = len(labels)
    if n == size:
        return {"images": images, "labels": labels, "mask": np.ones(size, np.float32)}
    padded = np.zeros((size, *images.shape[1:]), images.dtype)
    padded[:n] = images
    padded_labels = np.zeros(size, labels.dtype)
    padded_labels[:n] = labels
    return {"images": padded, "labels": padded_labels, "mask": (np.arange(size) < n).astype(np.float32)}


def shard(batch: dict[str, np.ndarray], index: int, count: int) -> dict[str, np.ndarray]:
    """Worker `index`'s contiguous slice of a padded global batch (its length divides by `count`)."""
    size = len(batch["mask"]) // count
    return {name: array[index * size:(index + 1) * size] for name, array in batch.items()}
