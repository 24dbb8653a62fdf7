"""Softmax along an axis."""

from __future__ import annotations

import torch
from torch import nn

from caffe2torch.modules.shapes import axis_index


class Softmax(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        axis_index(self.axis, len(shape))
        return [shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, self.axis)
