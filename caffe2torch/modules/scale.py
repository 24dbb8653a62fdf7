"""Scale and Bias: multiply (add) by a learned operand or by a second input, reshaped to broadcast."""

from __future__ import annotations

import torch
from torch import nn


class Scale(nn.Module):
    """``x * scale (+ bias)``, the factor a learned blob or the second input, reshaped to broadcast."""

    def __init__(self, view: tuple[int, ...], learned_shape: tuple[int, ...] | None,
                 bias_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.view = view
        self.weight = nn.Parameter(torch.ones(learned_shape)) if learned_shape is not None else None
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    def forward(self, x: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
        factor = self.weight if factor is None else factor
        y = x * factor.reshape(self.view)
        if self.bias is not None:
            y = y + self.bias.reshape(self.view)
        return y


class Bias(nn.Module):
    """``x + bias``, the bias a learned blob or the second input, reshaped to broadcast."""

    def __init__(self, view: tuple[int, ...], learned_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.view = view
        self.bias = nn.Parameter(torch.zeros(learned_shape)) if learned_shape is not None else None

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return x + (self.bias if bias is None else bias).reshape(self.view)
