"""InnerProduct (a Linear on the input flattened from an axis) and Embed (a lookup of weight rows)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.modules.shapes import axis_index


class InnerProduct(nn.Linear):
    """An ``nn.Linear`` applied to the input flattened from ``axis``."""

    def __init__(self, in_features: int, out_features: int, bias: bool, axis: int) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.axis = axis

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The axes before ``axis``, then ``out_features``; the axes from ``axis`` on hold ``in_features`` values."""
        shape = tuple(input_shapes[0])
        axis = axis_index(self.axis, len(shape))
        if math.prod(shape[axis:]) != self.in_features:
            raise ValueError(f"the input of shape {list(shape)} holds {math.prod(shape[axis:])} values per row from "
                             f"axis {axis}, the weight takes {self.in_features}")
        return [(*shape[:axis], self.out_features)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(self.axis))


class Embed(nn.Module):
    """Row ``int(x)`` of the [input_dim, num_output] weight for every element of ``x`` (indices held as floats,
    truncated toward zero as Caffe's ``static_cast<int>``), plus the bias; the output gains a last axis."""

    def __init__(self, input_dim: int, num_output: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(input_dim, num_output))
        self.bias = nn.Parameter(torch.empty(num_output)) if bias else None

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [(*input_shapes[0], self.weight.shape[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.embedding(x.long(), self.weight)
        return y if self.bias is None else y + self.bias
