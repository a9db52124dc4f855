"""Weights between the frameworks: a torch state_dict <-> a JAX params dict, both keyed by PyTorch's names.

    params = torch_to_jax(model.state_dict(), config)      # {name: jax.Array}
    model.load_state_dict(jax_to_torch(params, config))     # {name: torch.Tensor}

The JAX model keeps PyTorch's names, shapes and gate order, so a conversion is a copy; both
directions assert the key count and every shape against `common.checkpoint.param_shapes`, so a
model of another cell, head or size fails loudly instead of broadcasting. Round trips are
bit-exact (parity/test_convert.py).
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import torch

from common.checkpoint import param_shapes
from common.config import Config


def _check(params: Mapping, config: Config, source: str) -> dict[str, tuple[int, ...]]:
    expected = param_shapes(config)
    assert len(params) == len(expected), \
        f"{source}: {len(params)} tensors, a {config.variant} model has {len(expected)}"
    for name, shape in expected.items():
        assert name in params, f"{source}: no {name}"
        assert tuple(params[name].shape) == shape, f"{source}: {name} is {tuple(params[name].shape)}, expected {shape}"
    return expected


def torch_to_jax(state_dict: Mapping[str, torch.Tensor], config: Config) -> dict[str, jax.Array]:
    """A torch state_dict -> JAX params (float32, in param_shapes order)."""
    expected = _check(state_dict, config, "torch state_dict")
    return {name: jnp.asarray(state_dict[name].detach().cpu().numpy(), dtype=jnp.float32) for name in expected}


def jax_to_torch(params: Mapping[str, jax.Array], config: Config) -> dict[str, torch.Tensor]:
    """JAX params -> a torch state_dict (CPU float32 tensors; load_state_dict moves them)."""
    expected = _check(params, config, "JAX params")
    # np.array copies: torch.from_numpy on a read-only JAX buffer would share (and warn about) it.
    return {name: torch.from_numpy(np.array(params[name], dtype=np.float32)) for name in expected}
