"""ArgMax and Reduction: layers that collapse axes."""

from __future__ import annotations

import math

import torch
from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, register


def caffe_top_k(x: torch.Tensor, dim: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest values along ``dim`` and their indices, ordered as Caffe's ArgMax orders them.

    Caffe ``std::partial_sort``s (value, index) pairs with ``std::greater``: among equal values the
    larger index ranks first.  A stable descending sort of the reversed axis gives that order.
    """
    last = x.shape[dim] - 1
    values, order = torch.sort(x.flip(dim), dim=dim, descending=True, stable=True)
    return values.narrow(dim, 0, k), last - order.narrow(dim, 0, k)


class ArgMax(nn.Module):
    """Indices (as floats) of the ``top_k`` largest values, or with ``out_max_val`` the values.

    Along ``axis`` the output has ``top_k`` in place of that axis and holds the values instead of the
    indices when ``out_max_val``.  Without an axis each sample is flattened and the output is
    N x 1 x top_k (indices) or N x 2 x top_k (indices, then values), padded with axes of 1 to the
    input's number of axes.
    """

    def __init__(self, top_k: int, out_max_val: bool, axis: int | None) -> None:
        super().__init__()
        self.top_k, self.out_max_val, self.axis = top_k, out_max_val, axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is not None:
            values, indices = caffe_top_k(x, self.axis, self.top_k)
            return values if self.out_max_val else indices.to(x.dtype)
        values, indices = caffe_top_k(x.reshape(x.shape[0], -1), 1, self.top_k)
        parts = [indices.to(x.dtype), values] if self.out_max_val else [indices.to(x.dtype)]
        return torch.stack(parts, 1).reshape(x.shape[0], len(parts), self.top_k, *([1] * (x.dim() - 3)))


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


class Reduction(nn.Module):
    """SUM, ASUM (sum of absolute values), SUMSQ or MEAN over ``axis`` and every axis after it, times
    ``coeff``; the output keeps the axes before ``axis``."""

    def __init__(self, operation: str, axis: int, coeff: float) -> None:
        super().__init__()
        self.operation, self.axis, self.coeff = operation, axis, coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(*x.shape[:self.axis], -1)
        if self.operation == "ASUM":
            rows = rows.abs()
        elif self.operation == "SUMSQ":
            rows = rows * rows
        coeff = self.coeff / rows.shape[-1] if self.operation == "MEAN" else self.coeff
        total = rows.sum(-1)
        return total if coeff == 1 else total * coeff


@register("Reduction", bottoms=1, tops=1)
def reduction(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.reduction_param
    axis = canonical_axis(ctx, p.axis, len(ctx.input_shapes[0]))
    operation = type(p).ReductionOp.Name(p.operation)
    return make(Reduction, operation=operation, axis=axis, coeff=float(p.coeff))
