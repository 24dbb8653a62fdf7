"""Input and output stages that give a converted Caffe net the conventions of torchvision and timm:
RGB in [0, 1] normalised by mean/std in, classes in sorted-synset order out."""

from __future__ import annotations

import torch
from torch import nn

from caffe2torch.modules.shapes import check_channels


class NormalizedRGBToCaffe(nn.Module):
    """Turn a torchvision-style input (RGB in [0, 1], then ``(x - mean) / std``) into the pixels a Caffe
    net was trained on: ``(x * 255 - caffe_mean) * caffe_scale`` in the net's channel order.

    Per channel this is one affine map, ``x * weight + bias`` with ``weight = 255 * std * caffe_scale`` and
    ``bias = (255 * mean - caffe_mean) * caffe_scale``, applied after reversing the channels when the net
    reads BGR.
    """

    def __init__(self, channels: int, reverse_channels: bool) -> None:
        super().__init__()
        self.reverse_channels = reverse_channels
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = check_channels(input_shapes[0], self.weight.shape[0])
        if len(shape) != 4:
            raise ValueError(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
        return [shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reverse_channels:
            x = x.flip(1)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SelectClasses(nn.Module):
    """Reorder the class axis (1): output class ``i`` is input class ``index[i]``."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.register_buffer("index", torch.arange(classes))

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = check_channels(input_shapes[0], None)
        return [(shape[0], self.index.shape[0], *shape[2:])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)
