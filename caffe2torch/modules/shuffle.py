"""Layers of the Caffe forks that only reorder values: ShuffleNet's ShuffleChannel and YOLOv2's Reorg."""

from __future__ import annotations

import torch
from torch import nn


class ShuffleChannel(nn.Module):
    """ShuffleNet's channel shuffle: the channels, read as a ``group`` x ``channels / group`` matrix, transposed.

    Output channel ``j * group + i`` is input channel ``i * (channels / group) + j``.  The fork's top is 4-D
    whatever the input's axes (Caffe's legacy num, channels, height, width), so missing axes come back as 1.
    """

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        if len(shape) < 2:
            raise ValueError(f"needs at least 2 axes (N x C ...), got shape {list(shape)}")
        if self.group < 1 or shape[1] % self.group:
            raise ValueError(f"group {self.group} does not divide the {shape[1]} channels")
        return [shape + (1,) * (4 - len(shape))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        shuffled = x.reshape(n, self.group, c // self.group, -1).transpose(1, 2)
        return shuffled.reshape(*x.shape, *([1] * (4 - x.dim())))


class Reorg(nn.Module):
    """YOLOv2's reorg as the Caffe ports compute it: darknet's ``reorg_cpu`` on the input's own dimensions.

    This is darknet's well-known quirk, not a space-to-depth: the forward layer runs ``reorg_cpu`` with
    ``forward = 0`` and the *input's* width, height and channels, so the input is read as if it had
    ``C / s^2`` channels of ``H * s`` x ``W * s`` pixels, gathered into ``C`` channels of ``H x W``, and the
    result is handed on as ``C * s^2`` channels of ``H / s`` x ``W / s`` (the same values in the same memory
    order).  With ``reverse`` the layer runs the scatter direction (``forward = 1``) and its output is
    ``C / s^2`` channels of ``H * s`` x ``W * s``.
    """

    def __init__(self, stride: int, reverse: bool) -> None:
        super().__init__()
        self.stride, self.reverse = stride, reverse

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        if len(shape) != 4:
            raise ValueError(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
        n, c, h, w = shape
        s = self.stride
        if s < 1 or c % (s * s) or not self.reverse and (h % s or w % s):
            raise ValueError(f"stride {s} must divide the height {h} and width {w}, and its square the {c} channels")
        if self.reverse:
            return [(n, c // (s * s), h * s, w * s)]
        return [(n, c * s * s, h // s, w // s)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.stride
        if self.reverse:
            # in[b, (dy * s + dx) * C' + c2, j, i] goes to out[b, c2, j * s + dy, i * s + dx], C' = C / s^2
            blocks = x.reshape(n, s, s, c // (s * s), h, w).permute(0, 3, 4, 1, 5, 2)
            return blocks.reshape(n, c // (s * s), h * s, w * s)
        # out[b, (dy * s + dx) * C' + c2, j, i] = in-as-(C', H * s, W * s)[b, c2, j * s + dy, i * s + dx]
        gathered = x.reshape(n, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return gathered.reshape(n, c * s * s, h // s, w // s)
