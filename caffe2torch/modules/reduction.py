"""ArgMax and Reduction: layers that collapse axes, ordered and scaled as Caffe does."""

from __future__ import annotations

import torch
from torch import nn


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
