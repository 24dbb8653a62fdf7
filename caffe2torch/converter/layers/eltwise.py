"""Eltwise (SUM with coefficients, PROD, MAX) and the SENet release's Axpy."""

from __future__ import annotations

import torch
from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register


class Eltwise(nn.Module):
    """Element-wise SUM (``coeff`` per bottom, applied as Caffe's axpy chain), PROD or MAX."""

    def __init__(self, operation: str, coeffs: tuple[float, ...]) -> None:
        super().__init__()
        self.operation, self.coeffs = operation, coeffs

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


@register("Eltwise", bottoms=(2, None), tops=1)
def eltwise(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.eltwise_param
    operation = type(p).EltwiseOp.Name(p.operation)
    shapes = ctx.input_shapes
    if any(s != shapes[0] for s in shapes[1:]):
        raise ctx.error(f"bottoms have different shapes: {[list(s) for s in shapes]}")
    if p.coeff and operation != "SUM":
        raise ctx.error("coeff applies to SUM only")
    if p.coeff and len(p.coeff) != len(shapes):
        raise ctx.error(f"{len(p.coeff)} coeff values for {len(shapes)} bottoms")
    coeffs = tuple(float(c) for c in p.coeff) or (1.0,) * len(shapes)
    return make(Eltwise, operation=operation, coeffs=coeffs)


class Axpy(nn.Module):
    """``a * x + y`` with ``a`` of shape N x C (x 1 x 1): the SE gate applied to the residual branch.

    Bottoms are (a, x, y), as the release's axpy_layer.cpp reads them: a scales bottom[1] and bottom[2]
    is added (OpenCV's importer gets this backwards).
    """

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return a.reshape(a.shape[0], a.shape[1], *([1] * (x.dim() - 2))) * x + y


@register("Axpy", bottoms=3, tops=1)
def axpy(ctx: LayerContext) -> nn.Module:
    a, x, y = ctx.input_shapes
    if x != y:
        raise ctx.error(f"x and y differ in shape: {list(x)} vs {list(y)}")
    if tuple(a[:2]) != tuple(x[:2]) or any(d != 1 for d in a[2:]):
        raise ctx.error(f"a must be N x C x 1 x 1 for x of shape {list(x)}, got {list(a)}")
    return make(Axpy)
