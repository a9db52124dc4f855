"""The recurrent layers' arithmetic as pure functions: PyTorch's cell equations and the time loop.

    carry, out = layer(cell, weights, xs, carry0, form)        # one layer: xs (T, B, in) -> out (T, B, H)
    out, h_n = stack(cell, layers, x, hx, batch_first, form)  # all layers, as torch.nn.RNN/GRU/LSTM's call

The Flax modules (`jax_impl.nn`) hold the parameters, in PyTorch's names and layout, and call
these; jit, remat and the custom VJP see plain functions. A layer's weights are PyTorch's
(w_ih (G*H, in), w_hh (G*H, H), b_ih, b_hh (G*H,)), gates in PyTorch's order.

Forms (`Form`), each chosen by measurement on its device (docs/PERFORMANCE.md):
- training (the default): each step computes its own input projection, with the weights
  transposed once before the scan; the step is rematerialised (`jax.checkpoint`, keeping only the
  matmul outputs), since recomputing the gate math in the backward pass is cheaper than saving
  ~14 arrays per step, and bit-identical. Hoisting the input projection of all steps out of the
  loop was slower for the LSTM in training: its (T, B, 4H) buffer costs more in the backward pass
  than it saves.
- `unroll=True` (inference): the input projection is hoisted and the scan fully unrolled, which
  removes the loop's per-step overhead that dominates at small batches.
- `rnn_vjp=True` (the Elman RNN from zero state): a hand-written backward pass (`rnn_layer`).
- `kernel="cudnn"` (LSTM only, GPU only): `jax.experimental.rnn.lstm`, cuDNN's fused LSTM, fed
  from the same parameters (`cudnn_weights`). JAX has no cuDNN path for the GRU or Elman RNN.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import rnn as jax_rnn

LayerWeights = tuple[jax.Array, jax.Array, jax.Array, jax.Array]  # PyTorch's (w_ih, w_hh, b_ih, b_hh)


class Form(NamedTuple):
    """How the layers run: the same function in every form (tests/test_jax_forms.py)."""

    kernel: str = "scan"  # "scan" (jax.lax.scan) or "cudnn" (LSTM on a GPU)
    unroll: bool = False  # the inference form: hoisted input projection, fully unrolled scan
    rnn_vjp: bool = False  # the Elman RNN's hand-written backward pass (zero initial state only)


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

def zero_carry(cell: str, batch: int, hidden: int, dtype) -> jax.Array | tuple[jax.Array, jax.Array]:
    h0 = jnp.zeros((batch, hidden), dtype)  # (B, H)
    return (h0, h0) if cell == "lstm" else h0


def layer(cell: str, weights: LayerWeights, xs: jax.Array, carry, form: Form = Form()):
    """One layer over the whole sequence: xs (T, B, in) -> carry (h or (h, c)), out (T, B, H).
    `carry` is the initial state (None: zeros)."""
    w_ih, w_hh, b_ih, b_hh = weights
    if carry is None:
        if cell == "rnn" and form.rnn_vjp and not form.unroll:
            return rnn_layer(w_ih, w_hh, b_ih, b_hh, xs)
        carry = zero_carry(cell, xs.shape[1], w_hh.shape[1], xs.dtype)
    step = CELLS[cell]
    if form.unroll:  # inference: one GEMM for every step's input projection, no loop overhead
        packed, xs = Weights(None, w_hh.T, b_ih, b_hh), xs @ w_ih.T + b_ih  # (T, B, in) -> (T, B, G*H)
    else:  # training: keep only the matmul outputs for the backward pass, recompute the gate math
        packed, step = Weights(w_ih.T, w_hh.T, b_ih, b_hh), jax.checkpoint(
            step, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    return jax.lax.scan(partial(step, packed), carry, xs, unroll=xs.shape[0] if form.unroll else 1)


def stack(cell: str, layers: Sequence[LayerWeights], x: jax.Array, hx=None, batch_first: bool = False,
          form: Form = Form()):
    """As torch.nn.RNN/GRU/LSTM's call: x (B, T, in) with batch_first, else (T, B, in); hx the initial
    state (L, B, H), (h0, c0) for the LSTM, or None (zeros). Returns out of the top layer, in x's
    layout, and h_n (L, B, H), or (h_n, c_n) for the LSTM."""
    if form.kernel == "cudnn":
        if cell != "lstm":
            raise ValueError(f"kernel 'cudnn' exists only for the LSTM in JAX, not for {cell!r}")
        return cudnn_lstm(layers, x if batch_first else jnp.swapaxes(x, 0, 1), hx, batch_first)
    xs = jnp.swapaxes(x, 0, 1) if batch_first else x  # (B, T, F) -> (T, B, F): scan runs over the leading axis
    finals = []
    for k, weights in enumerate(layers):
        initial = None if hx is None else (hx[0][k], hx[1][k]) if cell == "lstm" else hx[k]
        carry, xs = layer(cell, weights, xs, initial, form)  # (T, B, in) -> (T, B, H)
        finals.append(carry)
    out = jnp.swapaxes(xs, 0, 1) if batch_first else xs  # (T, B, H) -> (B, T, H)
    if cell == "lstm":
        return out, (jnp.stack([h for h, _ in finals]), jnp.stack([c for _, c in finals]))  # (L, B, H) each
    return out, jnp.stack(finals)


@jax.custom_vjp
def rnn_layer(w_ih, w_hh, b_ih, b_hh, xs):
    """`rnn_cell` over the sequence from zero state, xs (T, B, in) -> h_n (B, H), out (T, B, H), with
    the backward pass written by hand: one reverse scan of dpre_t = (dout_t + dh) * (1 - h_t^2),
    dh = dpre_t @ W_hh, then every weight gradient as one GEMM over all steps. Faster than autodiff
    of the scan on the CPU, slower there for the LSTM and GRU, and never measured faster on a GPU
    (docs/PERFORMANCE.md): the layers use it on the CPU only."""
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


def cudnn_weights(layers: Sequence[LayerWeights]) -> jax.Array:
    """PyTorch's LSTM parameters as the flat buffer `jax.experimental.rnn.lstm` takes: every layer's
    W_ih, W_hh (row-major), then every layer's b_ih, b_hh (the gate order is PyTorch's)."""
    matrices = [w.ravel() for w_ih, w_hh, _, _ in layers for w in (w_ih, w_hh)]
    biases = [b for _, _, b_ih, b_hh in layers for b in (b_ih, b_hh)]
    return jnp.concatenate(matrices + biases)


def cudnn_lstm(layers: Sequence[LayerWeights], x: jax.Array, hx, batch_first: bool):
    """All LSTM layers in one cuDNN call (GPU only): x (B, T, in) -> out (B, T, H) (time-major when
    not batch_first), (h_n, c_n) (L, B, H)."""
    hidden, input_size = layers[0][1].shape[1], layers[0][0].shape[1]
    if hx is None:
        zeros = jnp.zeros((len(layers), x.shape[0], hidden), x.dtype)
        hx = (zeros, zeros)
    seq_lengths = jnp.full((x.shape[0],), x.shape[1], jnp.int32)
    out, h_n, c_n = jax_rnn.lstm(x, hx[0], hx[1], cudnn_weights(layers), seq_lengths, input_size=input_size,
                                 hidden_size=hidden, num_layers=len(layers), dropout=0.0, bidirectional=False)
    return (out if batch_first else jnp.swapaxes(out, 0, 1)), (h_n, c_n)
