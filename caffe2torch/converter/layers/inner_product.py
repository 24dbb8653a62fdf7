"""InnerProduct: flatten from ``axis`` and multiply by the [num_output, K] weight (or [K, num_output]
when ``transpose``)."""

from __future__ import annotations

import math

import torch
from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, register


class InnerProduct(nn.Linear):
    """An ``nn.Linear`` applied to the input flattened from ``axis``."""

    def __init__(self, in_features: int, out_features: int, bias: bool, axis: int) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.flatten(self.axis))


@register("InnerProduct")
def inner_product(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.inner_product_param
    shape = ctx.input_shapes[0]
    axis = canonical_axis(p.axis, len(shape))
    k = math.prod(shape[axis:])
    module = make(InnerProduct, in_features=k, out_features=p.num_output, bias=p.bias_term, axis=axis)
    if p.transpose:
        module.weight = nn.Parameter(ctx.blob(0, (k, p.num_output)).t().contiguous())
    else:
        module.weight = nn.Parameter(ctx.blob(0, (p.num_output, k)))
    if p.bias_term:
        module.bias = nn.Parameter(ctx.blob(1, (p.num_output,), init="zeros"))
    return module
