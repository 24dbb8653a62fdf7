"""ArgMax and Reduction: layers that collapse axes, ordered and scaled as Caffe does."""

from __future__ import annotations

import math

import torch
from torch import nn

from caffe2torch.modules.shapes import axis_index


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

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """``top_k`` in place of ``axis``; without one, N x (1 or 2) x top_k padded with 1s to the input's axes."""
        shape = tuple(input_shapes[0])
        if self.axis is not None:
            axis = axis_index(self.axis, len(shape))
            if self.top_k > shape[axis]:
                raise ValueError(f"top_k {self.top_k} exceeds the {shape[axis]} values of axis {axis}")
            return [(*shape[:axis], self.top_k, *shape[axis + 1:])]
        if not shape:
            raise ValueError("needs at least 1 axis")
        if self.top_k > math.prod(shape[1:]):
            raise ValueError(f"top_k {self.top_k} exceeds the {math.prod(shape[1:])} values of each sample")
        return [(shape[0], 2 if self.out_max_val else 1, self.top_k, *([1] * (len(shape) - 3)))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is not None:
            values, indices = caffe_top_k(x, self.axis, self.top_k)
            return values if self.out_max_val else indices.to(x.dtype)
        values, indices = caffe_top_k(x.reshape(x.shape[0], -1), 1, self.top_k)
        parts = [indices.to(x.dtype), values] if self.out_max_val else [indices.to(x.dtype)]
        return torch.stack(parts, 1).reshape(x.shape[0], len(parts), self.top_k, *([1] * (x.dim() - 3)))


class Reduction(nn.Module):
    """SUM, ASUM (sum of absolute values), SUMSQ or MEAN over ``axis`` and every axis after it, times
    ``coeff``; the output keeps the axes before ``axis``."""

    def __init__(self, operation: str, axis: int, coeff: float) -> None:
        super().__init__()
        self.operation, self.axis, self.coeff = operation, axis, coeff

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The axes before ``axis`` (none: a scalar)."""
        shape = tuple(input_shapes[0])
        return [shape[:axis_index(self.axis, len(shape))]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(*x.shape[:self.axis], -1)
        if self.operation == "ASUM":
            rows = rows.abs()
        elif self.operation == "SUMSQ":
            rows = rows * rows
        coeff = self.coeff / rows.shape[-1] if self.operation == "MEAN" else self.coeff
        total = rows.sum(-1)
        return total if coeff == 1 else total * coeff
