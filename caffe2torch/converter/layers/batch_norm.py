"""BatchNorm: Caffe normalises only; the learned scale and shift live in the following Scale layer.  BN: the layer
of yjxiong/caffe and of hszhao/PSPNet, which normalises, scales and shifts, each fork in its own way."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from caffe2torch.caffe_proto.schema import UntypedMessage
from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.batch_norm import BN, BatchNorm, PSPNetBN


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


# PSPNet's BNParameter fields that yjxiong's has not, and the reverse (caffe.proto, BNParameter): a layer giving
# one of the first is PSPNet's; momentum, eps, frozen and engine are in both.
PSPNET_ONLY_FIELDS = ("scale_filler", "shift_filler", "var_eps", "moving_average", "decay", "axis")
YJXIONG_ONLY_FIELDS = ("slope_filler", "bias_filler")


def _given(param: Any, name: str) -> bool:
    """Whether the layer's bn_param gave field ``name`` (typed or untyped)."""
    if isinstance(param, UntypedMessage):
        return name in param
    return name in param.DESCRIPTOR.fields_by_name and param.HasField(name)


def _is_pspnet(param: Any) -> bool:
    """Whether a BN layer is PSPNet's: a user's schema (--caffe-proto) of one fork decides by its BNParameter
    having ``var_eps`` and not yjxiong's ``slope_filler``; a schema with both forks' fields (the built-in one,
    or a copy of it) by the layer giving a PSPNet-only field."""
    if not isinstance(param, UntypedMessage):
        fields = param.DESCRIPTOR.fields_by_name
        if "var_eps" not in fields or "slope_filler" not in fields:
            return "var_eps" in fields
    return any(_given(param, name) for name in PSPNET_ONLY_FIELDS)


@register("BN", bottoms=1, tops=1)
def bn(ctx: LayerContext) -> nn.Module:
    """The BN layer of two forks that share the type name and the field name ``bn_param`` but not its fields.

    yjxiong/caffe's, at test time (and when ``frozen``): blobs slope, bias, running mean, running variance, each
    1 x C x 1 x 1 (1 x C in the variant with a ``moving_average`` switch); the statistics are used as stored and
    ``eps`` is added to the variance.  hszhao/PSPNet's (a layer giving scale_filler, shift_filler, var_eps,
    moving_average, decay or axis): see :func:`pspnet_bn`.  A PSPNet prototxt giving only fields both forks
    name (momentum, eps, frozen, engine) or none cannot be told apart and is read as yjxiong's.
    """
    param = ctx.param("bn_param")  # ctx.param: a user's fork caffe.proto is honoured
    if _is_pspnet(param):
        return pspnet_bn(ctx, param)
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

    eps = getattr(param, "eps", 1e-5)
    module = make(BN, channels=channels, eps=float(np.float32(eps)))
    module.slope = nn.Parameter(ctx.blob(0, stored_shape(0), init="ones").reshape(channels))
    module.bias = nn.Parameter(ctx.blob(1, stored_shape(1), init="zeros").reshape(channels))
    module.mean = ctx.blob(2, stored_shape(2), init="zeros").reshape(channels)
    module.var = ctx.blob(3, stored_shape(3), init="ones").reshape(channels)
    return module


def pspnet_bn(ctx: LayerContext, param: Any) -> nn.Module:
    """hszhao/PSPNet's BN at test time, as its bn_layer.cpp (the CAFFE engine) computes it: ``var_eps`` (default
    1e-10) is added to the variance and ``eps`` is never read; with ``moving_average`` (default false) the
    stored mean and variance are used, without it the batch's own statistics per channel.  ``axis`` (1 or 2)
    is the channel axis of the input seen as 4-D.  Blobs scale, shift, mean, variance, each 4-D with the channels
    at ``axis``; without moving_average the fork reads only the first two, so two blobs will do.

    (The fork's CUDNN engine, its default in a cuDNN build, takes the stored statistics and an eps member its
    BNLayer never sets; the CAFFE engine's result is the one defined, and the one reproduced here.)
    """
    if any(_given(param, name) for name in YJXIONG_ONLY_FIELDS):
        given = [name for name in (*YJXIONG_ONLY_FIELDS, *PSPNET_ONLY_FIELDS) if _given(param, name)]
        raise ctx.error(f"bn_param gives {', '.join(given)}: yjxiong/caffe's BN fields and PSPNet's together, "
                        "which neither fork's schema reads")
    shape = ctx.input_shapes[0]
    if not 2 <= len(shape) <= 4:
        raise ctx.error(f"needs 2 to 4 axes (the fork reads num/channels/height/width), got shape {list(shape)}")
    axis = int(getattr(param, "axis", 1))
    if axis not in (1, 2):
        raise ctx.error(f"axis must be 1 or 2 (the fork checks it), got {axis}")
    legacy = tuple(shape) + (1,) * (4 - len(shape))
    channels = legacy[axis]
    moving_average = bool(getattr(param, "moving_average", False))
    if ctx.blobs is not None and len(ctx.blobs) == 2 and moving_average:
        raise ctx.error("moving_average is set but the weights hold only scale and shift, no stored mean and "
                        "variance for it to use")
    stored = tuple(channels if dim == axis else 1 for dim in range(4))
    var_eps = getattr(param, "var_eps", 1e-10)
    module = make(PSPNetBN, channels=channels, eps=float(np.float32(var_eps)), moving_average=moving_average,
                  axis=axis)
    module.slope = nn.Parameter(ctx.blob(0, stored, init="ones").reshape(channels))
    module.bias = nn.Parameter(ctx.blob(1, stored, init="zeros").reshape(channels))
    if ctx.blobs is None or len(ctx.blobs) != 2:  # read (and checked) even when the batch's own are used
        module.mean = ctx.blob(2, stored, init="zeros").reshape(channels)
        module.var = ctx.blob(3, stored, init="ones").reshape(channels)
    else:  # unused: the batch's own statistics
        module.mean, module.var = torch.zeros(channels), torch.ones(channels)
    return module
