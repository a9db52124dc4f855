"""The four MNIST-as-a-sequence classifiers in JAX, with PyTorch's equations, names and weights.

    out, h_n = recurrent(params, config, x)          # rnn, gru: (B, T=28, F=28) -> (B, T, H), (L, B, H)
    out, (h_n, c_n) = recurrent(params, config, x)   # lstm, as torch.nn.LSTM; zero initial states
    logits = forward(params, config, x)              # head 'all': fc(flatten(out)); 'last': fc(out[:, -1])

`params` is a flat dict keyed by the checkpoint's PyTorch names (`rnn.weight_ih_l0` (G*H, F),
`rnn.weight_hh_l0` (G*H, H), `rnn.bias_ih_l0`, `rnn.bias_hh_l0` (G*H,), ..., `fc.weight`
(classes, features), `fc.bias`) in PyTorch's gate order, so converting weights is a copy.

Plain functions, no module library: every cell is `step(weights, carry, x_t) -> (carry, out)` (the
shape of equinox's and Flax's cells) and the time loop is one `jax.lax.scan` in `layer`. Flax
was used here only to declare these parameters; a dict built from the checkpoint's shape table
(`common.checkpoint.param_shapes`) does that with PyTorch's names and no renaming layer, so the
model no longer needs it.

Forms, chosen by measurement (numbers in docs/PERFORMANCE.md, `python -m benchmarks.speed`):
- Training on CPU: each step computes its own input projection with weights transposed once
  before the scan; hoisting `x @ W_ih.T` of all steps out of the loop was 20% slower for the
  LSTM (its (T, B, 4H) buffer costs more in the backward pass than it saves). The step is
  rematerialised (`jax.checkpoint`, keeping only the matmul outputs): recomputing the gate math
  in the backward pass is cheaper than saving ~14 arrays per step, and bit-identical. The Elman
  RNN on CPU has a hand-written backward pass instead (`rnn_layer`).
- Inference (`unroll=True`): the input projection is hoisted and the scan fully unrolled, which
  removes the loop's per-step overhead that dominates at batch 1 (1.5 ms vs 3.3 ms, lstm-last).
- `kernel="cudnn"` (LSTM only, GPU only): `jax.experimental.rnn.lstm`, cuDNN's fused LSTM, fed
  from the same parameters (`cudnn_weights`). JAX has no cuDNN path for the GRU or Elman RNN.
"""
from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import rnn as jax_rnn

from common.checkpoint import param_shapes
from common.config import Config


class Weights(NamedTuple):
    """One layer's weights as a step multiplies them: PyTorch's, transposed once before the scan.
    `w_ih_t` is None when the input projection was done for all steps before the scan; then
    the step's x_t already is W_ih x_t + b_ih."""

    w_ih_t: jax.Array | None  # (in, G*H)
    w_hh_t: jax.Array  # (H, G*H)
    b_ih: jax.Array  # (G*H,)
    b_hh: jax.Array  # (G*H,)


def input_projection(w: Weights, x_t: jax.Array) -> jax.Array:
    """W_ih x_t + b_ih, unless the layer did it for all steps before the scan."""
    return x_t if w.w_ih_t is None else x_t @ w.w_ih_t + w.b_ih  # (B, in) @ (in, G*H) -> (B, G*H)


# ---- cells: one time step each, PyTorch's equations in PyTorch's letters ----------------------------

def rnn_cell(w: Weights, h, x_t):
    """Elman RNN with tanh, as torch.nn.RNN:

        h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    """
    h = jnp.tanh(input_projection(w, x_t) + h @ w.w_hh_t + w.b_hh)  # (B, H)
    return h, h


def gru_cell(w: Weights, h, x_t):
    """GRU, as torch.nn.GRU (note b_hn inside the product with r):

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h
    """
    x_r, x_z, x_n = jnp.split(input_projection(w, x_t), 3, axis=-1)  # 3 x (B, H)
    h_r, h_z, h_n = jnp.split(h @ w.w_hh_t + w.b_hh, 3, axis=-1)  # (B, H) @ (H, 3H) -> 3 x (B, H)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    h = (1 - z) * n + z * h
    return h, h


def lstm_cell(w: Weights, carry, x_t):
    """LSTM, as torch.nn.LSTM (carry is (h, c), like PyTorch's state):

        i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f  = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o  = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')
    """
    h, c = carry
    gates = input_projection(w, x_t) + h @ w.w_hh_t + w.b_hh  # (B, 4H)
    i, f, g, o = jnp.split(gates, 4, axis=-1)  # PyTorch's gate order
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    h = o * jnp.tanh(c)
    return (h, c), h


