"""The four MNIST-as-a-sequence classifiers in JAX/Flax, with PyTorch's equations and weights.

    out, h_n, c_n = recurrent(params, config, x)   # (B, T=28, F=28) -> (B, T, H), zero h0 (and c0)
    logits = forward(params, config, x)            # head 'all': fc(flatten(out)); 'last': fc(out[:, -1])

`params` is a flat dict keyed by the checkpoint's PyTorch names (`rnn.weight_ih_l0` (G*H, F),
`rnn.weight_hh_l0` (G*H, H), `rnn.bias_ih_l0`, `rnn.bias_hh_l0` (G*H,), ..., `fc.weight`
(classes, features), `fc.bias`), with PyTorch's gate order, so converting weights between the
frameworks is a copy. The Flax modules below declare exactly these parameters; `init_params`
and `forward` translate the flat dict to Flax's nested one (a renaming, no arithmetic).
"""
from __future__ import annotations

import math
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.checkpoint import param_shapes
from common.config import GATES, Config


# ---- cells: one time step each, PyTorch's equations in PyTorch's letters --------------------------
# `prepare_*` runs once per layer, outside the scan: it turns PyTorch's (G*H, in) weights into the
# (in, G*H) matrices the step multiplies by and decides what the scan feeds each step. Measured on
# the target 2-core CPU (training step with gradients, B=64, H=256, 2 layers, forms in rotation,
# cores shared with other jobs, so the margins are rough):
# - LSTM: one fused `[x_t, h] @ [W_ih, W_hh].T` matmul per step was ~10% faster than hoisting
#   `x @ W_ih.T` of all steps out of the scan (the (T, B, 4H) buffer costs more in the backward
#   pass than it saves) and ~15% faster than two matmuls per step.
# - GRU can't fuse: r multiplies only W_hn h + b_hn; a zero-padded (F+H, 4H) matrix was 50% slower.
#   Two matmuls per step were ~5% faster than hoisting.
# - RNN: hoisting won by 5-10%: its (T, B, H) buffer is small and each step keeps one matmul.

def prepare_fused(w_ih, w_hh, b_ih, b_hh, xs):
    """Weights (G*H, F), (G*H, H), (G*H,), (G*H,) -> W (F+H, G*H), b (G*H,); steps get x_t."""
    return (jnp.concatenate([w_ih, w_hh], axis=1).T, b_ih + b_hh), xs


def prepare_separate(w_ih, w_hh, b_ih, b_hh, xs):
    """Weights -> their transposes (F, G*H), (H, G*H) and the biases; steps get x_t."""
    return (w_ih.T, w_hh.T, b_ih, b_hh), xs


def prepare_hoisted(w_ih, w_hh, b_ih, b_hh, xs):
    """Weights -> W_hh.T (H, G*H); steps get W_ih x_t + b_ih + b_hh, computed for all t at once."""
    return (w_hh.T,), xs @ w_ih.T + (b_ih + b_hh)  # (T, B, F) @ (F, G*H) -> (T, B, G*H)


def rnn_cell(weights, h, x_projected):
    """Elman RNN with tanh, as torch.nn.RNN:

        h' = tanh(W_ih x + b_ih + W_hh h + b_hh)

    `x_projected` is W_ih x + b_ih + b_hh (see `prepare_hoisted`).
    """
    (w_hh,) = weights
    h = jnp.tanh(x_projected + h @ w_hh)  # (B, H) @ (H, H) -> (B, H)
    return h, h


def gru_cell(weights, h, x_t):
    """GRU, as torch.nn.GRU (note b_hn inside the product with r):

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h
    """
    w_ih, w_hh, b_ih, b_hh = weights
    x_r, x_z, x_n = jnp.split(x_t @ w_ih + b_ih, 3, axis=-1)  # (B, F) @ (F, 3H) -> 3 x (B, H)
    h_r, h_z, h_n = jnp.split(h @ w_hh + b_hh, 3, axis=-1)  # (B, H) @ (H, 3H) -> 3 x (B, H)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    h = (1 - z) * n + z * h
    return h, h


def lstm_cell(weights, carry, x_t):
    """LSTM, as torch.nn.LSTM (carry is (h, c), like PyTorch's state):

        i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f  = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o  = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')
    """
    w, b = weights
    h, c = carry
    gates = jnp.concatenate([x_t, h], axis=-1) @ w + b  # (B, F+H) @ (F+H, 4H) -> (B, 4H)
    i, f, g, o = jnp.split(gates, 4, axis=-1)  # PyTorch's gate order
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), h


CELLS = {"rnn": (prepare_hoisted, rnn_cell), "gru": (prepare_separate, gru_cell), "lstm": (prepare_fused, lstm_cell)}


