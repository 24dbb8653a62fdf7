"""Layers that move data without computing: Concat, Split, Flatten, Reshape, Silence."""

from __future__ import annotations

import torch
from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, register


class Concat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.axis)


@register("Concat")
def concat(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.concat_param
    ndim = len(ctx.input_shapes[0])
    axis = canonical_axis(p.concat_dim if p.HasField("concat_dim") else p.axis, ndim)
    for shape in ctx.input_shapes[1:]:
        if len(shape) != ndim or any(a != b for i, (a, b) in enumerate(zip(shape, ctx.input_shapes[0]))
                                     if i != axis):
            raise ctx.error(f"bottoms differ outside axis {axis}: "
                            f"{[list(s) for s in ctx.input_shapes]}")
    return make(Concat, axis=axis)


class Split(nn.Module):
    """One bottom handed to several tops."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.count


@register("Split")
def split(ctx: LayerContext) -> nn.Module:
    if ctx.num_tops == 1:
        return make(nn.Identity)
    return make(Split, count=ctx.num_tops)


class Flatten(nn.Module):
    def __init__(self, axis: int, end_axis: int) -> None:
        super().__init__()
        self.axis, self.end_axis = axis, end_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.axis, self.end_axis)


@register("Flatten")
def flatten(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.flatten_param
    ndim = len(ctx.input_shapes[0])
    return make(Flatten, axis=canonical_axis(p.axis, ndim), end_axis=canonical_axis(p.end_axis, ndim))


class Reshape(nn.Module):
    """Caffe's Reshape: axes ``[start, end)`` replaced by ``dims``; 0 copies the input axis at the same
    position, -1 is inferred.  Computed per call, so the batch size may change."""

    def __init__(self, dims: tuple[int, ...], start: int, end: int) -> None:
        super().__init__()
        self.dims, self.start, self.end = dims, start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        end = x.dim() if self.end < 0 else self.end
        middle = [x.shape[self.start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        return x.reshape(*x.shape[:self.start], *middle, *x.shape[end:])


@register("Reshape")
def reshape(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.reshape_param
    shape = ctx.input_shapes[0]
    ndim = len(shape)
    # Caffe: axis may be negative (counted as ndim + 1 + axis, so -1 means "after the last axis").
    start = p.axis if p.axis >= 0 else ndim + 1 + p.axis
    if not 0 <= start <= ndim:
        raise ctx.error(f"axis {p.axis} is out of range for a {ndim}-D input")
    if p.num_axes < -1:
        raise ctx.error(f"num_axes must be -1 or non-negative, got {p.num_axes}")
    end = ndim if p.num_axes == -1 else start + p.num_axes
    if end > ndim:
        raise ctx.error(f"axis {p.axis} + num_axes {p.num_axes} exceeds the {ndim} input axes")
    dims = tuple(int(d) for d in p.shape.dim)
    if sum(d == -1 for d in dims) > 1:
        raise ctx.error("at most one dim may be -1")
    for i, d in enumerate(dims):
        if d == 0 and start + i >= end:
            raise ctx.error(f"dim {i} is 0 but the input has no axis {start + i} in the reshaped range")
        if d < -1:
            raise ctx.error(f"dim {i} is {d}")
    return make(Reshape, dims=dims, start=start, end=-1 if p.num_axes == -1 else end)


class Silence(nn.Module):
    def forward(self, *xs: torch.Tensor) -> tuple[()]:
        return ()


@register("Silence")
def silence(ctx: LayerContext) -> nn.Module:
    return make(Silence)
