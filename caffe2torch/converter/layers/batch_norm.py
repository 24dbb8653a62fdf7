"""BatchNorm: Caffe normalises only; the learned scale and shift live in the following Scale layer.  BN: the
yjxiong/PSPNet fork's layer, which normalises, scales and shifts."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.batch_norm import BN, BatchNorm


@register("BatchNorm", bottoms=1, tops=1)
def batch_norm(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.batch_norm_param
    shape = ctx.input_shapes[0]
    if len(shape) < 2:
        raise ctx.error(f"needs at least 2 axes (N x C ...), got shape {list(shape)}")
    channels = shape[1]
    # use_global_stats defaults to the phase: true at TEST, which is what a converted net runs.
    use_global = p.use_global_stats if p.HasField("use_global_stats") else True
    module = make(BatchNorm, channels=channels, eps=float(np.float32(p.eps)),
                  use_global_stats=use_global)
    mean = ctx.blob(0, (channels,), init="zeros")
    var = ctx.blob(1, (channels,), init="ones")
    factor = ctx.blob(2, (1,), init="ones")
    # Caffe: scale = factor == 0 ? 0 : 1 / factor, in float32, then blob * scale (in place: no second copy).
    scale = torch.zeros(1) if factor.item() == 0 else torch.ones(1) / factor
    module.mean = mean.mul_(scale)
    module.var = var.mul_(scale)
    return module


@register("BN", bottoms=1, tops=1)
def bn(ctx: LayerContext) -> nn.Module:
    """yjxiong/caffe's and PSPNet's BN at test time (and when ``frozen``): blobs slope, bias, running mean,
    running variance, each 1 x C x 1 x 1 (1 x C in the variant with a ``moving_average`` switch); the
    statistics are used as stored and ``bn_param.eps`` is added to the variance in the forward pass."""
    shape = ctx.input_shapes[0]
    if len(shape) < 2:
        raise ctx.error(f"needs at least 2 axes (N x C ...), got shape {list(shape)}")
    channels = shape[1]
    if ctx.blobs is not None and len(ctx.blobs) == 2:
        raise ctx.error("the weights hold slope and bias but no running mean and variance: at test time the fork "
                        "then normalises with statistics it never computed (moving_average off), which cannot "
                        "be reproduced")

    def stored_shape(index: int) -> tuple[int, ...]:
        found = ctx.blobs[index].shape if ctx.blobs is not None and index < len(ctx.blobs) else ()
        return (1, channels) if len(found) == 2 else (1, channels, 1, 1)

    eps = getattr(ctx.param("bn_param"), "eps", 1e-5)  # ctx.param: a user's fork caffe.proto is honoured
    module = make(BN, channels=channels, eps=float(np.float32(eps)))
    module.slope = nn.Parameter(ctx.blob(0, stored_shape(0), init="ones").reshape(channels))
    module.bias = nn.Parameter(ctx.blob(1, stored_shape(1), init="zeros").reshape(channels))
    module.mean = ctx.blob(2, stored_shape(2), init="zeros").reshape(channels)
    module.var = ctx.blob(3, stored_shape(3), init="ones").reshape(channels)
    return module
