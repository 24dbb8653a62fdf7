"""InnerProduct (flatten from ``axis`` and multiply by the [num_output, K] weight, or [K, num_output] when
``transpose``) and Embed (a lookup of rows of a [input_dim, num_output] weight)."""

from __future__ import annotations

import math

import torch
from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.limits import charge
from caffe2torch.modules.inner_product import Embed, InnerProduct


@register("InnerProduct", bottoms=1, tops=1)
def inner_product(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.inner_product_param
    if p.num_output < 1:
        raise ctx.error(f"num_output must be positive, got {p.num_output}")
    shape = ctx.input_shapes[0]
    axis = canonical_axis(ctx, p.axis, len(shape))
    k = math.prod(shape[axis:])
    module = make(InnerProduct, in_features=k, out_features=p.num_output, bias=p.bias_term, axis=axis)
    if p.transpose:
        stored = ctx.blob(0, (k, p.num_output))
        charge(4 * k * p.num_output, f"layer {ctx.name!r} ({ctx.type}): the transposed weight")
        # clone, not contiguous(): a [1, K] view of [K, 1] counts as contiguous with strides (1, 1), and
        # Linear's kernel, chosen by strides, would round differently from the exported model.py
        module.weight = nn.Parameter(stored.t().clone(memory_format=torch.contiguous_format))
    else:
        module.weight = nn.Parameter(ctx.blob(0, (p.num_output, k)))
    if p.bias_term:
        module.bias = nn.Parameter(ctx.blob(1, (p.num_output,), init="zeros"))
    return module


@register("Embed", bottoms=1, tops=1)
def embed(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.embed_param
    if p.num_output < 1 or p.input_dim < 1:
        raise ctx.error(f"num_output ({p.num_output}) and input_dim ({p.input_dim}) must be positive")
    module = make(Embed, input_dim=int(p.input_dim), num_output=int(p.num_output), bias=p.bias_term)
    module.weight = nn.Parameter(ctx.blob(0, (p.input_dim, p.num_output)))
    if p.bias_term:
        module.bias = nn.Parameter(ctx.blob(1, (p.num_output,), init="zeros"))
    return module
