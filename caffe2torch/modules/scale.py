"""Scale and Bias: multiply (add) by a learned operand or by a second input, reshaped to broadcast."""

from __future__ import annotations

import math

import torch
from torch import nn


def check_broadcast(view: tuple[int, ...], operand: tuple[int, ...], shape: tuple[int, ...], what: str) -> None:
    """That an operand of shape ``operand``, reshaped to ``view`` (-1: the rest), broadcasts against an input
    of ``shape`` without changing its shape."""
    count = math.prod(operand)
    known = math.prod(d for d in view if d != -1)
    if -1 in view:
        if known == 0 or count % known:
            raise ValueError(f"{what} of shape {list(operand)} cannot be viewed as {list(view)}")
        view = tuple(count // known if d == -1 else d for d in view)
    elif known != count:
        raise ValueError(f"{what} of shape {list(operand)} cannot be viewed as {list(view)}")
    if len(view) > len(shape) or any(v not in (1, s) for v, s in zip(reversed(view), reversed(shape))):
        raise ValueError(f"{what} of shape {list(operand)} does not match the input of shape {list(shape)}")


class Scale(nn.Module):
    """``x * scale (+ bias)``, the factor a learned blob or the second input, reshaped to broadcast."""

    def __init__(self, view: tuple[int, ...], learned_shape: tuple[int, ...] | None,
                 bias_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.view = view
        self.weight = nn.Parameter(torch.ones(learned_shape)) if learned_shape is not None else None
        self.bias = nn.Parameter(torch.zeros(bias_shape)) if bias_shape is not None else None

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        factor = tuple(input_shapes[1]) if len(input_shapes) > 1 else tuple(self.weight.shape)
        check_broadcast(self.view, factor, shape, "the factor")
        if self.bias is not None:
            check_broadcast(self.view, tuple(self.bias.shape), shape, "the bias")
        return [shape]

    def forward(self, x: torch.Tensor, factor: torch.Tensor | None = None) -> torch.Tensor:
        factor = self.weight if factor is None else factor
        y = x * factor.reshape(self.view)
        if self.bias is not None:
            y = y + self.bias.reshape(self.view)
        return y


class Bias(nn.Module):
    """``x + bias``, the bias a learned blob or the second input, reshaped to broadcast."""

    def __init__(self, view: tuple[int, ...], learned_shape: tuple[int, ...] | None) -> None:
        super().__init__()
        self.view = view
        self.bias = nn.Parameter(torch.zeros(learned_shape)) if learned_shape is not None else None

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        bias = tuple(input_shapes[1]) if len(input_shapes) > 1 else tuple(self.bias.shape)
        check_broadcast(self.view, bias, shape, "the bias")
        return [shape]

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return x + (self.bias if bias is None else bias).reshape(self.view)
