"""Settings for every test, applied before torch or JAX start.

`make test` runs one pytest-xdist worker per core. Each worker, and every trainer a test starts
(they inherit the environment), gets its share of the cores: left alone, torch (OpenMP) and XLA
each start one thread per core in every worker, and the workers' threads then wait on each
other's barriers (parity/conftest.py: a tiny training step was ~100x slower with two OpenMP
threads on a busy 2-core machine). A plain `pytest` (one process) keeps the defaults.
"""
from __future__ import annotations

import os

from benchmarks.pairs import available_cores, thread_env  # imports neither torch nor JAX

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.update(thread_env(max(1, len(available_cores()) // _workers)))
