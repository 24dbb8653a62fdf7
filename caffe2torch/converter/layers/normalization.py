"""LRN and MVN (BatchNorm lives in batch_norm.py, with the Scale layer it pairs with in scale.py)."""

from __future__ import annotations

from torch import nn

from caffe2torch.converter.graph import MAX_DIM
from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.normalization import LRN, MVN


@register("LRN", bottoms=1, tops=1)
def lrn(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.lrn_param
    shape = ctx.input_shapes[0]
    if len(shape) != 4:
        raise ctx.error(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
    if p.local_size % 2 != 1:
        raise ctx.error(f"local_size {p.local_size} is even; Caffe's LRN supports only odd sizes")
    if p.local_size > MAX_DIM:
        raise ctx.error(f"local_size {p.local_size} exceeds {MAX_DIM}, the largest Caffe holds")
    region = type(p).NormRegion.Name(p.norm_region)
    return make(LRN, size=int(p.local_size), alpha=float(p.alpha), beta=float(p.beta), k=float(p.k),
                across_channels=region == "ACROSS_CHANNELS")


@register("MVN", bottoms=1, tops=1)
def mvn(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.mvn_param
    shape = ctx.input_shapes[0]
    if len(shape) > 4:
        raise ctx.error(f"Caffe's MVN takes at most 4 axes (num, channels, height, width), got {list(shape)}")
    return make(MVN, normalize_variance=p.normalize_variance, across_channels=p.across_channels,
                eps=float(p.eps))
