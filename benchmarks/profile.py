"""Where a training step's time goes, in both frameworks: forward, backward, Adam, and JAX's loop.

    python -m benchmarks.profile                          # lstm-last, batch 64
    python -m benchmarks.profile --variant lstm --batch-size 256 --json profile.json

Each row is a piece of the trainer's step timed on its own, all in one process, in rotation
(blocks of --block-seconds, median over --rounds), on the CPU:
- step: the whole training step (as benchmarks.speed); forward+backward: loss and gradients,
  no optimizer; forward: the loss alone; adam: the optimizer update alone;
- JAX only: "matmuls only", the same scan with every step's two matmuls and none of the gate
  math (forward and backward), which bounds what the loop's GEMMs cost inside XLA's while loop.
The differences between rows attribute the step's time; see docs/PERFORMANCE.md.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from common.report import markdown_table
from common.timing import add_timing_flags, check_timing_flags, measure_rotated, write_json
from common.config import Config, parse_variant
from common.cli import Parser
from common.errors import UserError, run_cli


def torch_pieces(config: Config, images, labels) -> dict[str, Callable]:
    import torch
    import torch.nn.functional as F
    from torch_impl.train import TorchBackend
    backend = TorchBackend(config, "cpu")
    model, optimizer = backend.model, backend.optimizer
    x, y = torch.from_numpy(images), torch.from_numpy(labels)

    def forward():
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    def forward_backward():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.item()
    forward_backward()  # gradients exist for the optimizer-only row
    return {"step": lambda: backend.train_step(images, labels, config.lr), "forward+backward": forward_backward,
            "forward": forward, "adam": optimizer.step}


def jax_pieces(config: Config, images, labels) -> dict[str, Callable]:
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax_impl import train as jax_train
    backend = jax_train.JaxBackend(config, "cpu")
    batch = jax_train.padded_batch(images, labels, len(labels))
    graphdef, state = nnx.split(backend.modules()[0])
    grad = jax.jit(lambda state, batch: jax_train.loss_and_grads(nnx.merge(graphdef, state), batch))
    loss = jax.jit(lambda state, batch: jax_train.masked_loss(nnx.merge(graphdef, state), batch))
    optimizer = jax_train.make_optimizer(config)
    opt_state = optimizer.init(state)
    (_, _), grads = grad(state, batch)
    adam = jax.jit(lambda g, s, p: optimizer.update(g, s, p))
    params = {name: jnp.asarray(value) for name, value in backend.get_params().items()}

    def matmuls_only(params, x):  # the scan's GEMMs, none of the gate math
        xs, hidden = jnp.swapaxes(x, 0, 1), config.hidden_size
        for k in range(config.num_layers):
            w_ih, w_hh = params[f"rnn.weight_ih_l{k}"].T, params[f"rnn.weight_hh_l{k}"].T

            def step(h, x_t, w_ih=w_ih, w_hh=w_hh):
                h = (x_t @ w_ih + h @ w_hh)[:, :hidden]  # (B, G*H) -> (B, H): keeps the shapes
                return h, h
            _, xs = jax.lax.scan(step, jnp.zeros((xs.shape[1], hidden), xs.dtype), xs)
        return jnp.sum(xs)
    gemms = jax.jit(jax.grad(matmuls_only))

    def block(fn):
        return lambda: jax.block_until_ready(fn())
    return {"step": lambda: backend.train_step(images, labels, config.lr),
            "forward+backward": block(lambda: grad(state, batch)),
            "forward": block(lambda: loss(state, batch)),
            "adam": block(lambda: adam(grads, opt_state, state)),
            "matmuls only (fwd+bwd)": block(lambda: gemms(params, batch["images"]))}


def profile(variant: str, batch_size: int, rounds: int, block_seconds: float) -> dict:
    cell, head = parse_variant(variant)
    config = Config(cell=cell, head=head, batch_size=batch_size)
    rng = np.random.default_rng(0)
    images = rng.random((batch_size, config.seq_len, config.input_size), dtype=np.float32)
    labels = rng.integers(0, config.num_classes, batch_size).astype(np.int64)
    pieces = {("torch", k): v for k, v in torch_pieces(config, images, labels).items()}
    pieces.update({("jax", k): v for k, v in jax_pieces(config, images, labels).items()})
    load = os.getloadavg()[0]
    medians = measure_rotated(pieces, rounds, block_seconds)
    return {"variant": variant, "batch_size": batch_size, "load_before": load, "load_after": os.getloadavg()[0],
            "ms": {f"{fw} {k}": 1e3 * v for (fw, k), v in medians.items()}}


def table(report: dict) -> str:
    from common.summary import cpu_name
    rows = []
    for name in dict.fromkeys(key.split(" ", 1)[1] for key in report["ms"]):
        t, j = report["ms"].get(f"torch {name}"), report["ms"].get(f"jax {name}")
        rows.append([name, f"{t:.2f}" if t else "-", f"{j:.2f}" if j else "-", f"{j / t:.2f}x" if t and j else "-"])
    return (markdown_table(["piece", "torch ms", "jax ms", "jax/torch time"], rows)
            + f"\n\n{report['variant']}, batch {report['batch_size']}, {cpu_name()}; load {report['load_before']:.2f}"
            f" -> {report['load_after']:.2f}")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--variant", default="lstm-last")
    parser.add_argument("--batch-size", type=int, default=64)
    add_timing_flags(parser, rounds=5)
    args = parser.parse_args(argv)
    check_timing_flags(args)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    report = profile(args.variant, args.batch_size, args.rounds, args.block_seconds)
    print(table(report))
    write_json(args, report)
    return report


if __name__ == "__main__":
    run_cli(main)
