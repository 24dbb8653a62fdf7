"""Pooling with Caffe's rules: output size rounded up (unless ``round_mode: FLOOR``), a last window starting
in the padding dropped, and average pooling divided by the window clipped to the padded input (not by k*k,
nor by the count of real pixels)."""

from __future__ import annotations

from torch import nn

from caffe2torch.converter.layers.common import make, spatial_values
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.pooling import Pooling, pooled_size


@register("Pooling", bottoms=1, tops=1)
def pooling(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.pooling_param
    method = type(p).PoolMethod.Name(p.pool)
    if method not in ("MAX", "AVE"):
        raise ctx.error(f"pooling method {method} is not supported (MAX and AVE are)")
    if len(ctx.input_shapes[0]) != 4:
        raise ctx.error(f"pooling needs a 4-D input, got shape {list(ctx.input_shapes[0])}")
    if p.global_pooling:
        if p.HasField("pad") and p.pad or p.HasField("stride") and p.stride != 1:
            raise ctx.error("global pooling takes no padding and stride 1")
        return make(Pooling, method=method, kernel=(0, 0), stride=(1, 1), pad=(0, 0), global_pooling=True,
                    round_up=True)
    try:
        kernel = spatial_values([p.kernel_size] if p.HasField("kernel_size") else [], p.kernel_h, p.kernel_w,
                                p.HasField("kernel_h"), 0, 2, "kernel")
        stride = spatial_values([p.stride] if p.HasField("stride") else [], p.stride_h, p.stride_w,
                                p.HasField("stride_h"), 1, 2, "stride")
        pad = spatial_values([p.pad] if p.HasField("pad") else [], p.pad_h, p.pad_w, p.HasField("pad_h"), 0,
                             2, "pad")
    except ValueError as error:
        raise ctx.error(str(error)) from None
    if 0 in kernel:
        raise ctx.error("kernel size must be given and positive")
    if 0 in stride:
        raise ctx.error(f"stride {stride} must be positive")
    if any(pd >= k for pd, k in zip(pad, kernel)):
        raise ctx.error(f"pad {pad} must be smaller than the kernel {kernel}")
    round_up = type(p).RoundMode.Name(p.round_mode) == "CEIL"
    size = ctx.input_shapes[0][2:]
    if any(pooled_size(*axis, round_up) < 1 for axis in zip(size, kernel, stride, pad)):
        raise ctx.error(f"kernel {kernel} is larger than the input {list(size)} padded by {pad}")
    return make(Pooling, method=method, kernel=kernel, stride=stride, pad=pad, global_pooling=False,
                round_up=round_up)
