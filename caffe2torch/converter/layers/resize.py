"""Upsample (the YOLOv3 Caffe ports) and Interp (DeepLab v2, PSPNet): the forks' spatial resizing layers.

Parameters are read with ``ctx.param``, so a user's fork caffe.proto (--caffe-proto) is honoured; a field that
schema lacks counts as not given.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.modules.resize import Interp, Upsample


def given(message: Any, name: str) -> bool:
    """Whether the prototxt gave field ``name`` of a parameter message from ``ctx.param``: false too where the
    message's schema has no such field (the YOLO ports' UpsampleParameter knows only ``scale``)."""
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None:  # an untyped message: the fields the text gave
        return name in message
    return name in descriptor.fields_by_name and message.HasField(name)


@register("Upsample", bottoms=(1, 2), tops=1)
def upsample(ctx: LayerContext) -> nn.Module:
    """The YOLOv3 ports' nearest-neighbour Upsample (``out[h][w] = in[h / scale][w / scale]``).

    SegNet's Upsample, the same type with a second bottom (a max-pooling mask), unpools instead; it is refused.
    SegNet's per-axis ``scale_h``/``scale_w`` and output size ``upsample_h``/``upsample_w`` do nothing in any
    fork without that mask; with one bottom they get the YOLO rule per axis (see :class:`Upsample`).
    """
    if len(ctx.input_shapes) == 2:
        raise ctx.error("two bottoms make this SegNet's max-unpooling (the second bottom is a Pooling layer's "
                        "argmax mask), which is not supported; neither is the mask top of Pooling that feeds it")
    p = ctx.param("upsample_param")
    shape = ctx.input_shapes[0]
    if len(shape) != 4:
        raise ctx.error(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
    if getattr(p, "pad_out_h", False) or getattr(p, "pad_out_w", False):
        raise ctx.error("pad_out_h/pad_out_w size SegNet's unpooling output; they mean nothing without its mask")
    if given(p, "upsample_h") or given(p, "upsample_w"):
        if not (given(p, "upsample_h") and given(p, "upsample_w")):
            raise ctx.error("give both upsample_h and upsample_w")
        if given(p, "scale") or given(p, "scale_h") or given(p, "scale_w"):
            raise ctx.error("give either the output size (upsample_h, upsample_w) or a scale, not both")
        if p.upsample_h < 1 or p.upsample_w < 1:
            raise ctx.error(f"upsample_h {p.upsample_h} and upsample_w {p.upsample_w} must be positive")
        return make(Upsample, scale_h=1, scale_w=1, out_h=int(p.upsample_h), out_w=int(p.upsample_w))
    if given(p, "scale_h") or given(p, "scale_w"):
        if not (given(p, "scale_h") and given(p, "scale_w")) or given(p, "scale"):
            raise ctx.error("give either scale, or both scale_h and scale_w")
        scale_h, scale_w = int(p.scale_h), int(p.scale_w)
    else:
        scale_h = scale_w = int(p.scale)
    if scale_h < 1 or scale_w < 1:
        raise ctx.error(f"the scale must be a positive integer, got {scale_h} x {scale_w}")
    return make(Upsample, scale_h=scale_h, scale_w=scale_w)


@register("Interp", bottoms=(1, 2), tops=1)
def interp(ctx: LayerContext) -> nn.Module:
    """DeepLab's bilinear Interp.  The output size rule is chosen as the fork's ``InterpLayer::Reshape`` does,
    in its order: a second bottom's size; shrink_factor alone; zoom_factor alone; height and width; both
    factors (shrink first).  Pads may only crop (non-positive), as the fork checks."""
    p = ctx.param("interp_param")
    shape = ctx.input_shapes[0]
    if len(shape) != 4:
        raise ctx.error(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
    if p.pad_beg > 0 or p.pad_end > 0:
        raise ctx.error(f"pad_beg {p.pad_beg} and pad_end {p.pad_end} must not be positive: the fork only crops")
    in_h, in_w = shape[2] + p.pad_beg + p.pad_end, shape[3] + p.pad_beg + p.pad_end
    if in_h < 1 or in_w < 1:
        raise ctx.error(f"pad_beg {p.pad_beg} and pad_end {p.pad_end} crop the {shape[2]} x {shape[3]} input "
                        f"to nothing")
    pads = dict(pad_beg=int(p.pad_beg), pad_end=int(p.pad_end))
    has = {name: given(p, name) for name in ("shrink_factor", "zoom_factor", "height", "width")}
    if len(ctx.input_shapes) == 2:
        if any(has.values()):
            raise ctx.error("a second bottom gives the output size; shrink_factor, zoom_factor, height and width "
                            "must then be left out (the fork refuses the ambiguity)")
        reference = ctx.input_shapes[1]
        if len(reference) != 4:
            raise ctx.error(f"the second bottom must be 4-D (its height and width give the output size), "
                            f"got shape {list(reference)}")
        return make(Interp, rule="reference", **pads)
    if has["shrink_factor"] and not has["zoom_factor"]:
        rule = "shrink"
    elif has["zoom_factor"] and not has["shrink_factor"]:
        rule = "zoom"
    elif has["height"] and has["width"]:
        rule = "size"
    elif has["shrink_factor"] and has["zoom_factor"]:
        rule = "shrink_zoom"
    else:
        raise ctx.error("the output size is unspecified: give zoom_factor, shrink_factor, both, height and width, "
                        "or a second bottom")
    if "shrink" in rule and p.shrink_factor < 1:
        raise ctx.error(f"shrink_factor must be at least 1, got {p.shrink_factor}")
    if "zoom" in rule and p.zoom_factor < 1:
        raise ctx.error(f"zoom_factor must be at least 1, got {p.zoom_factor}")
    module = make(Interp, rule=rule, zoom_factor=int(p.zoom_factor), shrink_factor=int(p.shrink_factor),
                  height=int(p.height), width=int(p.width), **pads)
    out_h, out_w = module.output_size(in_h, in_w)
    if out_h < 1 or out_w < 1:
        raise ctx.error(f"the output would be {out_h} x {out_w}: height and width must be positive")
    return module
