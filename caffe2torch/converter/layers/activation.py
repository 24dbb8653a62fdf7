"""Element-wise activations whose Caffe semantics need no learned blob (plus PReLU, which has one)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register


class ReLU(nn.Module):
    """``max(x, 0) + negative_slope * min(x, 0)``."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0:
            return torch.relu(x)
        return F.leaky_relu(x, self.negative_slope)


@register("ReLU", bottoms=1, tops=1)
def relu(ctx: LayerContext) -> nn.Module:
    return make(ReLU, negative_slope=float(ctx.layer.relu_param.negative_slope))


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


class PReLU(nn.Module):
    """``max(x, 0) + a * min(x, 0)`` with ``a`` per channel (axis 1), or one ``a`` for all channels."""

    def __init__(self, channels: int, channel_shared: bool) -> None:
        super().__init__()
        self.channel_shared = channel_shared
        # Caffe's shared slope is a blob with no axes (shape []), not [1].
        self.weight = nn.Parameter(torch.empty(() if channel_shared else (channels,)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight if self.channel_shared else self.weight.reshape(-1, *([1] * (x.dim() - 2)))
        return torch.clamp_min(x, 0) + slope * torch.clamp_max(x, 0)


@register("PReLU", bottoms=1, tops=1)
def prelu(ctx: LayerContext) -> nn.Module:
    shape = ctx.input_shapes[0]
    if len(shape) < 2:
        raise ctx.error(f"needs at least 2 axes (N x C ...), got shape {list(shape)}")
    shared = ctx.layer.prelu_param.channel_shared
    module = make(PReLU, channels=shape[1], channel_shared=shared)
    module.weight = nn.Parameter(ctx.blob(0, () if shared else (shape[1],)))
    return module


class ELU(nn.Module):
    """``max(x, 0) + alpha * (exp(min(x, 0)) - 1)``, Caffe's formula (exp, not expm1)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(x, 0) + self.alpha * (torch.exp(torch.clamp_max(x, 0)) - 1)


@register("ELU", bottoms=1, tops=1)
def elu(ctx: LayerContext) -> nn.Module:
    return make(ELU, alpha=float(ctx.layer.elu_param.alpha))


class AbsVal(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


@register("AbsVal", bottoms=1, tops=1)
def absval(ctx: LayerContext) -> nn.Module:
    return make(AbsVal)


class Power(nn.Module):
    """``(shift + scale * x) ^ power`` in Caffe's steps.

    Caffe ignores the input when ``power * scale`` is 0: the output is then 1 everywhere when power is 0
    (even where ``0 ^ 0`` or NaN would arise) and ``shift ^ power`` otherwise.  Steps that are identities
    (scale 1, shift 0, power 1) are skipped as Caffe skips them.
    """

    def __init__(self, power: float, scale: float, shift: float) -> None:
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.power == 0:
            return torch.ones_like(x)
        if self.scale == 0:
            return torch.full_like(x, self.shift).pow(self.power)
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        if self.power != 1:
            y = torch.pow(y, self.power)
        return y


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


class Exp(nn.Module):
    """``base ^ (shift + scale * x)``, computed as Caffe does: ``outer * exp(inner * x)`` with
    ``inner = ln(base) * scale`` and ``outer = base ^ shift``."""

    def __init__(self, inner_scale: float, outer_scale: float) -> None:
        super().__init__()
        self.inner_scale, self.outer_scale = inner_scale, outer_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.exp(x if self.inner_scale == 1 else x * self.inner_scale)
        return y if self.outer_scale == 1 else y * self.outer_scale


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


class Log(nn.Module):
    """``log_base(shift + scale * x)``, computed as Caffe does: ``ln(shift + scale * x) / ln(base)``."""

    def __init__(self, scale: float, shift: float, base_scale: float) -> None:
        super().__init__()
        self.scale, self.shift, self.base_scale = scale, shift, base_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.scale == 1 else x * self.scale
        y = torch.log(y if self.shift == 0 else y + self.shift)
        return y if self.base_scale == 1 else y * self.base_scale


@register("Log", bottoms=1, tops=1)
def log_layer(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.log_param
    return make(Log, scale=float(p.scale), shift=float(p.shift), base_scale=1 / _log_base(ctx, float(p.base)))


class BNLL(nn.Module):
    """``log(1 + exp(x))`` in Caffe's overflow-safe form: ``x + log(1 + exp(-x))`` for x > 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))


@register("BNLL", bottoms=1, tops=1)
def bnll(ctx: LayerContext) -> nn.Module:
    return make(BNLL)


class Threshold(nn.Module):
    """1 where ``x > threshold``, else 0 (a strict comparison, as Caffe's)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


@register("Threshold", bottoms=1, tops=1)
def threshold(ctx: LayerContext) -> nn.Module:
    return make(Threshold, threshold=float(ctx.layer.threshold_param.threshold))


class Clip(nn.Module):
    """``max(min, min(x, max))``."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.low, self.high)


@register("Clip", bottoms=1, tops=1)
def clip(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.clip_param
    if not p.HasField("min") or not p.HasField("max"):
        raise ctx.error("clip_param needs both min and max")
    if p.min > p.max:
        raise ctx.error(f"clip_param min {p.min} is above max {p.max}")
    return make(Clip, low=float(p.min), high=float(p.max))


class Swish(nn.Module):
    """``x * sigmoid(beta * x)``."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x if self.beta == 1 else x * self.beta)


@register("Swish", bottoms=1, tops=1)
def swish(ctx: LayerContext) -> nn.Module:
    return make(Swish, beta=float(ctx.layer.swish_param.beta))
