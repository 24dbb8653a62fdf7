"""ArgMax and Reduction: layers that collapse axes."""

from __future__ import annotations

import math

from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.reduction import ArgMax, Reduction


@register("ArgMax", bottoms=1, tops=1)
def argmax(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.argmax_param
    shape = ctx.input_shapes[0]
    if p.top_k < 1:
        raise ctx.error(f"top_k must be at least 1, got {p.top_k}")
    axis = canonical_axis(ctx, p.axis, len(shape)) if p.HasField("axis") else None
    size = shape[axis] if axis is not None else math.prod(shape[1:])
    if p.top_k > size:
        where = f"axis {axis}" if axis is not None else "each sample"
        raise ctx.error(f"top_k {p.top_k} exceeds the {size} values of {where}")
    return make(ArgMax, top_k=int(p.top_k), out_max_val=p.out_max_val, axis=axis)


@register("Reduction", bottoms=1, tops=1)
def reduction(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.reduction_param
    axis = canonical_axis(ctx, p.axis, len(ctx.input_shapes[0]))
    operation = type(p).ReductionOp.Name(p.operation)
    return make(Reduction, operation=operation, axis=axis, coeff=float(p.coeff))
