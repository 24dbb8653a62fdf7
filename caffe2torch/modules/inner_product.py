"""InnerProduct (a Linear on the input flattened from an axis) and Embed (a lookup of weight rows)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InnerProduct(nn.Linear):
    """An ``nn.Linear`` applied to the input flattened from ``axis``."""

    def __init__(self, in_features: int, out_features: int, bias: bool, axis: int) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(self.axis))


class Embed(nn.Module):
    """Row ``int(x)`` of the [input_dim, num_output] weight for every element of ``x`` (indices held as floats,
    truncated toward zero as Caffe's ``static_cast<int>``), plus the bias; the output gains a last axis."""

    def __init__(self, input_dim: int, num_output: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(input_dim, num_output))
        self.bias = nn.Parameter(torch.empty(num_output)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.embedding(x.long(), self.weight)
        return y if self.bias is None else y + self.bias
