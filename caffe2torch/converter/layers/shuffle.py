"""ShuffleChannel (ShuffleNet's fork) and Reorg (the YOLOv2 Caffe ports): layers that only reorder values.

Parameters are read with ``ctx.param``, so a user's fork caffe.proto (--caffe-proto) is honoured.
"""

from __future__ import annotations

from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.layers.resize import given
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.shuffle import Reorg, ShuffleChannel


@register("ShuffleChannel", bottoms=1, tops=1)
def shuffle_channel(ctx: LayerContext) -> nn.Module:
    group = int(getattr(ctx.param("shuffle_channel_param"), "group", 1))
    shape = ctx.input_shapes[0]
    if not 2 <= len(shape) <= 4:
        raise ctx.error(f"needs 2 to 4 axes (the fork's top is num x channels x height x width), "
                        f"got shape {list(shape)}")
    if group < 1 or shape[1] % group:
        raise ctx.error(f"group {group} does not divide the {shape[1]} channels")
    return make(ShuffleChannel, group=group)


@register("Reorg", bottoms=1, tops=1)
def reorg(ctx: LayerContext) -> nn.Module:
    """darknet's reorg with its channel/stride quirk (see :class:`Reorg`), as the YOLOv2 ports (reorg_param
    at Intel caffe's number) run it; their checks: stride given and positive, dividing the height and the
    width, its square dividing the channels."""
    p = ctx.param("reorg_param")
    shape = ctx.input_shapes[0]
    if len(shape) != 4:
        raise ctx.error(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
    if not given(p, "stride") or p.stride < 1:
        raise ctx.error("reorg_param needs a positive stride")
    stride = int(p.stride)
    _, channels, height, width = shape
    if channels % (stride * stride) or height % stride or width % stride:
        raise ctx.error(f"stride {stride} must divide the height {height} and width {width}, and its square "
                        f"the {channels} channels")
    return make(Reorg, stride=stride, reverse=bool(getattr(p, "reverse", False)))
