"""torch.nn's recurrent layers as Flax NNX modules: the same constructor, call, parameter names and numbers.

    from flax import nnx
    from jax_impl.nn import LSTM
    lstm = LSTM(28, 256, num_layers=2, batch_first=True, rngs=nnx.Rngs(0))
    out, (h_n, c_n) = lstm(x)          # x (B, T, 28) -> out (B, T, 256), h_n and c_n (2, B, 256)
    out, h_n = GRU(28, 256, rngs=rngs)(x, h0)   # time-major x (T, B, 28); h0 (1, B, 256)

Every parameter is an `nnx.Param` attribute named and shaped as torch's (`weight_ih_l0` (G*H, in),
`weight_hh_l0` (G*H, H), `bias_ih_l0`, `bias_hh_l0` (G*H,), gates in torch's order: r, z, n for
the GRU; i, f, g, o for the LSTM), initialised from torch's distribution, U(-1/sqrt(H), 1/sqrt(H)).
So the joined paths of `nnx.state(model, nnx.Param)` are a torch model's `state_dict()` keys, and
`state_dict` / `load_state_dict` below move weights by name, with no rename table.

Flax's own cells compute other functions: `nnx.GRUCell` has no b_hn, the LSTM cells fold the two
biases and carry (c, h), kernels are (in, out), and `nnx.RNN` has no num_layers. The arithmetic
lives in `jax_impl.model` (pure functions: PyTorch's cell equations, the `jax.lax.scan` time loop,
the device-specific forms); these modules hold the parameters and pick the form.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from common.config import GATES, Config
from common.errors import UserError
from jax_impl import model

def uniform(rngs: nnx.Rngs, shape: tuple[int, ...], bound: float) -> nnx.Param:
    return nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, minval=-bound, maxval=bound))


class _Recurrent(nnx.Module):
    """The three layers' shared constructor and call; `cell` names the equations (jax_impl.model)."""

    cell = ""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, batch_first: bool = False,
                 kernel: str = "scan", platform: str | None = None, rngs: nnx.Rngs):
        """`kernel`: "scan" (jax.lax.scan) or "cudnn" (the LSTM on a GPU). `platform`: the device kind
        the layer runs on ("cpu", "gpu", ...; default: JAX's default backend), which picks the form
        that measured fastest there."""
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.kernel = batch_first, kernel
        self.platform = platform or jax.default_backend()
        rows, bound = GATES[self.cell] * hidden_size, 1 / math.sqrt(hidden_size)
        for k in range(num_layers):
            inputs = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", uniform(rngs, (rows, inputs), bound))
            setattr(self, f"weight_hh_l{k}", uniform(rngs, (rows, hidden_size), bound))
            setattr(self, f"bias_ih_l{k}", uniform(rngs, (rows,), bound))
            setattr(self, f"bias_hh_l{k}", uniform(rngs, (rows,), bound))

    def layer_weights(self, k: int) -> model.LayerWeights:
        """Layer k's (weight_ih, weight_hh, bias_ih, bias_hh) arrays."""
        return tuple(getattr(self, f"{name}_l{k}")[...] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def __call__(self, x: jax.Array, hx=None, *, unroll: bool = False):
        """x (B, T, in) with batch_first, else (T, B, in); hx: the initial state (zeros when None).
        `unroll=True` is the inference form (same numbers, no loop overhead, not for gradients)."""
        form = model.Form(kernel=self.kernel, unroll=unroll, rnn_vjp=self.platform == "cpu")
        layers = [self.layer_weights(k) for k in range(self.num_layers)]
        return model.stack(self.cell, layers, x, hx, self.batch_first, form)


class RNN(_Recurrent):
    """Elman RNN with tanh, as torch.nn.RNN:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh).

    out, h_n = rnn(x, h0=None)"""

    cell = "rnn"


class GRU(_Recurrent):
    """GRU, as torch.nn.GRU (b_hn inside the product with r):

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    out, h_n = gru(x, h0=None)"""

    cell = "gru"


class LSTM(_Recurrent):
    """LSTM, as torch.nn.LSTM:

        i  = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f  = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g  = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o  = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')

    out, (h_n, c_n) = lstm(x, (h0, c0)=None)"""

    cell = "lstm"


RECURRENT = {"rnn": RNN, "gru": GRU, "lstm": LSTM}


class Linear(nnx.Module):
    """torch.nn.Linear: y = x W^T + b, `weight` (out, in), `bias` (out,), U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
        bound = 1 / math.sqrt(in_features)
        self.weight = uniform(rngs, (out_features, in_features), bound)
        self.bias = uniform(rngs, (out_features,), bound)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.weight[...].T + self.bias[...]  # (B, in) @ (in, out) -> (B, out)


class RecurrentClassifier(nnx.Module):
    """The MNIST-as-a-sequence classifier, as torch_impl.model.RecurrentClassifier:

        out, _ = rnn(x)                # (B, T=28, F=28) -> (B, T, H), zero initial states
        logits = fc(flatten(out))      # head 'all':  Linear(H * T, classes)
        logits = fc(out[:, -1, :])     # head 'last': Linear(H, classes)
    """

    def __init__(self, config: Config, *, rngs: nnx.Rngs, platform: str | None = None):
        self.head = config.head
        self.rnn = RECURRENT[config.cell](config.input_size, config.hidden_size, config.num_layers, batch_first=True,
                                          kernel=config.rnn_kernel, platform=platform, rngs=rngs)
        self.fc = Linear(config.head_features, config.num_classes, rngs=rngs)

    def recurrent(self, x: jax.Array, *, unroll: bool = False):
        """Every step's top-layer output and the final states: out (B, T, H), h_n (L, B, H)[, c_n]."""
        return self.rnn(x, unroll=unroll)

    def __call__(self, x: jax.Array, *, unroll: bool = False) -> jax.Array:
        out, _ = self.rnn(x, unroll=unroll)  # (B, T, F) -> (B, T, H)
        features = out.reshape(out.shape[0], -1) if self.head == "all" else out[:, -1, :]  # (B, T*H) or (B, H)
        return self.fc(features)  # (B, classes)


# ---- the bridge to torch's names: one function each way ------------------------------------------

def named(state: nnx.State) -> dict[str, nnx.Variable]:
    """A state's variables by joined path ("rnn.weight_ih_l0"): for Params, torch's state_dict keys."""
    return {".".join(map(str, path)): variable for path, variable in nnx.to_flat_state(state)}


def _params(module: nnx.Module) -> dict[str, nnx.Variable]:
    return named(nnx.state(module, nnx.Param))


def state_dict(module: nnx.Module, read: Callable[[jax.Array], np.ndarray] = np.asarray) -> dict[str, np.ndarray]:
    """Every nnx.Param as a float32 NumPy array (a copy, through `read`) under torch's name."""
    return {name: np.array(read(variable[...]), np.float32) for name, variable in _params(module).items()}


def load_state_dict(module: nnx.Module, params: Mapping[str, np.ndarray], source: str = "weights") -> None:
    """Copy `params` (torch's names; NumPy arrays, torch tensors' `.numpy()`, or JAX arrays) into the
    module's nnx.Params by name. The names and every shape must match exactly: one line says what did not."""
    variables = _params(module)
    missing, extra = sorted(set(variables) - set(params)), sorted(set(params) - set(variables))
    if missing or extra:
        raise UserError(f"{source} do not fit this {type(module).__name__}: missing {missing}, unexpected {extra}")
    for name, variable in variables.items():
        if tuple(params[name].shape) != tuple(variable.shape):
            raise UserError(f"{source}: {name} has shape {tuple(params[name].shape)}, the module's is "
                            f"{tuple(variable.shape)}")
    nnx.update(module, nnx.from_flat_state({tuple(name.split(".")): jnp.asarray(np.asarray(params[name]), jnp.float32)
                                            for name in variables}))


def classifier(config: Config, params: Mapping[str, np.ndarray] | None = None, *, platform: str | None = None,
               seed: int = 0) -> RecurrentClassifier:
    """A RecurrentClassifier for `config`, with `params` (torch's names) loaded when given."""
    net = RecurrentClassifier(config, rngs=nnx.Rngs(seed), platform=platform)
    if params is not None:
        load_state_dict(net, params)
    return net
