"""LRN and MVN as Caffe computes them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LRN(nn.Module):
    """Caffe's local response normalisation of an N x C x H x W input.

    ACROSS_CHANNELS: ``x * (k + alpha / size * sum of x^2 over channels c - pre_pad .. c - pre_pad + size - 1)
    ^ -beta`` with ``pre_pad = (size - 1) / 2`` and zeros outside the channels.

    WITHIN_CHANNEL: ``x * (1 + alpha * avg) ^ -beta`` where ``avg`` is Caffe's AVE pooling of ``x^2`` with
    kernel ``size``, stride 1 and pad ``pre_pad`` (``k`` is not used).  Caffe's pooling divides by the window
    clipped to the padded input; with stride 1 and an odd size no window passes the padding, so the divisor
    is always ``size^2``, which is what ``avg_pool2d`` with ``count_include_pad`` gives.
    """

    def __init__(self, size: int, alpha: float, beta: float, k: float, across_channels: bool) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.across_channels = across_channels

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        if len(shape) != 4:
            raise ValueError(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
        if self.size < 1 or not self.across_channels and self.size % 2 == 0:
            raise ValueError(f"local_size {self.size} must be odd")
        return [shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre_pad = (self.size - 1) // 2
        square = x * x
        if self.across_channels:
            # A window reaching more than C - 1 channels past either end only adds zeros: padding by at most
            # that much gives the same sums without allocating memory in proportion to local_size.
            before, after = min(pre_pad, x.shape[1] - 1), min(self.size - 1 - pre_pad, x.shape[1] - 1)
            padded = F.pad(square, (0, 0, 0, 0, before, after))
            sums = F.avg_pool3d(padded.unsqueeze(1), (before + after + 1, 1, 1), stride=1,
                                divisor_override=1).squeeze(1)
            scale = self.k + (self.alpha / self.size) * sums
        else:
            average = F.avg_pool2d(square, self.size, stride=1, padding=pre_pad, count_include_pad=True)
            scale = 1 + self.alpha * average
        return x * torch.pow(scale, -self.beta)


class MVN(nn.Module):
    """Mean-variance normalisation per sample (``across_channels``) or per sample and channel.

    ``(x - mean) / (std + eps)`` with the biased std, eps added to the std (not to the variance) as Caffe does.
    """

    def __init__(self, normalize_variance: bool, across_channels: bool, eps: float) -> None:
        super().__init__()
        self.normalize_variance, self.across_channels, self.eps = normalize_variance, across_channels, eps

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Caffe views the blob as num x dim: num = N (across channels) or N * C; a 1- or 2-D input gives
        # groups of one value each.
        kept = 1 if self.across_channels else 2
        groups = x.reshape(*x.shape[:kept], -1)
        centered = groups - groups.mean(-1, keepdim=True)
        if self.normalize_variance:
            std = (centered * centered).mean(-1, keepdim=True).sqrt()
            centered = centered / (std + self.eps)
        return centered.reshape(x.shape)