CELLS = {"rnn": rnn_cell, "gru": gru_cell, "lstm": lstm_cell}


# ---- the time loop ---------------------------------------------------------------------------------

def layer_weights(params: dict, k: int) -> tuple[jax.Array, ...]:
    """PyTorch's (w_ih, w_hh, b_ih, b_hh) of layer k."""
    return tuple(params[f"rnn.{name}_l{k}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def layer(cell: str, params: dict, k: int, xs: jax.Array, unroll: bool):
    """Layer k over the whole sequence from zero state: xs (T, B, in) -> carry (h or (h, c)), out (T, B, H)."""
    w_ih, w_hh, b_ih, b_hh = layer_weights(params, k)
    if cell == "rnn" and not unroll and jax.default_backend() == "cpu":
        return rnn_layer(w_ih, w_hh, b_ih, b_hh, xs)  # hand-written backward pass: faster on CPU
    step = CELLS[cell]
    if unroll:  # inference: one GEMM for every step's input projection, no loop overhead
        weights, xs = Weights(None, w_hh.T, b_ih, b_hh), xs @ w_ih.T + b_ih  # (T, B, in) -> (T, B, G*H)
    else:  # training: keep only the matmul outputs for the backward pass, recompute the gate math
        weights, step = Weights(w_ih.T, w_hh.T, b_ih, b_hh), jax.checkpoint(
            step, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    h0 = jnp.zeros((xs.shape[1], w_hh.shape[1]), xs.dtype)  # (B, H)
    carry = (h0, h0) if cell == "lstm" else h0
    return jax.lax.scan(partial(step, weights), carry, xs, unroll=xs.shape[0] if unroll else 1)


@jax.custom_vjp
def rnn_layer(w_ih, w_hh, b_ih, b_hh, xs):
    """`rnn_cell` over the sequence from zero state, xs (T, B, in) -> h_n (B, H), out (T, B, H), with
    the backward pass written by hand: one reverse scan of dpre_t = (dout_t + dh) * (1 - h_t^2),
    dh = dpre_t @ W_hh, then every weight gradient as one GEMM over all steps. On the 2-core CPU
    this trained 1.18x faster than autodiff of the scan at batch 64 (docs/PERFORMANCE.md); for the
    LSTM and GRU the same scheme was slower (their (T, B, G*H) buffers fall out of cache).
    Measured on CPU only, so the GPU keeps the autodiff form."""
    return _rnn_forward(w_ih, w_hh, b_ih, b_hh, xs)


def _rnn_forward(w_ih, w_hh, b_ih, b_hh, xs):
    h0 = jnp.zeros((xs.shape[1], w_hh.shape[1]), xs.dtype)
    projected = xs @ w_ih.T + b_ih  # (T, B, in) @ (in, H) -> (T, B, H): every step's W_ih x_t + b_ih
    return jax.lax.scan(partial(rnn_cell, Weights(None, w_hh.T, b_ih, b_hh)), h0, projected)


def _rnn_layer_fwd(w_ih, w_hh, b_ih, b_hh, xs):
    h_n, out = _rnn_forward(w_ih, w_hh, b_ih, b_hh, xs)
    return (h_n, out), (w_ih, w_hh, xs, out)


def _rnn_layer_bwd(saved, cotangents):
    w_ih, w_hh, xs, out = saved
    d_h_n, d_out = cotangents  # h_n is the last step's h: its cotangent starts the reverse scan

    def step(d_h, inputs):  # h_t = tanh(pre_t): dpre_t = dh_t * (1 - h_t^2), dh_{t-1} = dpre_t @ W_hh
        d_out_t, h_t = inputs
        d_pre = (d_out_t + d_h) * (1 - h_t * h_t)  # (B, H)
        return d_pre @ w_hh, d_pre
    _, d_pre = jax.lax.scan(step, d_h_n, (d_out, out), reverse=True)  # (T, B, H)
    steps, batch, hidden = d_pre.shape
    d_pre_2d = d_pre.reshape(steps * batch, hidden)
    h_prev = jnp.concatenate([jnp.zeros_like(out[:1]), out[:-1]]).reshape(steps * batch, hidden)
    # (X^T @ dP).T, not dP^T @ X: the same numbers, 2-4x faster on the CPU.
    d_w_ih = (xs.reshape(steps * batch, -1).T @ d_pre_2d).T  # (H, in)
    d_w_hh = (h_prev.T @ d_pre_2d).T  # (H, H)
    d_b = d_pre_2d.sum(axis=0)  # b_ih and b_hh enter identically
    return d_w_ih, d_w_hh, d_b, d_b, d_pre @ w_ih  # dxs (T, B, in)


rnn_layer.defvjp(_rnn_layer_fwd, _rnn_layer_bwd)


def cudnn_weights(params: dict, config: Config) -> jax.Array:
    """PyTorch's LSTM parameters as the flat buffer `jax.experimental.rnn.lstm` takes: every layer's
    W_ih, W_hh (row-major), then every layer's b_ih, b_hh (the module's docstring gives the layout;
    the gate order is PyTorch's)."""
    layers = [layer_weights(params, k) for k in range(config.num_layers)]
    matrices = [w.ravel() for w_ih, w_hh, _, _ in layers for w in (w_ih, w_hh)]
    biases = [b for _, _, b_ih, b_hh in layers for b in (b_ih, b_hh)]
    return jnp.concatenate(matrices + biases)


def cudnn_lstm(params: dict, config: Config, x: jax.Array):
    """All LSTM layers in one cuDNN call (GPU only): out (B, T, H), (h_n, c_n) (L, B, H)."""
    h0 = jnp.zeros((config.num_layers, x.shape[0], config.hidden_size), x.dtype)
    seq_lengths = jnp.full((x.shape[0],), x.shape[1], jnp.int32)
    out, h_n, c_n = jax_rnn.lstm(x, h0, h0, cudnn_weights(params, config), seq_lengths,
                                 input_size=config.input_size, hidden_size=config.hidden_size,
                                 num_layers=config.num_layers, dropout=0.0, bidirectional=False)
    return out, (h_n, c_n)


@partial(jax.jit, static_argnames=("config", "kernel", "unroll"))
def recurrent(params: dict, config: Config, x: jax.Array, kernel: str | None = None, unroll: bool = False):
    """As torch's nn.RNN/GRU/LSTM(batch_first=True) from zero state: out (B, T, H) of the top layer,
    and h_n (L, B, H), or (h_n, c_n) for the LSTM. `kernel` (default: config.rnn_kernel) is
    "scan" or "cudnn"; `unroll=True` is the inference form of the scan."""
    if (kernel or config.rnn_kernel) == "cudnn":
        if config.cell != "lstm":
            raise ValueError(f"kernel 'cudnn' exists only for the LSTM in JAX, not for {config.cell!r}")
        return cudnn_lstm(params, config, x)
    xs, finals = jnp.swapaxes(x, 0, 1), []  # (B, T, F) -> (T, B, F): scan runs over the leading axis
    for k in range(config.num_layers):
        carry, xs = layer(config.cell, params, k, xs, unroll)  # (T, B, in) -> (T, B, H)
        finals.append(carry)
    out = jnp.swapaxes(xs, 0, 1)  # (T, B, H) -> (B, T, H)
    if config.cell == "lstm":
        return out, (jnp.stack([h for h, _ in finals]), jnp.stack([c for _, c in finals]))  # (L, B, H) each
    return out, jnp.stack(finals)


@partial(jax.jit, static_argnames=("config", "kernel", "unroll"))
def forward(params: dict, config: Config, x: jax.Array, kernel: str | None = None, unroll: bool = False) -> jax.Array:
    """Logits (B, classes) for x (B, T, F). `unroll=True` is the inference form (no gradients needed)."""
    out, _ = recurrent(params, config, x, kernel, unroll)  # (B, T, F) -> (B, T, H)
    features = out.reshape(out.shape[0], -1) if config.head == "all" else out[:, -1, :]  # (B, T*H) or (B, H)
    return features @ params["fc.weight"].T + params["fc.bias"]  # (B, classes)


def init_params(config: Config, seed: int) -> dict[str, jax.Array]:
    """Fresh weights with PyTorch's initialisation (not its random numbers), keyed by PyTorch's names:
    U(-1/sqrt(H), 1/sqrt(H)) for the recurrent layers, U(-1/sqrt(in), 1/sqrt(in)) for the Linear."""
    shapes = param_shapes(config)
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    params = {}
    for key, (name, shape) in zip(keys, shapes.items()):
        fan_in = config.hidden_size if name.startswith("rnn.") else config.head_features
        bound = 1 / math.sqrt(fan_in)
        params[name] = jax.random.uniform(key, shape, jnp.float32, minval=-bound, maxval=bound)
    return params
