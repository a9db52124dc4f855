"""summary.json of a run: results, throughput, versions, machine and data checksums."""
from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import numpy as np

from common import checkpoint
from common.run_state import RunState


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_summary(backend, config, options, state: RunState, train_set, test_set, test_loss, test_acc) -> dict:
    """The summary of a training run (or, with an empty RunState, of an evaluation)."""
    seconds = state.train_seconds
    return {
        "framework": backend.framework, "variant": config.variant, "epochs": config.epochs, "seed": config.seed,
        "config": config.to_dict(), "options": options.__dict__,
        "train_accuracy": state.train_accuracy, "test_accuracy": test_acc, "test_loss": test_loss,
        "train_seconds": seconds, "samples_per_second": state.samples / seconds if seconds else None,
        "parameters": checkpoint.count_params(config), "device": backend.device,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **backend.versions()},
        "machine": {"platform": platform.platform(), "processor": cpu_name(),
                    "cpu_count": os.cpu_count()},
        "data_sha256": {**(train_set.sha256 if train_set else {}), **test_set.sha256},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
