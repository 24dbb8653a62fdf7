"""Spatial resizing layers of the Caffe forks: YOLO's nearest-neighbour Upsample and DeepLab's bilinear Interp."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Upsample(nn.Module):
    """Nearest-neighbour upsampling of the last two axes, as the YOLOv3 Caffe ports compute it.

    Their rule is ``out[h][w] = in[h // scale][w // scale]`` with an output ``scale`` times the input;
    ``scale_h`` and ``scale_w`` apply it per axis.  With an explicit ``out_h`` x ``out_w`` (both
    non-zero) the source of output row ``h`` is ``h * in_h // out_h``, which is the same rule wherever
    the output is a whole multiple of the input.
    """

    def __init__(self, scale_h: int, scale_w: int, out_h: int = 0, out_w: int = 0) -> None:
        super().__init__()
        self.scale_h, self.scale_w, self.out_h, self.out_w = scale_h, scale_w, out_h, out_w

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        if len(shape) != 4:
            raise ValueError(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
        n, c, h, w = shape
        if self.out_h:
            return [(n, c, self.out_h, self.out_w)]
        return [(n, c, h * self.scale_h, w * self.scale_w)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.out_h:
            # Integer arithmetic: the index of the source pixel is exact for any size.
            rows = torch.arange(self.out_h, device=x.device) * h // self.out_h
            cols = torch.arange(self.out_w, device=x.device) * w // self.out_w
            return x.index_select(2, rows).index_select(3, cols)
        if self.scale_h == 1 and self.scale_w == 1:
            return x
        # Each pixel repeated into a scale_h x scale_w block: an exact copy, no interpolation arithmetic.
        blocks = x[:, :, :, None, :, None].expand(n, c, h, self.scale_h, w, self.scale_w)
        return blocks.reshape(n, c, h * self.scale_h, w * self.scale_w)


class Interp(nn.Module):
    """DeepLab v2's Interp: bilinear resizing with aligned corners (``caffe_cpu_interp2``).

    The input is first cropped by ``-pad_beg`` at the start and ``-pad_end`` at the end of each spatial axis
    (the pads are never positive).  The output size is computed from the cropped input on every call, by
    ``rule``: ``"zoom"`` (``in + (in - 1) * (zoom - 1)``), ``"shrink"`` (``(in - 1) // shrink + 1``),
    ``"shrink_zoom"`` (shrink first, then zoom), ``"size"`` (``height`` x ``width``) or ``"reference"`` (the
    spatial size of the second input).  Source coordinates are ``dst * (in - 1) / (out - 1)`` (0 for a
    one-pixel output), the convention of ``align_corners=True``.
    """

    def __init__(self, rule: str, zoom_factor: int = 1, shrink_factor: int = 1, height: int = 0, width: int = 0,
                 pad_beg: int = 0, pad_end: int = 0) -> None:
        super().__init__()
        self.rule = rule
        self.zoom_factor, self.shrink_factor = zoom_factor, shrink_factor
        self.height, self.width = height, width
        self.pad_beg, self.pad_end = pad_beg, pad_end

    def output_size(self, in_h: int, in_w: int) -> tuple[int, int]:
        """The output height and width for a cropped input of ``in_h`` x ``in_w`` (rules other than
        ``"reference"``)."""
        if self.rule == "size":
            return self.height, self.width
        out_h, out_w = in_h, in_w
        if self.rule in ("shrink", "shrink_zoom"):
            out_h, out_w = (out_h - 1) // self.shrink_factor + 1, (out_w - 1) // self.shrink_factor + 1
        if self.rule in ("zoom", "shrink_zoom"):
            out_h, out_w = out_h + (out_h - 1) * (self.zoom_factor - 1), out_w + (out_w - 1) * (self.zoom_factor - 1)
        return out_h, out_w

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """N x C x the size of ``rule`` (for ``"reference"``, the second input's height and width)."""
        shape = tuple(input_shapes[0])
        if len(shape) != 4:
            raise ValueError(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
        if self.pad_beg > 0 or self.pad_end > 0:
            raise ValueError(f"pad_beg {self.pad_beg} and pad_end {self.pad_end} must not be positive: they only crop")
        in_h, in_w = shape[2] + self.pad_beg + self.pad_end, shape[3] + self.pad_beg + self.pad_end
        if in_h < 1 or in_w < 1:
            raise ValueError(f"pad_beg {self.pad_beg} and pad_end {self.pad_end} crop the {shape[2]} x {shape[3]} "
                             f"input to nothing")
        if len(input_shapes) > 1:
            reference = tuple(input_shapes[1])
            if len(reference) != 4:
                raise ValueError(f"the second input must be 4-D (its height and width give the output size), "
                                 f"got shape {list(reference)}")
            size = reference[2], reference[3]
        elif self.rule == "reference":
            raise ValueError("the output size is the second input's, and there is none")
        else:
            size = self.output_size(in_h, in_w)
        return [(shape[0], shape[1], *size)]

    def forward(self, x: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        if self.pad_beg or self.pad_end:
            start = -self.pad_beg
            x = x[:, :, start:x.shape[2] + self.pad_end, start:x.shape[3] + self.pad_end]
        if reference is not None:
            size = (reference.shape[2], reference.shape[3])
        else:
            size = self.output_size(x.shape[2], x.shape[3])
        if (x.shape[2], x.shape[3]) == tuple(size):
            return x  # Caffe copies: the same values, without interpolation arithmetic
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
