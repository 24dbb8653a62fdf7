"""The SSD fork's layers (weiliu89/caffe, branch ssd): Permute, PriorBox, Normalize, DetectionOutput.

The checks below are the ones the fork's LayerSetUp and Reshape make (with its messages' meaning), so
that a net Caffe-SSD refuses is refused here too, naming the layer, instead of computing something else.
Parameters are read with ``ctx.param``, so a user's fork caffe.proto (--caffe-proto) is honoured.
"""

from __future__ import annotations

import math

from torch import nn

from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, Shape, register
from caffe2torch.modules.detection import BOX_CODES, FLT_MAX, DetectionOutput, Normalize, Permute, PriorBox


def _legacy_shape(ctx: LayerContext, shape: Shape, what: str) -> tuple[int, int, int, int]:
    """(num, channels, height, width) as Caffe's legacy accessors give them: at most 4 axes, missing ones 1."""
    if len(shape) > 4:
        raise ctx.error(f"{what} has shape {list(shape)}: this layer reads num/channels/height/width, "
                        "so at most 4 axes")
    padded = tuple(shape) + (1,) * (4 - len(shape))
    return padded[0], padded[1], padded[2], padded[3]


@register("Permute", bottoms=1, tops=1)
def permute(ctx: LayerContext) -> nn.Module:
    """The axes named in ``order`` first, then the others in their order (SSD's PermuteLayer)."""
    ndim = len(ctx.input_shapes[0])
    order: list[int] = []
    for axis in ctx.param("permute_param").order:
        if not 0 <= axis < ndim:
            raise ctx.error(f"order {axis} is out of range for a {ndim}-D input")
        if axis in order:
            raise ctx.error(f"order names axis {axis} twice")
        order.append(int(axis))
    order += [axis for axis in range(ndim) if axis not in order]
    return make(Permute, order=tuple(order))


def _positive_pair(ctx: LayerContext, param: object, single: str, first: str, second: str,
                   cast: type) -> tuple | None:
    """``(first, second)`` from a single field or from the pair of fields, as PriorBox reads img_size /
    img_h, img_w and step / step_h, step_w: one form or the other, every value given positive."""
    has_single, has_pair = param.HasField(single), param.HasField(first) or param.HasField(second)
    if has_pair:
        if has_single:
            raise ctx.error(f"give either {single} or {first}/{second}, not both")
        values = (cast(getattr(param, first)), cast(getattr(param, second)))
        if not all(v > 0 for v in values):
            raise ctx.error(f"{first} and {second} must both be positive, got {values[0]} and {values[1]}")
        return values
    if has_single:
        value = cast(getattr(param, single))
        if not value > 0:
            raise ctx.error(f"{single} must be positive, got {value}")
        return value, value
    return None


@register("PriorBox", bottoms=2, tops=1)
def prior_box(ctx: LayerContext) -> nn.Module:
    p = ctx.param("prior_box_param")
    _legacy_shape(ctx, ctx.input_shapes[0], "the feature map")
    _legacy_shape(ctx, ctx.input_shapes[1], "the image")
    min_sizes = tuple(float(v) for v in p.min_size)
    if not min_sizes:
        raise ctx.error("needs at least one min_size")
    if not all(v > 0 for v in min_sizes):
        raise ctx.error(f"every min_size must be positive, got {list(min_sizes)}")
    max_sizes = tuple(float(v) for v in p.max_size)
    if max_sizes:
        if len(max_sizes) != len(min_sizes):
            raise ctx.error(f"{len(max_sizes)} max_size for {len(min_sizes)} min_size: give one per min_size")
        if not all(high > low for low, high in zip(min_sizes, max_sizes)):
            raise ctx.error(f"every max_size must exceed its min_size, got {list(min_sizes)} and {list(max_sizes)}")
    variances = tuple(float(v) for v in p.variance) or (0.1,)
    if len(variances) not in (1, 4):
        raise ctx.error(f"variance takes 1 or 4 values, got {len(variances)}")
    if not all(v > 0 for v in variances):
        raise ctx.error(f"every variance must be positive, got {list(variances)}")
    aspect_ratios = tuple(float(v) for v in p.aspect_ratio)
    if not all(math.isfinite(v) and v > 0 for v in aspect_ratios):
        raise ctx.error(f"every aspect_ratio must be positive, got {list(aspect_ratios)}")
    return make(PriorBox, min_sizes=min_sizes, max_sizes=max_sizes, aspect_ratios=aspect_ratios,
                flip=bool(p.flip), clip=bool(p.clip), variances=variances,
                img_size=_positive_pair(ctx, p, "img_size", "img_h", "img_w", int),
                step=_positive_pair(ctx, p, "step", "step_h", "step_w", float), offset=float(p.offset))


