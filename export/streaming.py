"""Run a streaming model (`*.step.onnx`, written by `python -m export.onnx --streaming`) row by row.
NumPy and onnxruntime only: this runs where the model is deployed.

A step file computes what the whole-sequence model computes, a chunk of rows per call, with the
recurrent state carried by the caller (onnxruntime keeps nothing between calls):

    inputs   rows [batch, k, 28] float32, then the states (k: any, or 1 where the metadata says so)
    outputs  logits [batch, classes], then each state's new value, named <state>_out
    states   h        [layers, batch, hidden] float32, zeros at the start of every image
             c        [layers, batch, hidden] float32, zeros   (lstm only)
             acc      [batch, classes] float32, zeros          (head 'all' only)
             position [1] int64, zero                          (head 'all' only)

Head 'last': the logits after each call are the classifier on the newest row's output, i.e. what
the model says about the rows seen so far; after row 28 they are the whole-sequence logits.
Head 'all': the classifier is one weight block per row (fc.weight[:, t*H:(t+1)*H]), so `acc`
adds each row's block (picked by `position`) as the row arrives and logits = bias + acc. Only
after all 28 rows is that the model's prediction; before, the later rows' terms are missing and
the logits are a partial sum, not a guess the model was trained to make. What streaming buys
there is the work: one row's compute per call, nothing recomputed when the last row arrives.
The metadata key `streaming` (JSON) lists the states, their shapes and zero initialisation.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnxruntime as ort

from common.errors import UserError
from export import metadata
from export.runtime import session

STREAM_KEY = "streaming"
ROWS = "rows"
LOGITS = "logits"


def spec(config: dict, rows_per_call: int | str = "any") -> dict:
    """The `streaming` metadata of a step model for `config` (Config.to_dict()); `rows_per_call`:
    "any", or the fixed number of rows its graph takes per call."""
    layers, hidden, classes = config["num_layers"], config["hidden_size"], config["num_classes"]
    states = [{"name": "h", "shape": [layers, "batch", hidden], "dtype": "float32", "init": "zeros"}]
    if config["cell"] == "lstm":
        states.append({"name": "c", "shape": [layers, "batch", hidden], "dtype": "float32", "init": "zeros"})
    if config["head"] == "all":
        states += [{"name": "acc", "shape": ["batch", classes], "dtype": "float32", "init": "zeros"},
                   {"name": "position", "shape": [1], "dtype": "int64", "init": "zeros"}]
    return {"states": states, "rows_per_call": rows_per_call,
            "seq_len": config["seq_len"], "running_prediction": config["head"] == "last",
            "outputs": [LOGITS] + [f"{state['name']}_out" for state in states]}


def initial_states(stream: dict, batch: int) -> dict[str, np.ndarray]:
    """Every state at the start of a sequence: zeros of its shape, `batch` filled in."""
    return {state["name"]: np.zeros([batch if dim == "batch" else dim for dim in state["shape"]],
                                    dtype=state["dtype"]) for state in stream["states"]}


def calls(chunks: Sequence[int], stream: dict) -> list[int]:
    """Rows per call for the requested chunk sizes (split into single rows where the file takes one)."""
    return [1] * sum(chunks) if stream["rows_per_call"] == 1 else list(chunks)


def run_stream(sess: ort.InferenceSession, stream: dict, images: np.ndarray,
               chunks: Sequence[int]) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray]]]:
    """Feed `images` (B, T, F) in chunks of these sizes; yield (rows seen, logits, states) after each call."""
    states = initial_states(stream, len(images))
    names = [state["name"] for state in stream["states"]]
    seen = 0
    for k in calls(chunks, stream):
        logits, *new = sess.run(stream["outputs"], {ROWS: images[:, seen:seen + k], **states})
        seen += k
        states = dict(zip(names, new))
        yield seen, logits, states


def open_step_model(path: str | Path) -> tuple[ort.InferenceSession, metadata.ModelInfo, dict]:
    """(session, metadata, streaming spec) of a step file; a UserError says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model {path} not found")
    sess = session(path)
    info = metadata.parse(sess.get_modelmeta().custom_metadata_map, str(path))
    if STREAM_KEY not in info.props:
        raise UserError(f"{path} is a whole-sequence model, not a streaming one; export a step file with "
                        "`python -m export.onnx --checkpoint CKPT --streaming` (writes *.step.onnx)")
    try:
        stream = json.loads(info.props[STREAM_KEY])
        names = [ROWS] + [state["name"] for state in stream["states"]]
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(f"{path} has unreadable streaming metadata ({error}); re-export it") from None
    if [inp.name for inp in sess.get_inputs()] != names or [o.name for o in sess.get_outputs()] != stream["outputs"]:
        raise UserError(f"{path}: inputs/outputs {[i.name for i in sess.get_inputs()]} -> "
                        f"{[o.name for o in sess.get_outputs()]} do not match its streaming metadata; re-export it")
    return sess, info, stream
