"""Scale and Bias: multiply (add) by a learned blob or by a second bottom, broadcast from ``axis`` over
``num_axes`` axes.  SE-BN-Inception uses a two-bottom Scale at ``axis: 0`` after a Reshape to N x C."""

from __future__ import annotations

from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, Shape, register
from caffe2torch.modules.scale import Bias, Scale


def broadcast_shape(ctx: LayerContext, axis: int, num_axes: int) -> tuple[Shape, tuple[int, ...]]:
    """The operand's shape and the view that broadcasts it against the first bottom (Caffe's rules).

    With two bottoms the second bottom's shape decides (num_axes is ignored); the view keeps the
    batch axis free (-1) when the operand starts at axis 0, so the net runs at any batch size.
    """
    shape = ctx.input_shapes[0]
    axis = canonical_axis(ctx, axis, len(shape))
    if len(ctx.input_shapes) > 1:
        operand = ctx.input_shapes[1]
    else:
        if num_axes < -1:
            raise ctx.error(f"num_axes must be -1 or non-negative, got {num_axes}")
        end = len(shape) if num_axes == -1 else axis + num_axes
        if end > len(shape):
            raise ctx.error(f"axis {axis} + num_axes {num_axes} exceeds the {len(shape)} axes of the input")
        operand = shape[axis:end]
    if tuple(shape[axis:axis + len(operand)]) != tuple(operand):
        raise ctx.error(f"operand of shape {list(operand)} does not match input shape {list(shape)} "
                        f"from axis {axis}")
    view = (1,) * axis + tuple(operand) + (1,) * (len(shape) - axis - len(operand))
    if axis == 0 and view:
        view = (-1,) + view[1:]
    return tuple(operand), view


@register("Scale", bottoms=(1, 2), tops=1)
def scale(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.scale_param
    operand, view = broadcast_shape(ctx, p.axis, p.num_axes)
    two_bottoms = len(ctx.input_shapes) > 1
    module = make(Scale, view=view, learned_shape=None if two_bottoms else operand,
                  bias_shape=operand if p.bias_term else None)
    index = 0
    if not two_bottoms:
        module.weight = nn.Parameter(ctx.blob(0, operand, init="ones"))
        index = 1
    if p.bias_term:
        module.bias = nn.Parameter(ctx.blob(index, operand, init="zeros"))
    return module


@register("Bias", bottoms=(1, 2), tops=1)
def bias(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.bias_param
    operand, view = broadcast_shape(ctx, p.axis, p.num_axes)
    two_bottoms = len(ctx.input_shapes) > 1
    module = make(Bias, view=view, learned_shape=None if two_bottoms else operand)
    if not two_bottoms:
        module.bias = nn.Parameter(ctx.blob(0, operand, init="zeros"))
    return module
