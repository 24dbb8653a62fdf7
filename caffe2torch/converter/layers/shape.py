"""Layers that move data without computing: Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Silence, and
waifu2x's CropCenter."""

from __future__ import annotations

from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.shape import Concat, Crop, CropCenter, Flatten, Reshape, Silence, Slice, Split, Tile


@register("Concat", bottoms=(1, None), tops=1)
def concat(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.concat_param
    ndim = len(ctx.input_shapes[0])
    axis = canonical_axis(ctx, p.concat_dim if p.HasField("concat_dim") else p.axis, ndim)
    for shape in ctx.input_shapes[1:]:
        if len(shape) != ndim or any(a != b for i, (a, b) in enumerate(zip(shape, ctx.input_shapes[0]))
                                     if i != axis):
            raise ctx.error(f"bottoms differ outside axis {axis}: "
                            f"{[list(s) for s in ctx.input_shapes]}")
    return make(Concat, axis=axis)


@register("Split", bottoms=1, tops=(1, None))
def split(ctx: LayerContext) -> nn.Module:
    if ctx.num_tops == 1:
        return make(nn.Identity)
    return make(Split, count=ctx.num_tops)


@register("Flatten", bottoms=1, tops=1)
def flatten(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.flatten_param
    ndim = len(ctx.input_shapes[0])
    return make(Flatten, axis=canonical_axis(ctx, p.axis, ndim),
                end_axis=canonical_axis(ctx, p.end_axis, ndim, "end_axis"))


@register("Reshape", bottoms=1, tops=1)
def reshape(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.reshape_param
    shape = ctx.input_shapes[0]
    ndim = len(shape)
    # Caffe: axis may be negative (counted as ndim + 1 + axis, so -1 means "after the last axis").
    start = p.axis if p.axis >= 0 else ndim + 1 + p.axis
    if not 0 <= start <= ndim:
        raise ctx.error(f"axis {p.axis} is out of range for a {ndim}-D input")
    if p.num_axes < -1:
        raise ctx.error(f"num_axes must be -1 or non-negative, got {p.num_axes}")
    end = ndim if p.num_axes == -1 else start + p.num_axes
    if end > ndim:
        raise ctx.error(f"axis {p.axis} + num_axes {p.num_axes} exceeds the {ndim} input axes")
    dims = tuple(int(d) for d in p.shape.dim)
    if sum(d == -1 for d in dims) > 1:
        raise ctx.error("at most one dim may be -1")
    for i, d in enumerate(dims):
        # Caffe copies input axis start + i for a 0 even past the replaced range; it only has to exist.
        if d == 0 and start + i >= ndim:
            raise ctx.error(f"dim {i} is 0 but the input has no axis {start + i} to copy")
        if d < -1:
            raise ctx.error(f"dim {i} is {d}")
    return make(Reshape, dims=dims, start=start, end=-1 if p.num_axes == -1 else end)


@register("Silence", bottoms=(1, None), tops=0)
def silence(ctx: LayerContext) -> nn.Module:
    return make(Silence)


@register("Slice", bottoms=1, tops=(1, None))
def slice_layer(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.slice_param
    shape = ctx.input_shapes[0]
    if p.HasField("axis") and p.HasField("slice_dim"):
        raise ctx.error("give either axis or the legacy slice_dim, not both")
    if p.HasField("slice_dim"):  # legacy: no negative indexing
        if p.slice_dim >= len(shape):
            raise ctx.error(f"slice_dim {p.slice_dim} is out of range for a {len(shape)}-D input")
        axis = p.slice_dim
    else:
        axis = canonical_axis(ctx, p.axis, len(shape))
    size, tops = shape[axis], ctx.num_tops
    points = tuple(int(point) for point in p.slice_point)
    if points:
        if len(points) != tops - 1:
            raise ctx.error(f"{len(points)} slice_point(s) need {len(points) + 1} tops, the layer has {tops}")
        if any(b <= a for a, b in zip((0, *points), points)) or points[-1] > size:
            raise ctx.error(f"slice_point {list(points)} must increase strictly from above 0 up to the "
                            f"size {size} of axis {axis}")
    elif size % tops:
        raise ctx.error(f"{tops} tops do not divide axis {axis} of size {size} evenly")
    return make(Slice, axis=axis, points=points, count=tops)


@register("Crop", bottoms=2, tops=1)
def crop(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.crop_param
    shape, reference = ctx.input_shapes
    axis = canonical_axis(ctx, p.axis, len(shape))
    cropped = len(shape) - axis
    if len(p.offset) > 1 and len(p.offset) != cropped:
        raise ctx.error(f"{len(p.offset)} offsets given for the {cropped} axes from axis {axis}: give one "
                        f"for all or one per axis")
    if len(reference) < len(shape):
        raise ctx.error(f"reference shape {list(reference)} has fewer axes than the input {list(shape)}")
    if len(p.offset) == 1:
        offsets = (int(p.offset[0]),) * cropped
    else:
        offsets = tuple(int(o) for o in p.offset) or (0,) * cropped
    for i, offset in enumerate(offsets):
        if shape[axis + i] - offset < reference[axis + i]:
            raise ctx.error(f"crop of axis {axis + i} is out of bounds: size {reference[axis + i]} at offset "
                            f"{offset} in an input of size {shape[axis + i]}")
    return make(Crop, axis=axis, offsets=offsets)


@register("Tile", bottoms=1, tops=1)
def tile(ctx: LayerContext) -> nn.Module:
    p = ctx.layer.tile_param
    if not p.HasField("tiles"):
        raise ctx.error("tile_param.tiles must be given")
    if p.tiles <= 0:
        raise ctx.error(f"tiles must be positive, got {p.tiles}")
    return make(Tile, axis=canonical_axis(ctx, p.axis, len(ctx.input_shapes[0])), tiles=int(p.tiles))


@register("CropCenter", bottoms=1, tops=1)
def crop_center(ctx: LayerContext) -> nn.Module:
    """waifu2x-caffe's CropCenter: one crop_size per input axis, removed from both ends of it; the fork
    requires ``2 * crop_size + 1 <= size`` on every axis."""
    sizes = tuple(int(size) for size in ctx.param("crop_center_param").crop_size)
    shape = ctx.input_shapes[0]
    if len(sizes) != len(shape):
        raise ctx.error(f"crop_size needs one value per input axis ({len(shape)}, shape {list(shape)}), "
                        f"got {len(sizes)}")
    for axis, (size, extent) in enumerate(zip(sizes, shape)):
        if 2 * size + 1 > extent:
            raise ctx.error(f"crop_size {size} leaves nothing of axis {axis} (size {extent}): the fork needs "
                            f"2 * crop_size + 1 <= {extent}")
    return make(CropCenter, crop=sizes)
