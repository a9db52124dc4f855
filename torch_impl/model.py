"""The four MNIST-as-a-sequence classifiers in PyTorch.

    out, _ = rnn(x, h0)            # (B, T=28, F=28) -> (B, T, H), all layers, zero h0 (and c0)
    logits = fc(flatten(out))      # head 'all':  Linear(H * T, 10)
    logits = fc(out[:, -1, :])     # head 'last': Linear(H, 10)

Parameter names (`rnn.weight_ih_l0`, ..., `fc.weight`) are the checkpoint format's.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.config import Config

RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentClassifier(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.cell, self.head = config.cell, config.head
        self.num_layers, self.hidden_size = config.num_layers, config.hidden_size
        self.rnn = RECURRENT[config.cell](config.input_size, config.hidden_size, config.num_layers, batch_first=True)
        self.fc = nn.Linear(config.head_features, config.num_classes)

    def recurrent(self, x: torch.Tensor):
        """Every step's top-layer output and the final states: out (B, T, H), h_n (L, B, H)[, c_n]."""
        h0 = torch.zeros(self.num_layers, x.shape[0], self.hidden_size, device=x.device, dtype=x.dtype)
        state = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0
        return self.rnn(x, state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.recurrent(x)  # (B, T, F) -> (B, T, H)
        features = out.reshape(out.shape[0], -1) if self.head == "all" else out[:, -1, :]  # (B, T*H) or (B, H)
        return self.fc(features)  # (B, classes)


def get_params(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: value.detach().cpu().numpy().copy() for name, value in model.state_dict().items()}


def set_params(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    device = next(model.parameters()).device
    model.load_state_dict({name: torch.from_numpy(np.asarray(value)).to(device) for name, value in params.items()},
                          strict=True)
