"""The measurements behind the parity tests and `python -m parity.report`, in one place.

Each function runs one check on both frameworks (and ONNX) and returns the measured differences
as plain floats; the tests assert them against `parity.tolerances`, the report tabulates them.

    from parity import measure
    model = measure.torch_model(config)                    # torch's init; JAX gets a copy
    measure.forward_diffs(model, config, images)           # {"out", "h_n", ["c_n",] "logits"}: max abs
    measure.gradient_errors(model, config, images, labels) # {name: relative error}, "loss": abs
    measure.training_gaps(config, dataset, steps=20)       # per step: loss and max param differences
    measure.adam_errors()                                  # each Adam alone vs exact float64 Adam
    measure.onnx_diffs(measure.onnx_session(model, config), model, config, images)

Torch runs on CUDA when present and JAX on its default device, so on a GPU machine this compares
cuDNN with XLA; `common.precision.exact_float32()` must run first there (parity/conftest.py does it).
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
from functools import partial
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import optax
import torch
from flax import nnx
import torch.nn.functional as F

from common import data
from common.config import CELLS, HEADS, Config
from common.training import learning_rate
from export import runtime as onnx_runtime
from export.onnx import to_onnx
from jax_impl.nn import classifier, named
from jax_impl.train import JaxBackend, loss_and_grads, padded_batch, make_optimizer as jax_make_optimizer
from parity.convert import torch_to_jax
from parity.tolerances import GRAD_NORM_FLOOR
from torch_impl.model import RecurrentClassifier
from torch_impl.train import TorchBackend, make_optimizer as torch_make_optimizer, train_step as torch_train_step

COMBOS = [(cell, head) for cell in CELLS for head in HEADS]
COMBO_IDS = [f"{cell}-{head}" for cell, head in COMBOS]
TORCH_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def config_for(cell: str, head: str, hidden_size: int, num_layers: int, seq_len: int = 28, input_size: int = 28,
               **values) -> Config:
    return Config(cell=cell, head=head, hidden_size=hidden_size, num_layers=num_layers, seq_len=seq_len,
                  input_size=input_size, **values)


def torch_model(config: Config, seed: int = 0) -> RecurrentClassifier:
    """A torch model with torch's own initialisation (the weights every check copies to JAX)."""
    torch.manual_seed(seed)
    return RecurrentClassifier(config).to(TORCH_DEVICE)


