"""Pooling with Caffe's rules: output size rounded up (unless ``round_up`` is false), a last window starting
in the padding dropped, and average pooling divided by the window clipped to the padded input (not by k*k,
nor by the count of real pixels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    """2-D MAX or AVE pooling over the last two axes exactly as Caffe computes it.

    torch's own pooling with ``ceil_mode`` follows Caffe's rules (the same output size, the same dropped last
    window, and for ``count_include_pad`` the same divisor clipped to the padded input), so it is used
    wherever torch accepts the padding (at most half the kernel) and agrees on the output size; it is also
    what exports to ONNX. The rest, which Caffe allows, takes the explicit path.
    """
    if all(2 * p <= k and _torch_pooled_size(size, k, s, p, round_up) == pooled_size(size, k, s, p, round_up)
           for size, k, s, p in zip(x.shape[-2:], kernel, stride, pad)):
        if method == "MAX":
            return F.max_pool2d(x, kernel, stride, pad, ceil_mode=round_up)
        return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=round_up, count_include_pad=True)
    return padded_pool2d(x, method, kernel, stride, pad, round_up)


def _torch_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """torch's pooling output size: Caffe's, except that with ``ceil_mode`` torch drops a last window
    starting past the input even without padding, where Caffe keeps it (and pools nothing: -FLT_MAX for MAX,
    0/0 for AVE)."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def padded_pool2d(x: torch.Tensor, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                  pad: tuple[int, int], round_up: bool = True) -> torch.Tensor:
    """Caffe's pooling for any padding: lay each axis out so that plain pooling (no padding) visits Caffe's
    windows, pool, and divide by Caffe's divisors (AVE).

    An axis is either padded explicitly (fill -inf for MAX, 0 for AVE), or, where that would be longer, its
    windows are gathered one after another, each clipped to the input and filled up to the longest: kernel
    and padding can be huge (Caffe only asks pad < kernel), and this way memory stays within the output times
    the clipped window.  Either way every window holds its real values in Caffe's order, so sums are Caffe's.
    """
    fill = float("-inf") if method == "MAX" else 0.0
    sizes = tuple(x.shape[-2:])
    outs = tuple(pooled_size(size, k, s, p, round_up) for size, k, s, p in zip(sizes, kernel, stride, pad))
    windows = []
    for axis, size, out, k, s, p in zip((-2, -1), sizes, outs, kernel, stride, pad):
        x, window = _lay_out_axis(x, axis, size, out, k, s, p, fill)
        windows.append(window)
    if method == "MAX":
        y = F.max_pool2d(x, *zip(*windows))
    else:
        y = F.avg_pool2d(x, *zip(*windows), divisor_override=1)
        div_h = average_divisors(sizes[0], kernel[0], stride[0], pad[0], outs[0], y.device).to(y.dtype)
        div_w = average_divisors(sizes[1], kernel[1], stride[1], pad[1], outs[1], y.device).to(y.dtype)
        y = y / (div_h[:, None] * div_w[None, :])
    return y[..., :outs[0], :outs[1]]


def _lay_out_axis(x: torch.Tensor, axis: int, size: int, out: int, kernel: int, stride: int, pad: int,
                  fill: float) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` laid out along ``axis`` for plain pooling, and that pooling's (kernel, stride) on the axis."""
    longest = max(_longest_window(size, out, kernel, stride, pad), 1)
    padded_length = (out - 1) * stride + kernel
    if padded_length <= out * longest:
        # Windows past size + pad are clipped by Caffe, which the fill (MAX) and the divisors (AVE) reproduce.
        after = max(padded_length - size - pad, 0)
        padding = [0, 0] * (-axis - 1) + [pad, after]
        return (F.pad(x, padding, value=fill) if pad or after else x), (kernel, stride)
    if size == 0:  # nothing to gather: every window holds the fill alone
        shape = list(x.shape)
        shape[axis] = out * longest
        return x.new_full(shape, fill), (longest, longest)
    start = torch.arange(out, device=x.device) * stride - pad
    low, high = start.clamp(0, size), (start + kernel).clamp(0, size)
    offsets = torch.arange(longest, device=x.device)
    index = low[:, None] + offsets
    inside = index < high[:, None]
    gathered = x.index_select(axis, index.clamp(max=size - 1).flatten())
    mask_shape = [out * longest] + [1] * (-axis - 1)
    gathered = gathered.masked_fill(~inside.flatten().view(mask_shape), fill)
    return gathered, (longest, longest)


def _longest_window(size: int, out: int, kernel: int, stride: int, pad: int) -> int:
    """The most input positions one of the ``out`` windows (starting at ``i * stride - pad``) holds, in plain
    integers (a shape, which tracing and export need static).  The clipped length is concave in the start and
    at its most, ``min(kernel, size)``, for starts between ``min(0, size - kernel)`` and ``max(0, size -
    kernel)``: the first start at or past that range, the one before it and the two ends are the candidates."""
    def length(i: int) -> int:
        start = i * stride - pad
        return max(min(start + kernel, size) - max(start, 0), 0)

    first = -(-(min(0, size - kernel) + pad) // stride)  # the first window starting at or past the range
    return max(length(i) for i in {0, out - 1, min(max(first, 0), out - 1), min(max(first - 1, 0), out - 1)})


class Pooling(nn.Module):
    """Caffe's Pooling layer (MAX or AVE; ``global_pooling`` pools the whole map; ``round_up`` false is
    ``round_mode: FLOOR``)."""

    def __init__(self, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], global_pooling: bool, round_up: bool) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.global_pooling, self.round_up = global_pooling, round_up

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Caffe's PoolingLayer::Reshape: the last two axes pooled (to 1 x 1 with ``global_pooling``)."""
        shape = tuple(input_shapes[0])
        if self.global_pooling:
            if len(shape) < 2:
                raise ValueError(f"needs at least 2 axes, got shape {list(shape)}")
            return [(*shape[:-2], 1, 1)]
        if len(shape) not in (3, 4):
            raise ValueError(f"pooling needs a 4-D input, got shape {list(shape)}")
        sizes = tuple(pooled_size(size, k, s, p, self.round_up)
                      for size, k, s, p in zip(shape[-2:], self.kernel, self.stride, self.pad))
        if any(size < 1 for size in sizes):
            raise ValueError(f"kernel {tuple(self.kernel)} is larger than the input {list(shape[-2:])} padded by "
                             f"{tuple(self.pad)}")
        return [(*shape[:-2], *sizes)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pooling:
            if self.method == "MAX":
                return x.amax(dim=(-2, -1), keepdim=True)
            return x.sum(dim=(-2, -1), keepdim=True) / (x.shape[-2] * x.shape[-1])
        return caffe_pool2d(x, self.method, self.kernel, self.stride, self.pad, self.round_up)
