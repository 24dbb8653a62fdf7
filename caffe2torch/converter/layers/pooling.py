"""Pooling with Caffe's rules: output size rounded up (unless ``round_mode: FLOOR``), a last window starting
in the padding dropped, and average pooling divided by the window clipped to the padded input (not by k*k,
nor by the count of real pixels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.converter.layers.common import make, spatial_values
from caffe2torch.converter.registry import LayerContext, register


def pooled_size(size: int, kernel: int, stride: int, pad: int, round_up: bool = True) -> int:
    """Caffe's PoolingLayer::Reshape for one axis (``round_up``: round_mode CEIL, the default), in integers."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if round_up else span // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1  # the last window would start inside the padding
    return out


def average_divisors(size: int, kernel: int, stride: int, pad: int, count: int,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Per output position: ``min(start + k, size + pad) - start`` with ``start = i*stride - pad``, as one
    integer tensor (computed by torch, not by a Python loop over the positions)."""
    start = torch.arange(count, device=device) * stride - pad
    return (start + kernel).clamp(max=size + pad) - start


def caffe_pool2d(x: torch.Tensor, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], round_up: bool = True) -> torch.Tensor:
    """2-D MAX or AVE pooling over the last two axes exactly as Caffe computes it."""
    height, width = x.shape[-2:]
    out_h = pooled_size(height, kernel[0], stride[0], pad[0], round_up)
    out_w = pooled_size(width, kernel[1], stride[1], pad[1], round_up)
    # Pad so that every window Caffe visits lies inside; windows past height + pad are clipped by Caffe,
    # which the divisor below (AVE) and the -inf fill (MAX) reproduce.
    extra_h = (out_h - 1) * stride[0] + kernel[0] - height - pad[0]
    extra_w = (out_w - 1) * stride[1] + kernel[1] - width - pad[1]
    padding = (pad[1], max(extra_w, 0), pad[0], max(extra_h, 0))
    if method == "MAX":
        if any(padding):
            x = F.pad(x, padding, value=float("-inf"))
        y = F.max_pool2d(x, kernel, stride)
    else:
        if any(padding):
            x = F.pad(x, padding)
        y = F.avg_pool2d(x, kernel, stride, divisor_override=1)
        div_h = average_divisors(height, kernel[0], stride[0], pad[0], out_h, y.device).to(y.dtype)
        div_w = average_divisors(width, kernel[1], stride[1], pad[1], out_w, y.device).to(y.dtype)
        y = y / (div_h[:, None] * div_w[None, :])
    return y[..., :out_h, :out_w]


class Pooling(nn.Module):
    """Caffe's Pooling layer (MAX or AVE; ``global_pooling`` pools the whole map; ``round_up`` false is
    ``round_mode: FLOOR``)."""

    def __init__(self, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], global_pooling: bool, round_up: bool) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.global_pooling, self.round_up = global_pooling, round_up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pooling:
            if self.method == "MAX":
                return x.amax(dim=(-2, -1), keepdim=True)
            return x.sum(dim=(-2, -1), keepdim=True) / (x.shape[-2] * x.shape[-1])
        return caffe_pool2d(x, self.method, self.kernel, self.stride, self.pad, self.round_up)


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
