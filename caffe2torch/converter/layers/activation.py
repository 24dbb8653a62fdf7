"""Element-wise activations whose Caffe semantics need no learned blob (plus PReLU, which has one)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register


class ReLU(nn.Module):
    """``max(x, 0) + negative_slope * min(x, 0)``."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0:
            return torch.relu(x)
        return F.leaky_relu(x, self.negative_slope)


@register("ReLU")
def relu(ctx: LayerContext) -> nn.Module:
    return make(ReLU, negative_slope=float(ctx.layer.relu_param.negative_slope))


@register("Sigmoid")
def sigmoid(ctx: LayerContext) -> nn.Module:
    return make(nn.Sigmoid)


@register("TanH")
def tanh(ctx: LayerContext) -> nn.Module:
    return make(nn.Tanh)


@register("Dropout")
def dropout(ctx: LayerContext) -> nn.Module:
    """Identity at test time: Caffe scales by 1 / (1 - ratio) while training, not at inference."""
    return make(nn.Identity)