@register("Normalize", bottoms=1, tops=1)
def normalize(ctx: LayerContext) -> nn.Module:
    shape = ctx.input_shapes[0]
    if len(shape) < 2:
        raise ctx.error(f"needs at least 2 axes (N x C ...), got shape {list(shape)}")
    _legacy_shape(ctx, shape, "the input")
    p = ctx.param("norm_param")
    channels, shared = shape[1], bool(p.channel_shared)
    module = make(Normalize, channels=channels, across_spatial=bool(p.across_spatial), channel_shared=shared,
                  eps=float(p.eps))
    # SSD's scale blob: no axes when shared (legacy 1 x 1 x 1 x 1 accepted), else one value per channel.
    weight = ctx.blob(0, () if shared else (channels,), init="ones")
    if ctx.blobs is None and p.scale_filler.type == "constant":
        weight.fill_(p.scale_filler.value)  # random init: the net's own initial scale
    module.weight = nn.Parameter(weight)
    return module


@register("DetectionOutput", bottoms=(1, 4), tops=1)
def detection_output(ctx: LayerContext) -> nn.Module:
    """SSD's DetectionOutput (bottoms loc, conf, prior).  A fourth bottom (some forks feed the image or the data
    layer's size) is accepted and ignored; OpenCV's ``clip`` clips the decoded boxes to [0, 1] before NMS;
    saving results to files (save_output_param) and visualisation are not converted.  A one-bottom layer of the
    type is the YOLOv2 ports' region output decoder, another layer: refused with a message saying so."""
    if len(ctx.input_shapes) == 1:
        raise ctx.error(
            "has one bottom: this looks like a YOLO region DetectionOutput (caffe-yolov2 and its ports: the region "
            "layer's output decoded with the coords/biases of detection_output_param), which is not SSD's "
            "DetectionOutput (bottoms loc, conf, prior) that caffe2torch converts. Register a converter for it "
            "in a file given with --plugin: @caffe2torch.converter.register('DetectionOutput', bottoms=(1, 4), "
            "tops=1, replace=True), handing layers with 3 or more bottoms to "
            "caffe2torch.converter.layers.detection.detection_output (see the README, 'Custom layers')")
    if len(ctx.input_shapes) < 3:
        raise ctx.error(f"needs 3 to 4 bottom(s) (loc, conf, prior), got {len(ctx.input_shapes)}")
    p = ctx.param("detection_output_param")
    if not p.HasField("num_classes"):
        raise ctx.error("needs num_classes")
    num_classes = int(p.num_classes)
    if num_classes < 1:
        raise ctx.error(f"num_classes must be positive, got {num_classes}")
    nms = p.nms_param
    if not nms.nms_threshold >= 0:
        raise ctx.error(f"nms_threshold must be non-negative, got {nms.nms_threshold}")
    if not 0 < nms.eta <= 1:
        raise ctx.error(f"eta must be in (0, 1], got {nms.eta}")
    share_location = bool(p.share_location)
    if share_location and p.background_label_id == -1:
        # DecodeBBoxesAll skips the label equal to the background's, and shared locations are label -1.
        raise ctx.error("background_label_id -1 with share_location true: Caffe-SSD decodes no boxes then and "
                        "aborts ('Could not find location predictions for label -1')")
    num_loc_classes = 1 if share_location else num_classes
    loc_shape, conf_shape, prior_shape = ctx.input_shapes[:3]
    _, prior_channels, prior_height, prior_width = _legacy_shape(ctx, prior_shape, "the prior input")
    needed_channels = 1 if p.variance_encoded_in_target else 2
    if prior_channels < needed_channels or prior_width != 1 or prior_height % 4:
        raise ctx.error(f"the prior input has shape {list(prior_shape)}; expected 1 x {needed_channels} x "
                        "(priors * 4), boxes then variances, as PriorBox makes")
    num_priors = prior_height // 4
    if len(loc_shape) < 2 or len(conf_shape) < 2 or loc_shape[0] != conf_shape[0]:
        raise ctx.error(f"loc {list(loc_shape)} and conf {list(conf_shape)} must be N x ... with the same N")
    if math.prod(loc_shape[1:]) != num_priors * num_loc_classes * 4:
        raise ctx.error(f"loc has shape {list(loc_shape)}; {num_priors} priors need "
                        f"{num_priors * num_loc_classes * 4} location values per image")
    if math.prod(conf_shape[1:]) != num_priors * num_classes:
        raise ctx.error(f"conf has shape {list(conf_shape)}; {num_priors} priors need "
                        f"{num_priors * num_classes} confidences per image")
    if not 1 <= p.code_type <= len(BOX_CODES):
        raise ctx.error(f"code_type {p.code_type} is none of CORNER (1), CENTER_SIZE (2), CORNER_SIZE (3)")
    code_type = BOX_CODES[p.code_type - 1]
    return make(DetectionOutput, num_classes=num_classes, share_location=share_location,
                background_label_id=int(p.background_label_id), code_type=code_type,
                variance_encoded_in_target=bool(p.variance_encoded_in_target), keep_top_k=int(p.keep_top_k),
                confidence_threshold=float(p.confidence_threshold) if p.HasField("confidence_threshold")
                else -FLT_MAX,
                nms_threshold=float(nms.nms_threshold), top_k=int(nms.top_k) if nms.HasField("top_k") else -1,
                eta=float(nms.eta), clip=bool(getattr(p, "clip", False)))
