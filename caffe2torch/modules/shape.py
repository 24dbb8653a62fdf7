"""Layers that move data without computing: Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Silence, and
waifu2x's CropCenter."""

from __future__ import annotations

import torch
from torch import nn


class Concat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.axis)


class Split(nn.Module):
    """One bottom handed to several tops."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.count


class Flatten(nn.Module):
    def __init__(self, axis: int, end_axis: int) -> None:
        super().__init__()
        self.axis, self.end_axis = axis, end_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.axis, self.end_axis)


class Reshape(nn.Module):
    """Caffe's Reshape: axes ``[start, end)`` replaced by ``dims``; 0 copies the input axis at the same
    position, -1 is inferred.  Computed per call, so the batch size may change."""

    def __init__(self, dims: tuple[int, ...], start: int, end: int) -> None:
        super().__init__()
        self.dims, self.start, self.end = dims, start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        end = x.dim() if self.end < 0 else self.end
        middle = [x.shape[self.start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        return x.reshape((*x.shape[:self.start], *middle, *x.shape[end:]))  # a tuple: () is a valid shape


class Silence(nn.Module):
    def forward(self, *xs: torch.Tensor) -> tuple[()]:
        return ()


class Slice(nn.Module):
    """Cuts ``axis`` at ``points`` (into len(points) + 1 tops), or without points into ``count`` equal parts."""

    def __init__(self, axis: int, points: tuple[int, ...], count: int) -> None:
        super().__init__()
        self.axis, self.points, self.count = axis, points, count

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        size = x.shape[self.axis]
        if self.points:
            bounds = (0, *self.points, size)
        else:
            step = size // self.count
            bounds = tuple(i * step for i in range(self.count + 1))
        parts = tuple(x.narrow(self.axis, start, end - start) for start, end in zip(bounds, bounds[1:]))
        return parts[0] if len(parts) == 1 else parts


class Crop(nn.Module):
    """Crops the axes from ``axis`` on to the size of the reference input, starting at ``offsets``."""

    def __init__(self, axis: int, offsets: tuple[int, ...]) -> None:
        super().__init__()
        self.axis, self.offsets = axis, offsets

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        for i, offset in enumerate(self.offsets):
            x = x.narrow(self.axis + i, offset, reference.shape[self.axis + i])
        return x


class Tile(nn.Module):
    """Repeats the block of axes from ``axis`` on ``tiles`` times along ``axis``."""

    def __init__(self, axis: int, tiles: int) -> None:
        super().__init__()
        self.axis, self.tiles = axis, tiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        repeats = [1] * x.dim()
        repeats[self.axis] = self.tiles
        return x.repeat(repeats)


class CropCenter(nn.Module):
    """waifu2x-caffe's CropCenter: ``crop[i]`` elements removed from both ends of axis ``i`` (every axis)."""

    def __init__(self, crop: tuple[int, ...]) -> None:
        super().__init__()
        self.crop = crop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, size in enumerate(self.crop):
            if size:
                x = x.narrow(axis, size, x.shape[axis] - 2 * size)
        return x
