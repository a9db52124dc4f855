"""Train or evaluate the JAX models on MNIST.

    python -m jax_impl.train --variant lstm-last --epochs 1
    python -m jax_impl.train --init-from runs/X/model.safetensors --eval-only
    python -m jax_impl.train --resume runs/X
    python -m jax_impl.train --devices 2 --variant lstm-last     # data parallel (jax_impl/distributed.py)

Flags, outputs and log lines are the same as `python -m torch_impl.train`; `--help` lists them.
The model is the Flax NNX `RecurrentClassifier` (jax_impl/nn.py), trained with `nnx.Optimizer`
around Adam with torch's arithmetic, in Flax's functional form: `nnx.split` once, a pure
`jax.jit` step that merges and splits (the form Flax's performance guide recommends for small
models). Both trainers start from `common.checkpoint.initial_params(config, --seed)`.
Steps compile once: the last partial batch is padded to the batch size and masked, so its
gradients are the mean over its real rows, as in PyTorch (common/distributed.py).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

import flax
from flax import nnx

from common import training
from common.checkpoint import check_params, initial_params
from common import distributed as distributed_rows
from common.config import Config, RunOptions
from common.errors import UserError, run_cli
from jax_impl import distributed
from jax_impl.nn import RecurrentClassifier, load_state_dict, named, state_dict


def select_device(flag: str) -> jax.Device:
    """The first GPU when asked for or present (auto), else the first CPU device."""
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:  # no GPU backend installed or no GPU present
        gpus = []
    if flag == "cuda" and not gpus:
        raise UserError("--device cuda, but JAX sees no GPU (is jax[cuda] installed?); use --device cpu or auto")
    return gpus[0] if gpus and flag != "cpu" else jax.devices("cpu")[0]


def scale_by_adam_exact(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """optax.scale_by_adam (same state) with torch.optim.Adam's arithmetic:

        m = m + (1 - b1) (g - m),   v = b2 v + (1 - b2) g^2,   update = (m / c1) / (sqrt(v) / sqrt(c2) + eps)

    with the bias corrections c = 1 - b**t computed as -expm1(t log b), log b in float64. optax
    computes 1 - b**t in float32, where 0.999 rounds to 0.99900001: every update came out ~7.5e-6
    relatively smaller than torch's, which computes it in float64 (parity/test_training.py).
    """
    log_b1, log_b2 = math.log(b1), math.log(b2)

    def update(grads, state, params=None):
        mu = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        count = state.count + 1
        t = count.astype(jnp.float32)  # exact up to 2**24 steps
        c1, c2 = -jnp.expm1(t * log_b1), -jnp.expm1(t * log_b2)
        updates = jax.tree.map(lambda m, v: (m / c1) / (jnp.sqrt(v) / jnp.sqrt(c2) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(optax.scale_by_adam(b1, b2, eps).init, update)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam with PyTorch's defaults and arithmetic; the learning rate is state (set per step), not a constant."""
    def adam(learning_rate):
        optimizer = optax.chain(scale_by_adam_exact(b1=0.9, b2=0.999, eps=1e-8),
                                optax.scale_by_learning_rate(learning_rate))
        return optax.chain(optax.clip_by_global_norm(config.grad_clip), optimizer) if config.grad_clip > 0 else optimizer
    return optax.inject_hyperparams(adam)(learning_rate=config.lr)


