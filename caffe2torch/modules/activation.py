"""Element-wise activations in Caffe's formulas (PReLU with its learned slope)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.modules.shapes import check_channels


class ReLU(nn.Module):
    """``max(x, 0) + negative_slope * min(x, 0)``."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0:
            return torch.relu(x)
        return F.leaky_relu(x, self.negative_slope)


class ReLU6(nn.Module):
    """``min(max(x, 0) + negative_slope * min(x, 0), 6)``: the MobileNet forks' ReLU6 (a slope only in the
    forks that read one; 0 gives ``min(max(x, 0), 6)``)."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0:
            return torch.clamp(x, 0, 6)
        return torch.clamp_max(torch.clamp_min(x, 0) + self.negative_slope * torch.clamp_max(x, 0), 6)


class PReLU(nn.Module):
    """``max(x, 0) + a * min(x, 0)`` with ``a`` per channel (axis 1), or one ``a`` for all channels."""

    def __init__(self, channels: int, channel_shared: bool) -> None:
        super().__init__()
        self.channel_shared = channel_shared
        # Caffe's shared slope is a blob with no axes (shape []), not [1].
        self.weight = nn.Parameter(torch.empty(() if channel_shared else (channels,)))

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [check_channels(input_shapes[0], None if self.channel_shared else self.weight.shape[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.weight if self.channel_shared else self.weight.reshape(-1, *([1] * (x.dim() - 2)))
        return torch.clamp_min(x, 0) + slope * torch.clamp_max(x, 0)


class ELU(nn.Module):
    """``max(x, 0) + alpha * (exp(min(x, 0)) - 1)``, Caffe's formula (exp, not expm1)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(x, 0) + self.alpha * (torch.exp(torch.clamp_max(x, 0)) - 1)


class AbsVal(nn.Module):
    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


class Power(nn.Module):
    """``(shift + scale * x) ^ power`` in Caffe's steps.

    Caffe ignores the input when ``power * scale`` is 0: the output is then 1 everywhere when power is 0
    (even where ``0 ^ 0`` or NaN would arise) and ``shift ^ power`` otherwise.  Steps that are identities
    (scale 1, shift 0, power 1) are skipped as Caffe skips them.
    """

    def __init__(self, power: float, scale: float, shift: float) -> None:
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

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


class Exp(nn.Module):
    """``base ^ (shift + scale * x)``, computed as Caffe does: ``outer * exp(inner * x)`` with
    ``inner = ln(base) * scale`` and ``outer = base ^ shift``."""

    def __init__(self, inner_scale: float, outer_scale: float) -> None:
        super().__init__()
        self.inner_scale, self.outer_scale = inner_scale, outer_scale

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.exp(x if self.inner_scale == 1 else x * self.inner_scale)
        return y if self.outer_scale == 1 else y * self.outer_scale


class Log(nn.Module):
    """``log_base(shift + scale * x)``, computed as Caffe does: ``ln(shift + scale * x) / ln(base)``."""

    def __init__(self, scale: float, shift: float, base_scale: float) -> None:
        super().__init__()
        self.scale, self.shift, self.base_scale = scale, shift, base_scale

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.scale == 1 else x * self.scale
        y = torch.log(y if self.shift == 0 else y + self.shift)
        return y if self.base_scale == 1 else y * self.base_scale


class BNLL(nn.Module):
    """``log(1 + exp(x))`` in Caffe's overflow-safe form: ``x + log(1 + exp(-x))`` for x > 0."""

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x + torch.log1p(torch.exp(-x)), torch.log1p(torch.exp(x)))


class Threshold(nn.Module):
    """1 where ``x > threshold``, else 0 (a strict comparison, as Caffe's)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


class Clip(nn.Module):
    """``max(min, min(x, max))``."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.low, self.high)


class Swish(nn.Module):
    """``x * sigmoid(beta * x)``."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x if self.beta == 1 else x * self.beta)
