"""onnxruntime, opened and run one way everywhere: the exporter's checks, predict, the web server's
tests and the parity suite. NumPy and onnxruntime only (the deployment CLI imports this).

    sess = session("model.onnx")               # or the serialized bytes of a ModelProto
    logits = run_onnx(sess, images)         # (N, 28, 28) -> (N, classes), in chunks
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from common.errors import UserError

EVAL_BATCH = 1000


def session(model: str | Path | bytes, threads: int = 0) -> ort.InferenceSession:
    """A CPU onnxruntime session; a file onnxruntime cannot load is a UserError.
    `threads`: intra-op threads (0: onnxruntime's default, one per core)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its graph-optimisation notices are noise here
    options.intra_op_num_threads = threads
    what = "the exported graph" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and Path(model).suffix == ".safetensors":
        raise UserError(f"{model} is a checkpoint, not an ONNX model: export it first with "
                        f"`python -m export.onnx --checkpoint {model} --out model.onnx`")
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own pybind exception types
        raise UserError(f"{what} is not a loadable ONNX model (onnxruntime: {str(error).splitlines()[0][:200]})") from None


def run_onnx(sess: ort.InferenceSession, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """The first output over `images` in chunks of `batch_size` (1 when the model's batch axis is fixed to 1)."""
    (inp,) = sess.get_inputs()
    step = 1 if inp.shape[0] == 1 else batch_size
    return np.concatenate([sess.run(None, {inp.name: images[i:i + step]})[0] for i in range(0, len(images), step)])