def random_batch(config: Config, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal inputs (B, T, F): wider than MNIST's [0, 1], so gates leave their linear range."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, config.seq_len, config.input_size), dtype=np.float32)
    return images, rng.integers(0, config.num_classes, batch).astype(np.int64)


def to_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def max_abs_diff(a, b) -> float:
    a, b = to_numpy(a), to_numpy(b)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"  # broadcasting would hide a bug
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def relative_error(reference, other) -> float:
    """||reference - other|| / max(||reference||, GRAD_NORM_FLOOR): one number per tensor, blind to
    elementwise noise on entries that are ~0 in both."""
    reference, other = to_numpy(reference).astype(np.float64), to_numpy(other).astype(np.float64)
    assert reference.shape == other.shape, f"shapes differ: {reference.shape} vs {other.shape}"
    return float(np.linalg.norm(reference - other) / max(np.linalg.norm(reference), GRAD_NORM_FLOOR))


# ---- forward --------------------------------------------------------------------------------------

def jax_classifier(config: Config, params: dict, kernel: str | None = None) -> tuple[nnx.GraphDef, nnx.State]:
    """The Flax classifier holding `params` (torch's names), split for a jitted call; `kernel`
    overrides config.rnn_kernel."""
    return nnx.split(classifier(dataclasses.replace(config, rnn_kernel=kernel or config.rnn_kernel), params))


@partial(jax.jit, static_argnames=("graphdef", "unroll"))
def _jax_forward(graphdef: nnx.GraphDef, state: nnx.State, x, unroll: bool = False):
    # The recurrent outputs and the logits under one jit: one compilation per shape instead of two
    # (the forward grid's run time is almost all XLA compilation).
    model = nnx.merge(graphdef, state)
    out, final = model.recurrent(x, unroll=unroll)
    h_n, c_n = final if isinstance(final, tuple) else (final, None)
    return out, h_n, c_n, model(x, unroll=unroll)


def forward_diffs(model: RecurrentClassifier, config: Config, images: np.ndarray,
                  jax_params: dict | None = None, kernel: str | None = None, unroll: bool = False) -> dict[str, float]:
    """Max abs difference of every step's output, the final h (and c) of every layer, and the logits.
    JAX runs on a copy of the torch model's weights unless `jax_params` are given; `kernel` and
    `unroll` pick its form (jax_impl.model); the JAX side is the Flax classifier (jax_impl.nn)."""
    params = torch_to_jax(model.state_dict(), config) if jax_params is None else jax_params
    with torch.no_grad():
        x = torch.from_numpy(images).to(TORCH_DEVICE)
        out, state = model.recurrent(x)
        h_n, c_n = state if config.cell == "lstm" else (state, None)
        logits = model(x)
    jax_out, jax_h, jax_c, jax_logits = _jax_forward(*jax_classifier(config, params, kernel), images, unroll)
    diffs = {"out": max_abs_diff(out, jax_out), "h_n": max_abs_diff(h_n, jax_h)}
    if config.cell == "lstm":
        diffs["c_n"] = max_abs_diff(c_n, jax_c)
    else:
        assert jax_c is None, "only the LSTM has a cell state"
    diffs["logits"] = max_abs_diff(logits, jax_logits)
    return diffs


# ---- gradients ------------------------------------------------------------------------------------

@partial(jax.jit, static_argnames="graphdef")
def _jax_loss_and_grads(graphdef: nnx.GraphDef, state: nnx.State, batch):
    # The JAX trainer's own loss and gradients (masked mean cross-entropy), so this checks what training differentiates.
    (loss, _), grads = loss_and_grads(nnx.merge(graphdef, state), batch)
    return loss, named(grads)


def gradient_errors(model: RecurrentClassifier, config: Config, images: np.ndarray,
                    labels: np.ndarray) -> dict[str, float]:
    """Relative error of d(mean cross-entropy)/d(parameter) for every parameter, and the loss's abs difference."""
    params = torch_to_jax(model.state_dict(), config)
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(torch.from_numpy(images).to(TORCH_DEVICE)),
                           torch.from_numpy(labels).to(TORCH_DEVICE))  # as torch_impl.train.train_step
    loss.backward()
    jax_loss, jax_grads = _jax_loss_and_grads(*jax_classifier(config, params), padded_batch(images, labels, len(labels)))
    errors = {name: relative_error(param.grad, jax_grads[name][...]) for name, param in model.named_parameters()}
    assert len(errors) == len(jax_grads), "every parameter has a gradient in both frameworks"
    return {"loss": abs(loss.item() - float(jax_loss)), **errors}


# ---- training -------------------------------------------------------------------------------------

def loader(config: Config, dataset: data.Dataset) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The training loop's batches (common.data, shuffled by (seed, epoch)), epoch after epoch."""
    for epoch in itertools.count():
        yield from data.batches(dataset, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                                drop_last=config.drop_last)


def max_param_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert sorted(a) == sorted(b), "the same parameter names"  # jit returns dicts in sorted order
    return max(max_abs_diff(a[name], b[name]) for name in a)


def backends(config: Config) -> tuple[TorchBackend, JaxBackend]:
    """The two real trainers' backends, both holding torch's own initialisation for config.seed (the
    weights the training tolerances were measured from; the trainers' default start,
    common.checkpoint.initial_params, is the same in both frameworks too)."""
    torch_backend, jax_backend = TorchBackend(config), JaxBackend(config)
    weights = {name: to_numpy(value) for name, value in torch_model(config, config.seed).state_dict().items()}
    for backend in (torch_backend, jax_backend):
        backend.set_params(weights)
    return torch_backend, jax_backend


def _float64_twin(config: Config, params: dict[str, np.ndarray]):
    """Torch's model and Adam in float64, from the same weights: what exact arithmetic would do."""
    model = RecurrentClassifier(config).double().to(TORCH_DEVICE)
    model.load_state_dict({name: torch.from_numpy(value.astype(np.float64)) for name, value in params.items()})
    return model, torch_make_optimizer(model, config)