def masked_sums(logits, labels, mask):
    """Summed cross-entropy and correct predictions over the real rows (mask 1) of a padded batch."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # (B,)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels) * mask)
    return jnp.sum(losses * mask), correct


def masked_loss(model: RecurrentClassifier, batch, count=None):
    """Summed cross-entropy of the real rows (mask 1) over `count` (default: their number, the mean),
    and the number of correct ones."""
    logits = model(batch["images"])  # (B, T, F) -> (B, classes)
    loss_sum, correct = masked_sums(logits, batch["labels"], batch["mask"])
    return loss_sum / (jnp.sum(batch["mask"]) if count is None else count), correct


def loss_and_grads(model: RecurrentClassifier, batch, mesh: Mesh | None = None):
    """((loss, correct), grads) of masked_loss, grads an nnx.State of the model's Params. With a mesh
    (data parallel): each device takes the gradient of its shard's share of the global mean, then
    one psum adds them up, so the weight gradients are all-reduced once per step, not once per
    time step inside the backward scan (docs/SCALING.md)."""
    graphdef, params = nnx.split(model, nnx.Param)

    def loss_of(params, shard, count=None):
        return masked_loss(nnx.merge(graphdef, params), shard, count)

    if mesh is None:
        return jax.value_and_grad(loss_of, has_aux=True)(params, batch)

    def local(params, shard):
        count = jax.lax.psum(jnp.sum(shard["mask"]), distributed.AXIS)  # real rows of the global batch
        return jax.lax.psum(jax.value_and_grad(loss_of, has_aux=True)(params, shard, count), distributed.AXIS)

    return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(distributed.AXIS)),
                         out_specs=PartitionSpec(), check_vma=False)(params, batch)


@partial(jax.jit, static_argnames=("graphdef", "treedef", "mesh"))
def train_step(graphdef: nnx.GraphDef, treedef, leaves: list, batch, lr, mesh: Mesh | None = None):
    """One Adam step on the masked mean cross-entropy, in Flax's functional form: `leaves` are the
    arrays of `nnx.split((model, optimizer))`'s state (flattened by `treedef`), merged here and
    returned in the same order. A flat list, not the nnx.State: flattening a State on every call
    costs host time per step (~0.5 ms at batch 1 on the 2-core CPU, docs/PERFORMANCE.md).
    `batch`: images (B, T, F), labels (B,), mask (B,); with `mesh`, sharded along it (the mean
    still runs over the global batch)."""
    model, optimizer = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
    optimizer.opt_state.hyperparams["learning_rate"][...] = lr
    (loss, correct), grads = loss_and_grads(model, batch, mesh)
    optimizer.update(model, grads)
    return jax.tree.leaves(nnx.state((model, optimizer))), {"loss": loss, "correct": correct}


@partial(jax.jit, static_argnames=("graphdef", "treedef"))
def eval_step(graphdef: nnx.GraphDef, treedef, leaves: list, batch):
    """Summed cross-entropy and correct predictions over the real rows of one batch."""
    model, _ = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
    return masked_sums(model(batch["images"]), batch["labels"], batch["mask"])


def padded_batch(images: np.ndarray, labels: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """common.distributed.padded_batch with int32 labels (JAX's default integer)."""
    return distributed_rows.padded_batch(images, labels.astype(np.int32), size)


def _is_adam(node) -> bool:
    return isinstance(node, optax.ScaleByAdamState)


class JaxBackend:
    """The Flax model and its `nnx.Optimizer`, split once into a graph definition and a state that the
    jitted steps take and return; the live modules are merged back only to read or write weights."""

    framework = "jax"

    def __init__(self, config: Config, device_flag: str = "auto", devices: int = 1):
        distributed.start(devices)
        platform = select_device(device_flag).platform
        if config.rnn_kernel == "cudnn" and platform != "gpu":
            raise UserError("--rnn-kernel cudnn runs cuDNN's LSTM, which needs a GPU; use --rnn-kernel scan on CPU")
        self.mesh = distributed.make_mesh(platform, devices)
        distributed_rows.check_divisible(config.batch_size, self.mesh.size, "devices")
        self.replicated, self.sharded = distributed.shardings(self.mesh)
        self.is_main = jax.process_index() == 0
        first = self.mesh.devices.flat[0]
        self.device = "cpu (XLA)" if first.platform == "cpu" else first.device_kind
        if self.mesh.size > 1:
            self.device += f"; data parallel over {self.mesh.size} devices, {jax.process_count()} process(es)"
        self.config = config
        model = RecurrentClassifier(config, rngs=nnx.Rngs(config.seed), platform=platform)
        load_state_dict(model, initial_params(config, config.seed), "initial weights")
        self._split(model, nnx.Optimizer(model, make_optimizer(config), wrt=nnx.Param))
        self.lr, self.lr_value = distributed.put(np.float32(config.lr), self.replicated), config.lr
        self.eval_size = 0  # evaluation batches are padded to the largest seen (the first, in practice)

    def _split(self, model: RecurrentClassifier, optimizer: nnx.Optimizer) -> None:
        # Committed to the mesh like everything the step returns: the same signature, one compilation.
        self.graphdef, state = nnx.split((model, optimizer))
        leaves, self.treedef = jax.tree.flatten(state)
        self.leaves = [distributed.put(distributed.to_host(value), self.replicated) for value in leaves]

    def modules(self) -> tuple[RecurrentClassifier, nnx.Optimizer]:
        """The live model and optimizer, holding the current state."""
        return nnx.merge(self.graphdef, jax.tree.unflatten(self.treedef, self.leaves))

    def device_batch(self, images, labels, size: int) -> dict[str, jax.Array]:
        """The padded global batch, split along the mesh (each device holds size / devices rows)."""
        return {name: distributed.put(value, self.sharded) for name, value in padded_batch(images, labels, size).items()}

    def set_learning_rate(self, lr: float) -> None:
        # A committed float32 array of fixed type: a new value, never a new compilation.
        if lr != self.lr_value:
            self.lr, self.lr_value = distributed.put(np.float32(lr), self.replicated), lr

    def train_step(self, images, labels, lr):
        self.set_learning_rate(lr)
        batch = self.device_batch(images, labels, self.config.batch_size)
        mesh = self.mesh if self.mesh.size > 1 else None  # one device: the plain step
        self.leaves, metrics = train_step(self.graphdef, self.treedef, self.leaves, batch, self.lr, mesh)
        return float(distributed.to_host(metrics["loss"])), int(distributed.to_host(metrics["correct"]))

    def eval_batch(self, images, labels):
        self.eval_size = distributed_rows.round_up(max(self.eval_size, len(labels)), self.mesh.size)
        loss, correct = eval_step(self.graphdef, self.treedef, self.leaves,
                                  self.device_batch(images, labels, self.eval_size))
        return float(distributed.to_host(loss)), int(distributed.to_host(correct))

    def agree_stop(self, signum: int) -> int:
        return distributed.max_over_processes(signum)

    def get_params(self):
        return state_dict(self.modules()[0], read=distributed.to_host)

    def set_params(self, params):
        check_params(params, self.config, "weights")
        model, optimizer = self.modules()
        load_state_dict(model, params)
        self._split(model, optimizer)

    def get_adam(self) -> dict[str, np.ndarray]:
        """Adam's state under the checkpoint's names (PyTorch's: step, exp_avg, exp_avg_sq)."""
        adam_state = adam_of(self.modules()[1])
        adam = {"adam.step": distributed.to_host(adam_state.count[...]).astype(np.float32)}
        for key, moments in (("exp_avg", adam_state.mu), ("exp_avg_sq", adam_state.nu)):
            for name, variable in named(moments).items():
                adam[f"adam.{key}.{name}"] = distributed.to_host(variable[...])
        return adam

    def set_adam(self, adam: dict[str, np.ndarray]) -> None:
        model, optimizer = self.modules()
        adam_state, step = adam_of(optimizer), np.int32(adam["adam.step"])
        for counter in (adam_state.count, optimizer.opt_state.count):  # Adam's and inject_hyperparams' own
            counter[...] = jnp.asarray(step)
        optimizer.step[...] = jnp.asarray(step, optimizer.step[...].dtype)
        for key, moments in (("exp_avg", adam_state.mu), ("exp_avg_sq", adam_state.nu)):
            for name, variable in named(moments).items():
                variable[...] = jnp.asarray(np.asarray(adam[f"adam.{key}.{name}"], np.float32))
        self._split(model, optimizer)

    def versions(self):
        return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}


def adam_of(optimizer: nnx.Optimizer) -> optax.ScaleByAdamState:
    """The ScaleByAdamState inside the optimizer's chain (its moments are States of the model's paths)."""
    (state,) = [node for node in jax.tree.leaves(optimizer.opt_state, is_leaf=_is_adam) if _is_adam(node)]
    return state


def make_backend(config: Config, options: RunOptions) -> JaxBackend:
    if options.dist_backend != "auto":
        raise UserError(f"--dist-backend {options.dist_backend} is for torchrun; JAX chooses its own collectives")
    return JaxBackend(config, options.device, options.devices)


def train(config: Config, options: RunOptions | None = None, **datasets) -> dict:
    """Importable entry point: train (or evaluate) and return the summary."""
    options = options or RunOptions()
    return training.train(lambda c, _device: make_backend(c, options), config, options, "jax", **datasets)


def main(argv: Sequence[str] | None = None) -> dict:
    return training.run("jax", make_backend, argv)


if __name__ == "__main__":
    run_cli(main)
