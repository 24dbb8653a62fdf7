"""Element-wise activations whose Caffe semantics need no learned blob (plus PReLU, which has one)."""

from __future__ import annotations

import math

from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.activation import (BNLL, ELU, PReLU, AbsVal, Clip, Exp, Log, Power, ReLU, ReLU6, Swish,
                                           Threshold)


@register("ReLU", bottoms=1, tops=1)
def relu(ctx: LayerContext) -> nn.Module:
    return make(ReLU, negative_slope=float(ctx.layer.relu_param.negative_slope))


@register("ReLU6", bottoms=1, tops=1)
def relu6(ctx: LayerContext) -> nn.Module:
    """``min(max(x, 0), 6)``, the MobileNet forks' ReLU6.  eric612/MobileNet-YOLO's also adds
    ``relu6_param.negative_slope * min(x, 0)`` (a message of its own, read when the prototxt gives it);
    ``relu_param`` is read by no ReLU6 we know of, so it is ignored."""
    slope = getattr(ctx.param("relu6_param"), "negative_slope", 0.0)
    try:
        slope = float(slope)
    except (TypeError, ValueError):
        raise ctx.error(f"relu6_param.negative_slope must be a number, got {slope!r}") from None
    return make(ReLU6, negative_slope=slope)


@register("Sigmoid", bottoms=1, tops=1)
def sigmoid(ctx: LayerContext) -> nn.Module:
    return make(nn.Sigmoid)


@register("TanH", bottoms=1, tops=1)
def tanh(ctx: LayerContext) -> nn.Module:
    return make(nn.Tanh)


@register("Dropout", bottoms=1, tops=1)
def dropout(ctx: LayerContext) -> nn.Module:
    """Identity at test time: Caffe scales by 1 / (1 - ratio) while training, not at inference."""
    return make(nn.Identity)


@register("PReLU", bottoms=1, tops=1)
def prelu(ctx: LayerContext) -> nn.Module:
    shape = ctx.input_shapes[0]
    if len(shape) < 2:
        raise ctx.error(f"needs at least 2 axes (N x C ...), got shape {list(shape)}")
    shared = ctx.layer.prelu_param.channel_shared
    module = make(PReLU, channels=shape[1], channel_shared=shared)
    module.weight = nn.Parameter(ctx.blob(0, () if shared else (shape[1],)))
    return module


@register("ELU", bottoms=1, tops=1)
def elu(ctx: LayerContext) -> nn.Module:
    return make(ELU, alpha=float(ctx.layer.elu_param.alpha))


@register("AbsVal", bottoms=1, tops=1)
def absval(ctx: LayerContext) -> nn.Module:
    return make(AbsVal)


@register("Power", bottoms=1, tops=1)
def power_layer(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.power_param
    return make(Power, power=float(p.power), scale=float(p.scale), shift=float(p.shift))


def _log_base(ctx: LayerContext, base: float) -> float:
    """Caffe's ``log_base``: exactly 1 for base -1 (meaning e), else ln(base), which must be finite
    and non-zero."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise ctx.error(f"base must be strictly positive (or -1 for e), got {base}")
    log_base = math.log(base)
    if log_base == 0 or math.isinf(log_base):
        raise ctx.error(f"base {base} has log {log_base}, which Caffe cannot use")
    return log_base


@register("Exp", bottoms=1, tops=1)
def exp_layer(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.exp_param
    base, scale, shift = float(p.base), float(p.scale), float(p.shift)
    log_base = _log_base(ctx, base)
    try:
        outer = 1.0 if shift == 0 else math.exp(shift) if base == -1 else math.pow(base, shift)
    except OverflowError:
        raise ctx.error(f"base ^ shift overflows (base {base}, shift {shift})") from None
    return make(Exp, inner_scale=log_base * scale, outer_scale=outer)


@register("Log", bottoms=1, tops=1)
def log_layer(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.log_param
    return make(Log, scale=float(p.scale), shift=float(p.shift), base_scale=1 / _log_base(ctx, float(p.base)))


@register("BNLL", bottoms=1, tops=1)
def bnll(ctx: LayerContext) -> nn.Module:
    return make(BNLL)


@register("Threshold", bottoms=1, tops=1)
def threshold(ctx: LayerContext) -> nn.Module:
    return make(Threshold, threshold=float(ctx.layer.threshold_param.threshold))


@register("Clip", bottoms=1, tops=1)
def clip(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.clip_param
    if not p.HasField("min") or not p.HasField("max"):
        raise ctx.error("clip_param needs both min and max")
    if p.min > p.max:
        raise ctx.error(f"clip_param min {p.min} is above max {p.max}")
    return make(Clip, low=float(p.min), high=float(p.max))


@register("Swish", bottoms=1, tops=1)
def swish(ctx: LayerContext) -> nn.Module:
    return make(Swish, beta=float(ctx.layer.swish_param.beta))