def training_gaps(config: Config, dataset: data.Dataset, steps: int, *,
                  reference: bool = False) -> dict[str, list[float]]:
    """Train both backends `steps` Adam steps on the loop's batches; after every step record the
    abs difference of the batch losses ("loss") and the max abs difference over all weights
    ("params"). With `reference`, also train torch in float64 and record how far torch's own
    float32 run is from it ("loss_f64", "params_f64"): the yardstick for float32 drift."""
    torch_backend, jax_backend = backends(config)
    twin = _float64_twin(config, torch_backend.get_params()) if reference else None
    keys = ("loss", "params", "loss_f64", "params_f64") if twin else ("loss", "params")
    gaps: dict[str, list[float]] = {key: [] for key in keys}
    for step, (images, labels) in enumerate(itertools.islice(loader(config, dataset), steps)):
        lr = learning_rate(config, step, steps)
        torch_loss, _ = torch_backend.train_step(images, labels, lr)
        jax_loss, _ = jax_backend.train_step(images, labels, lr)
        torch_params = torch_backend.get_params()
        gaps["loss"].append(abs(torch_loss - jax_loss))
        gaps["params"].append(max_param_diff(torch_params, jax_backend.get_params()))
        if twin:
            model, optimizer = twin
            exact_loss, _ = torch_train_step(model, optimizer, torch.from_numpy(images).double().to(TORCH_DEVICE),
                                             torch.from_numpy(labels).to(TORCH_DEVICE), lr, config.grad_clip)
            gaps["loss_f64"].append(abs(torch_loss - float(exact_loss)))
            gaps["params_f64"].append(max_param_diff(torch_params, {name: to_numpy(value) for name, value
                                                                    in model.state_dict().items()}))
    assert len(gaps["loss"]) == steps
    return gaps


def adam_errors(steps: int = 20, size: int = 10_000, seed: int = 0) -> dict[str, list[float]]:
    """Each framework's Adam (the trainers' make_optimizer) alone, fed the same float32 gradients
    (magnitudes log-uniform over 1e-6..1e-2, like real ones): after every step, the distance of
    its weights from exact (float64) Adam in PyTorch's formula, relative to how far they moved."""
    rng = np.random.default_rng(seed)
    config = Config()
    start = (0.1 * rng.standard_normal(size)).astype(np.float32)
    gradients = [(rng.standard_normal(size) * 10.0 ** rng.uniform(-6, -2, size)).astype(np.float32)
                 for _ in range(steps)]
    b1, b2, eps = 0.9, 0.999, 1e-8  # PyTorch's defaults, which both make_optimizers use
    exact, m, v = start.astype(np.float64), np.zeros(size), np.zeros(size)
    weights = torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.from_numpy(start.copy()))})
    torch_optimizer = torch_make_optimizer(weights, config)
    jax_optimizer = jax_make_optimizer(config)
    jax_weights = jnp.asarray(start)
    jax_state = jax_optimizer.init(jax_weights)
    errors: dict[str, list[float]] = {"torch": [], "jax": []}
    for t, gradient in enumerate(gradients, start=1):
        g = gradient.astype(np.float64)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        exact = exact - config.lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        weights["w"].grad = torch.from_numpy(gradient.copy())
        torch_optimizer.step()
        jax_weights, jax_state = _jax_adam_step(jax_optimizer, jax_weights, jax_state, gradient)
        for name, value in (("torch", weights["w"]), ("jax", jax_weights)):
            errors[name].append(float(np.linalg.norm(to_numpy(value) - exact) / np.linalg.norm(exact - start)))
    return errors


@partial(jax.jit, static_argnums=0)  # compiled, as inside the trainer's train_step
def _jax_adam_step(optimizer, weights, state, gradient):
    updates, state = optimizer.update(gradient, state, weights)
    return optax.apply_updates(weights, updates), state


# ---- ONNX -----------------------------------------------------------------------------------------

def onnx_session(model: RecurrentClassifier, config: Config) -> ort.InferenceSession:
    """Export `model` with the project's exporter (in memory) and open it in onnxruntime on CPU."""
    proto = to_onnx(copy.deepcopy(model).cpu().eval(), config)  # the exporter traces on CPU
    return onnx_runtime.session(proto.SerializeToString())


def onnx_diffs(session: ort.InferenceSession, model: RecurrentClassifier, config: Config,
               images: np.ndarray) -> dict[str, float]:
    """Max abs logit difference of onnxruntime vs torch and vs JAX (same weights, same inputs)."""
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: images})
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(images).to(TORCH_DEVICE))
    jax_logits = _jax_forward(*jax_classifier(config, torch_to_jax(model.state_dict(), config)), images)[3]
    return {"onnx_vs_torch": max_abs_diff(onnx_logits, torch_logits),
            "onnx_vs_jax": max_abs_diff(onnx_logits, jax_logits)}
