"""Inference latency of torch and of JAX's three forms on one device, batch 1 and 256.

    python -m benchmarks.gpu_latency --device cuda            # torch, JAX scan / unrolled / cuDNN
    python -m benchmarks.gpu_latency --device cpu --rounds 7  # the same contenders on the CPU

Contenders: torch eager (cuDNN on GPU, oneDNN on CPU), JAX's training form of the scan, its
inference form (input projection hoisted, scan unrolled) and, on a GPU, cuDNN's LSTM through
jax.experimental.rnn. lstm-last with random weights (latency does not depend on them). Timed in
rotation as in benchmarks.latency (which adds onnxruntime on the CPU); each call waits for its
result (torch.cuda.synchronize, block_until_ready), so the times include the device's work.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from common.report import markdown_table
from common.timing import add_timing_flags, check_timing_flags, measure_rotated, write_json
from common.config import Config
from common.cli import Parser
from common.errors import run_cli
from common.precision import exact_float32

BATCH_SIZES = (1, 256)


def torch_calls(params: dict, config: Config, inputs: dict, device: str) -> dict[str, Callable]:
    import torch
    from torch_impl.model import RecurrentClassifier, set_params
    model = RecurrentClassifier(config).to(device).eval()
    set_params(model, params)

    def call(x):
        with torch.inference_mode():
            logits = model(x)
        if device == "cuda":
            torch.cuda.synchronize()
        return logits
    return {("torch eager", n): (lambda x=torch.from_numpy(images).to(device): call(x)) for n, images in inputs.items()}


def jax_calls(params: dict, config: Config, inputs: dict, device: str) -> dict[str, Callable]:
    import dataclasses

    import jax
    from flax import nnx
    from jax_impl.nn import classifier
    target = jax.devices("gpu" if device == "cuda" else "cpu")[0]
    forms = {"jax scan": ("scan", False), "jax unrolled": ("scan", True)}
    if device == "cuda":
        forms["jax cudnn"] = ("cudnn", False)
    calls = {}
    for name, (kernel, unroll) in forms.items():
        model = classifier(dataclasses.replace(config, rnn_kernel=kernel), params, platform=target.platform)
        graphdef, state = nnx.split(model)
        state = jax.device_put(state, target)
        call = jax.jit(lambda state, x, graphdef=graphdef, unroll=unroll: nnx.merge(graphdef, state)(x, unroll=unroll))
        for n, images in inputs.items():
            x = jax.device_put(images, target)
            calls[(name, n)] = lambda x=x, call=call, state=state: call(state, x).block_until_ready()
    return calls


def measure(device: str, rounds: int, block_seconds: float) -> dict:
    import torch
    from torch_impl.model import RecurrentClassifier, get_params
    config = Config(cell="lstm", head="last")
    torch.manual_seed(0)
    params = get_params(RecurrentClassifier(config))
    rng = np.random.default_rng(0)
    inputs = {n: rng.random((n, config.seq_len, config.input_size), dtype=np.float32) for n in BATCH_SIZES}
    contenders = {**torch_calls(params, config, inputs, device), **jax_calls(params, config, inputs, device)}
    load = os.getloadavg()[0]
    medians = measure_rotated(contenders, rounds, block_seconds)
    names = list(dict.fromkeys(name for name, _ in contenders))
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "variant": config.variant,
            "latency_ms": {name: {str(n): 1e3 * medians[(name, n)] for n in BATCH_SIZES} for name in names},
            "rounds": rounds, "block_seconds": block_seconds, "load_before": load, "load_after": os.getloadavg()[0]}


def table(report: dict) -> str:
    rows = [[name, f"{row['1']:.3f}", f"{row['256']:.3f}", f"{256e3 / row['256']:.0f}"]
            for name, row in report["latency_ms"].items()]
    table_ = markdown_table(["contender", "batch 1 (ms)", "batch 256 (ms)", "samples/s at 256"], rows)
    return table_ + (f"\n\n{report['variant']} on {report['device']}; median of {report['rounds']} rounds of "
                f"~{report['block_seconds']} s blocks in rotation; load {report['load_before']:.2f} -> "
                f"{report['load_after']:.2f}")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="python -m benchmarks.gpu_latency", description=__doc__)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    add_timing_flags(parser)
    args = parser.parse_args(argv)
    check_timing_flags(args)
    exact_float32()
    report = measure(args.device, args.rounds, args.block_seconds)
    print(table(report))
    write_json(args, report)
    return report


if __name__ == "__main__":
    run_cli(main)
