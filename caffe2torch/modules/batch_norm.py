"""BatchNorm: Caffe normalises only; the learned scale and shift live in the following Scale layer.  BN: the
yjxiong/caffe fork's layer, which normalises, scales and shifts; PSPNetBN: hszhao/PSPNet's layer of the same
type name, which may normalise with the batch's own statistics at test time."""

from __future__ import annotations

import torch
from torch import nn

from caffe2torch.modules.shapes import check_channels


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

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [check_channels(input_shapes[0], self.mean.shape[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.use_global_stats:
            mean, var = self.mean, self.var
        else:
            mean, var = batch_statistics(x, 1)
        return (x - mean.view(view)) / torch.sqrt(var + self.eps).view(view)


def batch_statistics(x: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and (biased) variance of ``x`` per index of ``axis``, over every other axis: a batch's own
    statistics, as Caffe's BatchNorm computes them with use_global_stats false."""
    dims = [dim for dim in range(x.dim()) if dim != axis]
    return x.mean(dims), x.var(dims, unbiased=False)


class BN(nn.Module):
    """The BN layer of yjxiong/caffe at test time: ``(x - mean) * (var + eps)^-1/2 * slope + bias`` per channel
    (axis 1), in the fork's order of float operations.

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

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [check_channels(input_shapes[0], self.mean.shape[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        inverse_std = torch.pow(self.var + self.eps, -0.5)
        return (x - self.mean.view(view)) * inverse_std.view(view) * self.slope.view(view) + self.bias.view(view)


class PSPNetBN(BN):
    """hszhao/PSPNet's BN at test time (bn_layer.cpp, the CAFFE engine): ``(x - mean) / sqrt(var + eps) * slope +
    bias`` per index of ``axis`` (1 or 2, of the input seen as Caffe's legacy 4-D shape), in the fork's order of
    float operations; ``eps`` is the fork's ``var_eps``.

    With ``moving_average`` the stored statistics are used; without it (the fork's default) the batch's own
    mean and variance, as Caffe's BatchNorm with use_global_stats false.  A subclass of BN so that code
    looking for the fork's layer finds it, but not an affine map of its input when ``moving_average`` is off.
    """

    def __init__(self, channels: int, eps: float, moving_average: bool, axis: int = 1) -> None:
        super().__init__(channels, eps)
        if axis not in (1, 2):
            raise ValueError(f"axis must be 1 or 2, got {axis}")
        self.moving_average, self.axis = moving_average, axis

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The input's shape; its channels at ``axis`` of the input seen as 4-D (missing axes 1)."""
        shape = tuple(input_shapes[0])
        if len(shape) > 4:
            raise ValueError(f"needs at most 4 axes (the fork reads num/channels/height/width), got {list(shape)}")
        check_channels(shape + (1,) * (4 - len(shape)), self.mean.shape[0], self.axis)
        return [shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        legacy = x.reshape(*shape, *([1] * (4 - x.dim())))  # Caffe's LegacyShape: missing axes are 1
        if self.moving_average:
            mean, var = self.mean, self.var
        else:
            mean, var = batch_statistics(legacy, self.axis)
        view = [1, 1, 1, 1]
        view[self.axis] = -1
        y = (legacy - mean.view(view)) / torch.sqrt(var + self.eps).view(view)
        return (y * self.slope.view(view) + self.bias.view(view)).reshape(shape)
