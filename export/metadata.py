"""What an exported .onnx file says about itself (`metadata_props`), written and read here.

The exporter writes these keys; `export.predict` reads them to preprocess images exactly as in
training, without torch and without the original config file. NumPy-level imports only (this file is
imported by the deployment CLI).

    format            rnn-mnist-parity-onnx/1   (how predict recognises our files)
    variant           lstm-last, gru, ...
    config            the training Config as JSON
    preprocessing     JSON: {"scale": 1/255, "normalize": bool, "mean": 0.1307, "std": 0.3081, ...}
    class_labels      JSON list of 10 strings, index = logit position
    test_accuracy     the checkpoint's own test accuracy (fraction), when it recorded one
    source_sha256     sha256 of the model.safetensors it was exported from
    source_checkpoint that file's name
    framework         which framework trained it (torch, jax)
    exporter          torch and opset versions; quantization, if any
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from common.data import MEAN, STD
from common.errors import UserError

FORMAT = "rnn-mnist-parity-onnx/1"
SCALE = 1 / 255
CLASS_LABELS = [str(digit) for digit in range(10)]
INPUT_NOTE = "grayscale 28x28, white digit on black (MNIST), rows are the time steps"


@dataclass(frozen=True)
class Preprocessing:
    scale: float
    normalize: bool
    mean: float
    std: float


@dataclass(frozen=True)
class ModelInfo:
    variant: str
    config: dict
    preprocessing: Preprocessing
    class_labels: list[str]
    test_accuracy: float | None
    framework: str
    source_sha256: str
    props: dict[str, str]


def build(config: dict, *, framework: str, source_sha256: str, source_name: str,
          test_accuracy: float | None, exporter: str) -> dict[str, str]:
    """The metadata_props of an exported model; `config` is Config.to_dict()."""
    variant = config["cell"] if config["head"] == "all" else f"{config['cell']}-last"
    preprocessing = {"scale": SCALE, "normalize": bool(config["normalize"]), "mean": MEAN, "std": STD,
                     "input": INPUT_NOTE}
    props = {
        "format": FORMAT,
        "variant": variant,
        "config": json.dumps(config, sort_keys=True),
        "preprocessing": json.dumps(preprocessing, sort_keys=True),
        "class_labels": json.dumps(CLASS_LABELS[:config["num_classes"]]),
        "source_sha256": source_sha256,
        "source_checkpoint": source_name,
        "framework": framework,
        "exporter": exporter,
    }
    if test_accuracy is not None:
        props["test_accuracy"] = repr(float(test_accuracy))
    return props


def parse(props: dict[str, str], source: str) -> ModelInfo:
    """Check and decode metadata_props; a UserError names what is missing or unreadable."""
    if props.get("format") != FORMAT:
        raise UserError(f"{source} is an ONNX model but not one exported by this project (no '{FORMAT}' "
                        "metadata); export one with `python -m export.onnx --checkpoint RUN/model.safetensors`")
    try:
        config = json.loads(props["config"])
        raw = json.loads(props["preprocessing"])
        preprocessing = Preprocessing(float(raw["scale"]), bool(raw["normalize"]), float(raw["mean"]),
                                      float(raw["std"]))
        labels = [str(label) for label in json.loads(props["class_labels"])]
        accuracy = float(props["test_accuracy"]) if "test_accuracy" in props else None
        info = ModelInfo(props["variant"], config, preprocessing, labels, accuracy,
                         props.get("framework", "unknown"), props.get("source_sha256", ""), dict(props))
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{source} has unreadable '{FORMAT}' metadata ({type(error).__name__}: {error}); "
                        "re-export it with `python -m export.onnx`") from None
    if not (math.isfinite(preprocessing.scale) and preprocessing.scale > 0 and preprocessing.std > 0):
        raise UserError(f"{source} has invalid preprocessing metadata {raw}; re-export it")
    return info


def set_metadata(proto, props: dict[str, str]) -> None:
    """Write `props` into an onnx.ModelProto's metadata_props, replacing keys it already has."""
    existing = {prop.key: prop for prop in proto.metadata_props}
    for key, value in props.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)
