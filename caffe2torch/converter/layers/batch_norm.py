"""BatchNorm: Caffe normalises only; the learned scale and shift live in the following Scale layer."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.batch_norm import BatchNorm


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
