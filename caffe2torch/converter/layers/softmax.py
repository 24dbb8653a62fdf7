"""Softmax along ``axis`` (default 1), as Caffe computes it: subtract the max, exp, divide by the sum."""

from __future__ import annotations

from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.softmax import Softmax


@register("Softmax", bottoms=1, tops=1)
def softmax(ctx: LayerContext) -> nn.Module:
    return make(Softmax, axis=canonical_axis(ctx, ctx.layer.softmax_param.axis, len(ctx.input_shapes[0])))
