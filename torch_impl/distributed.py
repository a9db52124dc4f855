"""torch.distributed plumbing for data-parallel training (the DDP backend is in torch_impl/train.py).

Started by torchrun, one process per device:

    torchrun --nproc-per-node 2 -m torch_impl.train --variant lstm-last          # one machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint HOST:29500 --rdzv-id RUN -m torch_impl.train ...           # on each machine

The backend is NCCL when the processes use GPUs and gloo on CPU (`--dist-backend` overrides).
"""
from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist

from common.errors import UserError

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun set them."""
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


def choose_device(device_flag: str, local_rank: int) -> torch.device:
    """This rank's device: GPU `local_rank` when GPUs are used, else the CPU."""
    cuda = torch.cuda.is_available()
    if device_flag == "cuda" and not cuda:
        raise UserError("--device cuda, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if device_flag == "cpu" or not cuda:
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                        f"use torchrun --nproc-per-node {torch.cuda.device_count()} or fewer")
    torch.cuda.set_device(local_rank)  # "cuda" now means this rank's GPU
    return torch.device("cuda", local_rank)


def choose_backend(flag: str, device: torch.device) -> str:
    if flag == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if flag == "nccl" and device.type != "cuda":
        raise UserError("--dist-backend nccl needs GPUs, and this run is on the CPU; use --dist-backend gloo (or auto)")
    return flag


def start(backend_flag: str, device_flag: str) -> tuple[torch.device, str]:
    """Join the process group torchrun set up; returns (this rank's device, backend name)."""
    device = choose_device(device_flag, ranks()[2])
    backend = choose_backend(backend_flag, device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        atexit.register(dist.destroy_process_group)
    return device, backend


def sum_over_ranks(loss_sum: torch.Tensor, correct: torch.Tensor) -> tuple[float, int]:
    """Every rank's (summed loss, correct count) added up, on every rank."""
    totals = torch.stack([loss_sum.detach().double(), correct.double()])
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return float(totals[0]), int(totals[1])


def max_over_ranks(value: int, device: torch.device) -> int:
    flag = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag[0])
