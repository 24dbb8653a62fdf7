"""BatchNorm: Caffe normalises only; the learned scale and shift live in the following Scale layer.  BN: the
yjxiong/PSPNet fork's layer, which normalises, scales and shifts."""

from __future__ import annotations

import torch
from torch import nn


class BatchNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps)`` per channel (axis 1), in Caffe's order of float operations.

    ``mean`` and ``var`` are the stored statistics already divided by the moving-average factor.  With
    ``use_global_stats`` false (Caffe's training phase) the statistics of the batch are used instead.
    """

    def __init__(self, channels: int, eps: float, use_global_stats: bool) -> None:
        super().__init__()
        self.eps, self.use_global_stats = eps, use_global_stats
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.use_global_stats:
            mean, var = self.mean, self.var
        else:
            dims = [0] + list(range(2, x.dim()))
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
        return (x - mean.view(view)) / torch.sqrt(var + self.eps).view(view)


class BN(nn.Module):
    """The BN layer of yjxiong/caffe and PSPNet at test time: ``(x - mean) * (var + eps)^-1/2 * slope + bias``
    per channel (axis 1), in the fork's order of float operations.

    Unlike BVLC's BatchNorm it holds its own scale (``slope``) and shift (``bias``), and its running
    statistics are stored as they are (no moving-average factor); ``eps`` is added to the variance here.
    """

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.slope = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        inverse_std = torch.pow(self.var + self.eps, -0.5)
        return (x - self.mean.view(view)) * inverse_std.view(view) * self.slope.view(view) + self.bias.view(view)