def recurrent_layer(cell: str, w_ih, w_hh, b_ih, b_hh, xs):
    """One layer over the whole sequence from zero state: xs (T, B, F) -> out (T, B, H), h_n (B, H), c_n or None."""
    prepare, step = CELLS[cell]
    weights, step_inputs = prepare(w_ih, w_hh, b_ih, b_hh, xs)
    zeros = jnp.zeros((xs.shape[1], w_hh.shape[1]), xs.dtype)  # (B, H)
    carry, out = jax.lax.scan(partial(step, weights), (zeros, zeros) if cell == "lstm" else zeros,
                              step_inputs)  # the time loop: one `step` per t, carry (h[, c])
    h_n, c_n = carry if cell == "lstm" else (carry, None)
    return out, h_n, c_n


# ---- Flax modules: PyTorch's parameter names, shapes and initialisation ---------------------------

def torch_uniform(bound: float):
    """PyTorch's init for recurrent and Linear layers: U(-bound, bound)."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)
    return init


class Recurrent(nn.Module):
    """torch.nn.RNN / GRU / LSTM(batch_first=True), `num_layers` deep, zero initial state."""

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int

    @nn.compact
    def __call__(self, x):
        rows, init = GATES[self.cell] * self.hidden_size, torch_uniform(1 / math.sqrt(self.hidden_size))
        xs = jnp.swapaxes(x, 0, 1)  # (B, T, F) -> (T, B, F): scan runs over the leading axis
        h_n, c_n = [], []
        for k in range(self.num_layers):
            inputs = self.input_size if k == 0 else self.hidden_size
            w_ih = self.param(f"weight_ih_l{k}", init, (rows, inputs))
            w_hh = self.param(f"weight_hh_l{k}", init, (rows, self.hidden_size))
            b_ih = self.param(f"bias_ih_l{k}", init, (rows,))
            b_hh = self.param(f"bias_hh_l{k}", init, (rows,))
            xs, h, c = recurrent_layer(self.cell, w_ih, w_hh, b_ih, b_hh, xs)  # (T, B, in) -> (T, B, H)
            h_n.append(h)
            c_n.append(c)
        out = jnp.swapaxes(xs, 0, 1)  # (T, B, H) -> (B, T, H)
        return out, jnp.stack(h_n), jnp.stack(c_n) if self.cell == "lstm" else None  # states (L, B, H)


class Linear(nn.Module):
    """torch.nn.Linear: y = x @ weight.T + bias, weight (out, in)."""

    in_features: int
    out_features: int

    @nn.compact
    def __call__(self, x):
        init = torch_uniform(1 / math.sqrt(self.in_features))
        weight = self.param("weight", init, (self.out_features, self.in_features))
        bias = self.param("bias", init, (self.out_features,))
        return x @ weight.T + bias


class RecurrentClassifier(nn.Module):
    """torch_impl.model.RecurrentClassifier: parameters `rnn.*` and `fc.*` under the same names."""

    config: Config

    def setup(self):
        c = self.config
        self.rnn = Recurrent(c.cell, c.input_size, c.hidden_size, c.num_layers)
        features = c.hidden_size * c.seq_len if c.head == "all" else c.hidden_size
        self.fc = Linear(features, c.num_classes)

    def recurrent(self, x):
        return self.rnn(x)

    def __call__(self, x):
        out, _, _ = self.rnn(x)  # (B, T, F) -> (B, T, H)
        features = out.reshape(out.shape[0], -1) if self.config.head == "all" else out[:, -1, :]  # (B, T*H) or (B, H)
        return self.fc(features)  # (B, classes)


# ---- the flat-dict API -------------------------------------------------------------------------------

def nest(params: dict) -> dict:
    """{'rnn.weight_ih_l0': w, ...} -> Flax's {'params': {'rnn': {'weight_ih_l0': w}, ...}}."""
    tree: dict = {}
    for name, value in params.items():
        module, _, leaf = name.partition(".")
        tree.setdefault(module, {})[leaf] = value
    return {"params": tree}


def flatten(variables: dict) -> dict:
    """The inverse of `nest`."""
    return {f"{module}.{leaf}": value for module, leaves in variables["params"].items() for leaf, value in leaves.items()}


def init_params(config: Config, seed: int) -> dict[str, jax.Array]:
    """Fresh weights with PyTorch's initialisation (not its random numbers), keyed by PyTorch's names."""
    dummy = jax.ShapeDtypeStruct((1, config.seq_len, config.input_size), jnp.float32)
    # lazy_init runs only the initialisers, not the model; their compiled kernels are cached by shape.
    variables = RecurrentClassifier(config).lazy_init(jax.random.key(seed), dummy)
    params = flatten(variables)
    return {name: params[name] for name in param_shapes(config)}  # PyTorch's order


# Compiled as a whole (config is static: a frozen dataclass, hashable): faster than running op by op.
@partial(jax.jit, static_argnames="config")
def recurrent(params: dict, config: Config, x: jax.Array):
    """Like torch's nn.LSTM: out (B, T, H) of the top layer, h_n (L, B, H), c_n (L, B, H) or None."""
    return RecurrentClassifier(config).apply(nest(params), x, method="recurrent")


@partial(jax.jit, static_argnames="config")
def forward(params: dict, config: Config, x: jax.Array) -> jax.Array:
    """Logits (B, classes) for x (B, T, F)."""
    return RecurrentClassifier(config).apply(nest(params), x)
