"""exact_float32: each program sets only its own framework's matmul precision, and imports only it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from common.precision import exact_float32


@pytest.mark.parametrize("framework, other", [("torch", "jax"), ("jax", "torch")])
def test_a_trainer_imports_only_its_framework(framework, other):
    code = ("import sys; from common.precision import exact_float32; "
            f"exact_float32({framework!r}); print({framework!r} in sys.modules, {other!r} in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["True", "False"]


def test_both_frameworks_by_default_and_names_are_checked():
    import jax
    import torch

    exact_float32()
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert jax.config.jax_default_matmul_precision == "highest"
    with pytest.raises(ValueError, match="unknown frameworks \\['flax'\\]"):
        exact_float32("flax")
