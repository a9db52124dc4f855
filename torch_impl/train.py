"""Train or evaluate the PyTorch models on MNIST.

    python -m torch_impl.train --variant lstm-last --epochs 1
    python -m torch_impl.train --init-from runs/X/model.safetensors --eval-only
    python -m torch_impl.train --resume runs/X
    torchrun --nproc-per-node 2 -m torch_impl.train --variant lstm-last   # data parallel (DDP)

Flags, outputs and log lines are the same as `python -m jax_impl.train`; `--help` lists them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common import training
from common.checkpoint import initial_params
from common.config import Config, RunOptions
from common.errors import UserError, run_cli
from torch.nn.parallel import DistributedDataParallel

from common.distributed import check_divisible, padded_batch, round_up, shard
from torch_impl import distributed
from torch_impl.model import RecurrentClassifier, get_params, set_params


def select_device(flag: str) -> torch.device:
    if flag == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device("cuda" if flag != "cpu" and torch.cuda.is_available() else "cpu")


def make_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def masked_sums(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None):
    """Summed cross-entropy and correct predictions over the real rows (mask 1; no mask: all rows)."""
    losses = F.cross_entropy(logits, labels, reduction="none")  # (B,)
    hits = logits.argmax(1) == labels
    if mask is None:
        return losses.sum(), hits.sum()
    return (losses * mask).sum(), (hits * mask).sum()


def train_step(model, optimizer, images: torch.Tensor, labels: torch.Tensor, lr: float, grad_clip: float):
    """One Adam step on the mean cross-entropy; returns (loss, correct) as tensors."""
    model.train()
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    apply_gradients(model, optimizer, loss, lr, grad_clip)
    return loss.detach(), (logits.argmax(1) == labels).sum()


def apply_gradients(model, optimizer, loss: torch.Tensor, lr: float, grad_clip: float) -> None:
    """Backward pass (DDP all-reduces the gradients here), optional clipping, one Adam step at `lr`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()


@torch.no_grad()
def eval_step(model, images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None):
    """Summed cross-entropy and correct predictions of one batch (of its real rows, with a mask)."""
    model.eval()
    return masked_sums(model(images), labels, mask)


class TorchBackend:
    framework = "torch"
    is_main = True  # one process: see torch_impl.distributed for DDP

    def __init__(self, config: Config, device_flag: str = "auto"):
        torch.manual_seed(config.seed)
        self.torch_device = select_device(device_flag)
        self.device = f"{self.torch_device.type} ({torch.get_num_threads()} threads)" \
            if self.torch_device.type == "cpu" else torch.cuda.get_device_name(self.torch_device)
        self.config = config
        self.model = RecurrentClassifier(config).to(self.torch_device)
        set_params(self.model, initial_params(config, config.seed))  # the JAX trainer's too
        self.optimizer = make_optimizer(self.model, config)

    def _tensors(self, images: np.ndarray, labels: np.ndarray):
        return torch.from_numpy(images).to(self.torch_device), torch.from_numpy(labels).to(self.torch_device)

    def train_step(self, images, labels, lr):
        loss, correct = train_step(self.model, self.optimizer, *self._tensors(images, labels), lr, self.config.grad_clip)
        return float(loss), int(correct)

    def eval_batch(self, images, labels):
        loss, correct = eval_step(self.model, *self._tensors(images, labels))
        return float(loss), int(correct)

    def agree_stop(self, signum: int) -> int:
        return signum

    def get_params(self):
        return get_params(self.model)

    def set_params(self, params):
        set_params(self.model, params)

    def get_adam(self) -> dict[str, np.ndarray]:
        """Adam's state under the checkpoint's names; zeros before the first step."""
        adam = {"adam.step": np.zeros((), np.float32)}
        for name, param in self.model.named_parameters():
            state = self.optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                value = state.get(key)
                adam[f"adam.{key}.{name}"] = (np.zeros(param.shape, np.float32) if value is None
                                              else value.detach().cpu().numpy().copy())
            if "step" in state:
                adam["adam.step"] = np.asarray(state["step"].cpu().numpy(), np.float32)
        return adam

    def set_adam(self, adam: dict[str, np.ndarray]) -> None:
        step = torch.tensor(float(adam["adam.step"]), dtype=torch.float32)
        for name, param in self.model.named_parameters():
            self.optimizer.state[param] = {
                "step": step.clone(),
                "exp_avg": torch.from_numpy(adam[f"adam.exp_avg.{name}"].copy()).to(param.device),
                "exp_avg_sq": torch.from_numpy(adam[f"adam.exp_avg_sq.{name}"].copy()).to(param.device),
            }

    def versions(self):
        return {"torch": torch.__version__}


class DDPBackend(TorchBackend):
    """One rank of DistributedDataParallel: takes its shard of each global batch (common.distributed)."""

    def __init__(self, config: Config, options: RunOptions):
        self.rank, self.world, _ = distributed.ranks()
        check_divisible(config.batch_size, self.world, "processes")
        device, backend = distributed.start(options.dist_backend, options.device)
        super().__init__(config, device.type)
        self.is_main = self.rank == 0
        self.device += f"; DDP {backend}, rank {self.rank} of {self.world}"
        self.ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)

    def _shard(self, images, labels, size: int):
        batch = shard(padded_batch(images, labels, size), self.rank, self.world)
        mask = torch.from_numpy(batch["mask"]).to(self.torch_device)
        return (*self._tensors(batch["images"], batch["labels"]), mask)

    def train_step(self, images, labels, lr):
        images_t, labels_t, mask = self._shard(images, labels, self.config.batch_size)
        self.ddp.train()
        loss_sum, correct = masked_sums(self.ddp(images_t), labels_t, mask)
        # DDP averages the ranks' gradients: world / n makes that the mean over the n real rows.
        apply_gradients(self.model, self.optimizer, loss_sum * (self.world / len(labels)), lr, self.config.grad_clip)
        total_loss, total_correct = distributed.sum_over_ranks(loss_sum, correct)
        return total_loss / len(labels), total_correct

    def eval_batch(self, images, labels):
        return distributed.sum_over_ranks(*eval_step(self.model, *self._shard(images, labels,
                                                                              round_up(len(labels), self.world))))

    def agree_stop(self, signum: int) -> int:
        return distributed.max_over_ranks(signum, self.torch_device)


def make_backend(config: Config, options: RunOptions) -> TorchBackend:
    """One process, or a DDP rank when started by torchrun (which sets WORLD_SIZE, RANK, ...)."""
    if options.devices != 1:
        raise UserError(f"--devices {options.devices}: torch runs one device per process; "
                        "start N processes with torchrun --nproc-per-node N -m torch_impl.train")
    if distributed.launched_by_torchrun():
        return DDPBackend(config, options)
    if options.dist_backend != "auto":
        raise UserError(f"--dist-backend {options.dist_backend} needs several processes; "
                        "start them with torchrun --nproc-per-node N -m torch_impl.train")
    return TorchBackend(config, options.device)


def train(config: Config, options: RunOptions | None = None, **datasets) -> dict:
    """Importable entry point: train (or evaluate) and return the summary."""
    options = options or RunOptions()
    return training.train(lambda c, _device: make_backend(c, options), config, options, "torch", **datasets)


def main(argv: Sequence[str] | None = None) -> dict:
    return training.run("torch", make_backend, argv)


if __name__ == "__main__":
    run_cli(main)
