"""Softmax along ``axis`` (default 1), as Caffe computes it: subtract the max, exp, divide by the sum."""

from __future__ import annotations

import torch
from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, register


class Softmax(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, self.axis)


@register("Softmax", bottoms=1, tops=1)
def softmax(ctx: LayerContext) -> nn.Module:
    return make(Softmax, axis=canonical_axis(ctx, ctx.layer.softmax_param.axis, len(ctx.input_shapes[0])))
