"""Softmax along an axis."""

from __future__ import annotations

import torch
from torch import nn


class Softmax(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, self.axis)
