"""Eltwise (SUM with coefficients, PROD, MAX) and the SENet release's Axpy."""

from __future__ import annotations

import torch
from torch import nn

from caffe2torch.modules.shapes import check_same_shapes


class Eltwise(nn.Module):
    """Element-wise SUM (``coeff`` per bottom, applied as Caffe's axpy chain), PROD or MAX."""

    def __init__(self, operation: str, coeffs: tuple[float, ...]) -> None:
        super().__init__()
        self.operation, self.coeffs = operation, coeffs

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The bottoms' one shape (Caffe's Eltwise takes no broadcasting); SUM needs one coefficient each."""
        if self.operation == "SUM" and len(input_shapes) != len(self.coeffs):
            raise ValueError(f"{len(self.coeffs)} coefficients for {len(input_shapes)} inputs")
        return [check_same_shapes(input_shapes, "bottoms")]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            y = xs[0]
            for x in xs[1:]:
                y = y * x
            return y
        if self.operation == "MAX":
            y = xs[0]
            for x in xs[1:]:
                y = torch.maximum(y, x)
            return y
        y = xs[0] if self.coeffs[0] == 1 else xs[0] * self.coeffs[0]
        for coeff, x in zip(self.coeffs[1:], xs[1:]):
            y = y + (x if coeff == 1 else x * coeff)
        return y


class Axpy(nn.Module):
    """``a * x + y`` with ``a`` of shape N x C (x 1 x 1): the SE gate applied to the residual branch.

    Bottoms are (a, x, y), as the release's axpy_layer.cpp reads them: a scales bottom[1] and bottom[2]
    is added (OpenCV's importer gets this backwards).
    """

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """x's shape: x and y alike, a one value per (n, c) of x (N x C, or N x C x 1 x 1)."""
        a, x, y = (tuple(shape) for shape in input_shapes)
        if x != y:
            raise ValueError(f"x and y differ in shape: {list(x)} vs {list(y)}")
        if len(x) < 2 or len(a) < 2 or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
            raise ValueError(f"a must be N x C x 1 x 1 for x of shape {list(x)}, got {list(a)}")
        return [x]

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return a.reshape(a.shape[0], a.shape[1], *([1] * (x.dim() - 2))) * x + y
