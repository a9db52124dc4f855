"""Program-wide numeric settings, applied explicitly by the programs that need them.

Importing a model never changes a global setting; the trainers, the parity suite, the export
and the benchmarks call `exact_float32()` once at start-up instead.
"""
from __future__ import annotations

from common.config import FRAMEWORKS


def exact_float32(*frameworks: str) -> None:
    """True float32 matmuls on GPU in `frameworks` (default: both): TF32 rounds matmul inputs to
    10 mantissa bits (~1e-3 relative), far beyond the parity tolerances. No effect on CPU, where
    both frameworks compute in float32 anyway. A trainer names its own framework, so a torch run
    never imports JAX, nor a JAX run torch."""
    unknown = set(frameworks) - set(FRAMEWORKS)
    if unknown:
        raise ValueError(f"unknown frameworks {sorted(unknown)}; choose from {FRAMEWORKS}")
    if "torch" in (frameworks or FRAMEWORKS):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if "jax" in (frameworks or FRAMEWORKS):
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
