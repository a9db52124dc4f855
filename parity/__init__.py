"""Parity suite: PyTorch, JAX and ONNX compute the same model, checked in layers.

    python -m pytest parity/                 # every cell x head; ~2 minutes on 2 CPU cores
    python -m pytest parity/ -m slow         # + one epoch of full MNIST in both frameworks (long)
    python -m parity.report [--sizes tiny] [--out FILE]   # the measured differences as markdown

Layers, one file each: test_convert (weights copy bit-exactly, mismatches fail loudly),
test_forward (every step's output, final h and c, logits), test_gradients (d loss / d every
parameter), test_training (the real trainers' Adam steps, Adam alone against float64, the data
order the loop feeds both), test_onnx (onnxruntime vs both frameworks), test_mnist_epoch (slow:
test accuracy after one epoch). Tolerances and the measurements behind them: `parity.tolerances`;
the measuring code that tests and report share: `parity.measure`.

On a GPU the tolerances hold only with TF32 off in both frameworks; `parity/conftest.py` (and
the report) turn it off through `common.precision.exact_float32()`.
"""
