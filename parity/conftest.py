"""Settings every parity test needs, applied before any test runs.

On a GPU the tolerances in parity.tolerances hold only with TF32 off in both frameworks (it
rounds matmul inputs to 10 mantissa bits, ~1e-3 relative): `exact_float32()` sets
torch.backends.cuda.matmul.allow_tf32 = False, torch.backends.cudnn.allow_tf32 = False and
jax_default_matmul_precision = "highest", so `pytest parity/` runs on a GPU machine unchanged.
On CPU these are no-ops.
"""
from __future__ import annotations

import os

# Before JAX starts: on a GPU, JAX takes 75% of its memory per process by default, and
# `pytest -n 8 parity/` then ran out of memory in 128 tests (H200, measured). No effect on CPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from common.precision import exact_float32  # noqa: E402

exact_float32()


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Torch on one thread for the parity tests: their models are tiny, and on a 2-core machine
    shared with other jobs OpenMP's barriers made a tiny training step ~100x slower with two
    threads (0.44 s vs 0.004 s measured). Restored afterwards for the rest of the session."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
