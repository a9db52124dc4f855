"""Train or evaluate the PyTorch models on MNIST.

    python -m torch_impl.train --variant lstm-last --epochs 1
    python -m torch_impl.train --init-from runs/X/model.safetensors --eval-only
    python -m torch_impl.train --resume runs/X

Flags, outputs and log lines are the same as `python -m jax_impl.train`; `--help` lists them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common import training
from common.config import Config
from common.errors import UserError, run_cli
from torch_impl.model import RecurrentClassifier, get_params, set_params


def select_device(flag: str) -> torch.device:
    if flag == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device("cuda" if flag != "cpu" and torch.cuda.is_available() else "cpu")


def make_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=config.lr)


def train_step(model, optimizer, images: torch.Tensor, labels: torch.Tensor, lr: float, grad_clip: float):
    """One Adam step on the mean cross-entropy; returns (loss, correct) as tensors."""
    model.train()
    logits = model(images)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    return loss.detach(), (logits.argmax(1) == labels).sum()


@torch.no_grad()
def eval_step(model, images: torch.Tensor, labels: torch.Tensor):
    """Summed cross-entropy and correct predictions of one batch."""
    model.eval()
    logits = model(images)
    return F.cross_entropy(logits, labels, reduction="sum"), (logits.argmax(1) == labels).sum()


class TorchBackend:
    framework = "torch"

    def __init__(self, config: Config, device_flag: str = "auto"):
        torch.manual_seed(config.seed)
        self.torch_device = select_device(device_flag)
        self.device = f"{self.torch_device.type} ({torch.get_num_threads()} threads)" \
            if self.torch_device.type == "cpu" else torch.cuda.get_device_name(self.torch_device)
        self.config = config
        self.model = RecurrentClassifier(config).to(self.torch_device)
        self.optimizer = make_optimizer(self.model, config)

    def _tensors(self, images: np.ndarray, labels: np.ndarray):
        return torch.from_numpy(images).to(self.torch_device), torch.from_numpy(labels).to(self.torch_device)

    def train_step(self, images, labels, lr):
        loss, correct = train_step(self.model, self.optimizer, *self._tensors(images, labels), lr, self.config.grad_clip)
        return float(loss), int(correct)

    def eval_batch(self, images, labels):
        loss, correct = eval_step(self.model, *self._tensors(images, labels))
        return float(loss), int(correct)

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


def train(config: Config, options=None, **datasets) -> dict:
    """Importable entry point: train (or evaluate) and return the summary."""
    return training.train(TorchBackend, config, options or training.RunOptions(), "torch", **datasets)


def main(argv: Sequence[str] | None = None) -> dict:
    return training.run("torch", TorchBackend, argv)


if __name__ == "__main__":
    run_cli(main)
