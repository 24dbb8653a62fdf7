"""Layers that move data without computing: Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Silence, and
waifu2x's CropCenter."""

from __future__ import annotations

import math

import torch
from torch import nn

from caffe2torch.modules.shapes import axis_index


class Concat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        first = tuple(input_shapes[0])
        axis = axis_index(self.axis, len(first))
        for shape in input_shapes[1:]:
            if len(shape) != len(first) or any(a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis):
                raise ValueError(f"bottoms differ outside axis {axis}: {[list(s) for s in input_shapes]}")
        return [(*first[:axis], sum(shape[axis] for shape in input_shapes), *first[axis + 1:])]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.axis)


class Split(nn.Module):
    """One bottom handed to several tops."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])] * self.count

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.count


class Flatten(nn.Module):
    def __init__(self, axis: int, end_axis: int) -> None:
        super().__init__()
        self.axis, self.end_axis = axis, end_axis

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        start = axis_index(self.axis, len(shape))
        end = axis_index(self.end_axis, len(shape), "end_axis")
        if end < start:
            raise ValueError(f"end_axis {self.end_axis} comes before axis {self.axis}")
        return [(*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.axis, self.end_axis)


class Reshape(nn.Module):
    """Caffe's Reshape: axes ``[start, end)`` replaced by ``dims``; 0 copies the input axis at the same
    position, -1 is inferred.  Computed per call, so the batch size may change."""

    def __init__(self, dims: tuple[int, ...], start: int, end: int) -> None:
        super().__init__()
        self.dims, self.start, self.end = dims, start, end

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Caffe's ReshapeLayer::Reshape: the count must stay, a -1 takes what the other axes leave."""
        shape = tuple(input_shapes[0])
        end = len(shape) if self.end < 0 else self.end
        if not 0 <= self.start <= end <= len(shape):
            raise ValueError(f"axes {self.start} to {end} are out of range for a {len(shape)}-D input")
        middle = []
        for i, d in enumerate(self.dims):
            if d == 0:
                if self.start + i >= len(shape):
                    raise ValueError(f"dim {i} is 0 but the input has no axis {self.start + i} to copy")
                d = shape[self.start + i]
            elif d < -1:
                raise ValueError(f"dim {i} is {d}")
            middle.append(d)
        if middle.count(-1) > 1:
            raise ValueError("at most one dim may be -1")
        out = (*shape[:self.start], *middle, *shape[end:])
        count, known = math.prod(shape), math.prod(d for d in out if d != -1)
        if -1 in middle:
            if known == 0 or count % known:
                raise ValueError(f"the {count} values of shape {list(shape)} cannot be reshaped to {list(out)}")
            out = tuple(count // known if d == -1 else d for d in out)
        elif known != count:
            raise ValueError(f"the {count} values of shape {list(shape)} cannot be reshaped to {list(out)} "
                             f"({known} values)")
        return [out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        end = x.dim() if self.end < 0 else self.end
        middle = [x.shape[self.start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        return x.reshape((*x.shape[:self.start], *middle, *x.shape[end:]))  # a tuple: () is a valid shape


class Silence(nn.Module):
    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return []

    def forward(self, *xs: torch.Tensor) -> tuple[()]:
        return ()


class Slice(nn.Module):
    """Cuts ``axis`` at ``points`` (into len(points) + 1 tops), or without points into ``count`` equal parts."""

    def __init__(self, axis: int, points: tuple[int, ...], count: int) -> None:
        super().__init__()
        self.axis, self.points, self.count = axis, points, count

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        axis = axis_index(self.axis, len(shape))
        size = shape[axis]
        if self.points:
            bounds = (0, *self.points, size)
            if any(b <= a for a, b in zip(bounds, self.points)) or self.points[-1] > size:
                raise ValueError(f"slice_point {list(self.points)} must increase strictly from above 0 up to the "
                                 f"size {size} of axis {axis}")
        else:
            if self.count < 1 or size % self.count:
                raise ValueError(f"{self.count} tops do not divide axis {axis} of size {size} evenly")
            bounds = tuple(i * (size // self.count) for i in range(self.count + 1))
        return [(*shape[:axis], end - start, *shape[axis + 1:]) for start, end in zip(bounds, bounds[1:])]

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

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """The reference's sizes on the axes from ``axis`` on, each window inside the input."""
        shape, reference = (tuple(s) for s in input_shapes)
        out = list(shape)
        for i, offset in enumerate(self.offsets):
            axis = axis_index(self.axis, len(shape)) + i
            if axis >= len(shape) or axis >= len(reference):
                raise ValueError(f"the input {list(shape)} and the reference {list(reference)} need an axis {axis}")
            if offset < 0 or offset + reference[axis] > shape[axis]:
                raise ValueError(f"crop of axis {axis} is out of bounds: size {reference[axis]} at offset {offset} "
                                 f"in an input of size {shape[axis]}")
            out[axis] = reference[axis]
        return [tuple(out)]

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        for i, offset in enumerate(self.offsets):
            x = x.narrow(self.axis + i, offset, reference.shape[self.axis + i])
        return x


class Tile(nn.Module):
    """Repeats the block of axes from ``axis`` on ``tiles`` times along ``axis``."""

    def __init__(self, axis: int, tiles: int) -> None:
        super().__init__()
        self.axis, self.tiles = axis, tiles

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        axis = axis_index(self.axis, len(shape))
        return [(*shape[:axis], shape[axis] * self.tiles, *shape[axis + 1:])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        repeats = [1] * x.dim()
        repeats[self.axis] = self.tiles
        return x.repeat(repeats)


class CropCenter(nn.Module):
    """waifu2x-caffe's CropCenter: ``crop[i]`` elements removed from both ends of axis ``i`` (every axis)."""

    def __init__(self, crop: tuple[int, ...]) -> None:
        super().__init__()
        self.crop = crop

    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(input_shapes[0])
        if len(self.crop) > len(shape):
            raise ValueError(f"{len(self.crop)} crop sizes for the {len(shape)} axes of the input")
        out = list(shape)
        for axis, size in enumerate(self.crop):
            if size < 0 or shape[axis] - 2 * size < 1:
                raise ValueError(f"crop_size {size} leaves nothing of axis {axis} (size {shape[axis]})")
            out[axis] = shape[axis] - 2 * size
        return [tuple(out)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, size in enumerate(self.crop):
            if size:
                x = x.narrow(axis, size, x.shape[axis] - 2 * size)
        return x
