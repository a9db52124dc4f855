"""Program-wide numeric settings, applied explicitly by the programs that need them.

Importing a model never changes a global setting; the trainers, the parity suite, the export
and the benchmarks call `exact_float32()` once at start-up instead.
"""
from __future__ import annotations


def exact_float32() -> None:
    """True float32 matmuls on GPU in both frameworks: TF32 rounds matmul inputs to 10 mantissa
    bits (~1e-3 relative), far beyond the parity tolerances. No effect on CPU, where both
    frameworks compute in float32 anyway. Imports lazily so a torch-only or JAX-only program
    pays for one framework only."""
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if importlib.util.find_spec("jax") is not None:
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
