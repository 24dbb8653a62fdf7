"""Eltwise (SUM with coefficients, PROD, MAX), the SENet release's Axpy and waifu2x-caffe's AxpyFast."""

from __future__ import annotations

from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.eltwise import Axpy, Eltwise


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


@register("Axpy", "AxpyFast", bottoms=3, tops=1)
def axpy(ctx: LayerContext) -> nn.Module:
    """``a * x + y``, bottoms (a, x, y), a one value per (n, c).  waifu2x-caffe's AxpyFast (its UpResNet10
    models) computes the same: the SE gate (a, N x C from a Sigmoid) scales the residual branch (x) and the
    cropped shortcut (y) is added."""
    a, x, y = ctx.input_shapes
    if x != y:
        raise ctx.error(f"x and y differ in shape: {list(x)} vs {list(y)}")
    if tuple(a[:2]) != tuple(x[:2]) or any(d != 1 for d in a[2:]):
        raise ctx.error(f"a must be N x C x 1 x 1 for x of shape {list(x)}, got {list(a)}")
    return make(Axpy)
