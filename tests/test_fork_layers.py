"""The fork layers (Upsample, Interp, Reorg, ShuffleChannel, BN, CropCenter, ReLU6, the depthwise convolutions,
HoleConvolution, AxpyFast, Python layers) against numpy transcriptions of each fork's C++ forward pass.

Each reference below is written from the fork's CPU code, loop by loop and index by index, in our own words:
YOLOv3 ports' upsample_layer.cpp, DeepLab v2's interp_layer.cpp with caffe_cpu_interp2 (float32 steps), the
YOLOv2 ports' reorg_layer (darknet's reorg_cpu), ShuffleNet's shuffle_channel_layer.cpp, yjxiong/caffe's and
hszhao/PSPNet's bn_layer.cpp at test time, PSPNet's hole_conv_layer.cpp, waifu2x-caffe's crop_center_layer.cpp,
yonghenglh6's conv_dw_layer.cpp.  OpenCV's dnn implements some of them natively; where it does, it is compared
too, and where it departs from the fork (the fork is the truth) the test says so.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.converter import convert, registered
from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, python_layer_type
from caffe2torch.errors import ConversionError
from tests.conftest import ROOT
from tests.test_converter_layers import Array, check, conv_ref, input_layers, layer, opencv_forward, rand, run

f32 = np.float32


# --- numpy references of the forks' forward passes ------------------------------------------------------------


def upsample_ref(x: Array, out_h: int, out_w: int) -> Array:
    """The YOLOv3 ports' loop, generalised to an output of any size: out[h][w] = in[h * H // out_h][...].  For
    out = in * scale that is their ``in[h / scale][w / scale]``."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, out_h, out_w), x.dtype)
    for oh, ow in itertools.product(range(out_h), range(out_w)):
        y[:, :, oh, ow] = x[:, :, oh * h // out_h, ow * w // out_w]
    return y


def yolo_upsample_ref(x: Array, scale: int) -> Array:
    """upsample_layer.cpp Forward_cpu, on flat arrays as the fork indexes them."""
    n, c, h, w = x.shape
    big_h, big_w = h * scale, w * scale
    flat_in, flat_out = x.reshape(-1), np.zeros(n * c * big_h * big_w, x.dtype)
    for b, k, oh, ow in itertools.product(range(n), range(c), range(big_h), range(big_w)):
        out_index = ((b * c + k) * big_h + oh) * big_w + ow
        in_index = ((b * c + k) * (big_h // scale) + oh // scale) * (big_w // scale) + ow // scale
        flat_out[out_index] = flat_in[in_index]
    return flat_out.reshape(n, c, big_h, big_w)


def interp_size_ref(rule: dict[str, int], in_h: int, in_w: int) -> tuple[int, int]:
    """InterpLayer::Reshape's branches, in its order, on the cropped input size."""
    has = {name: name in rule for name in ("shrink_factor", "zoom_factor", "height", "width")}
    if has["shrink_factor"] and not has["zoom_factor"]:
        s = rule["shrink_factor"]
        return (in_h - 1) // s + 1, (in_w - 1) // s + 1
    if has["zoom_factor"] and not has["shrink_factor"]:
        z = rule["zoom_factor"]
        return in_h + (in_h - 1) * (z - 1), in_w + (in_w - 1) * (z - 1)
    if has["height"] and has["width"]:
        return rule["height"], rule["width"]
    s, z = rule["shrink_factor"], rule["zoom_factor"]
    h, w = (in_h - 1) // s + 1, (in_w - 1) // s + 1
    return h + (h - 1) * (z - 1), w + (w - 1) * (z - 1)


def interp_ref(x: Array, out_h: int, out_w: int, pad_beg: int = 0, pad_end: int = 0) -> Array:
    """caffe_cpu_interp2<float, false> on the crop (x1 = y1 = -pad_beg, height1 = H + pad_beg + pad_end of the
    full Height1 = H), every step in float32 as the C++ computes it."""
    n, c, full_h, full_w = x.shape
    first = -pad_beg
    in_h, in_w = full_h + pad_beg + pad_end, full_w + pad_beg + pad_end
    planes = x.reshape(n * c, full_h, full_w)
    if (in_h, in_w) == (out_h, out_w):  # the fork's special case: a plain copy
        return planes[:, first:first + in_h, first:first + in_w].reshape(n, c, out_h, out_w).copy()
    y = np.zeros((n * c, out_h, out_w), np.float32)
    ratio_h = f32(f32(in_h - 1) / f32(out_h - 1)) if out_h > 1 else f32(0)
    ratio_w = f32(f32(in_w - 1) / f32(out_w - 1)) if out_w > 1 else f32(0)
    for h2 in range(out_h):
        h1r = f32(ratio_h * f32(h2))
        h1 = int(h1r)
        h1p = 1 if h1 < in_h - 1 else 0
        h1lambda = f32(h1r - f32(h1))
        h0lambda = f32(f32(1) - h1lambda)
        for w2 in range(out_w):
            w1r = f32(ratio_w * f32(w2))
            w1 = int(w1r)
            w1p = 1 if w1 < in_w - 1 else 0
            w1lambda = f32(w1r - f32(w1))
            w0lambda = f32(f32(1) - w1lambda)
            row, col = first + h1, first + w1
            y[:, h2, w2] = (h0lambda * (w0lambda * planes[:, row, col] + w1lambda * planes[:, row, col + w1p])
                            + h1lambda * (w0lambda * planes[:, row + h1p, col]
                                          + w1lambda * planes[:, row + h1p, col + w1p]))
    return y.reshape(n, c, out_h, out_w)


def reorg_ref(x: Array, stride: int, reverse: bool) -> Array:
    """The YOLOv2 ports' ReorgLayer::Forward_cpu: reorg_cpu(bottom, W, H, C, N, stride, forward=reverse, top),
    i.e. darknet's reorg_cpu on the bottom's own dimensions (forward = 0 for the usual, non-reverse layer)."""
    n, c, h, w = x.shape
    bottom, top = x.reshape(-1), np.zeros(x.size, x.dtype)
    top_c, top_w, top_h = c // (stride * stride), w * stride, h * stride
    for b, k, j, i in itertools.product(range(n), range(c), range(h), range(w)):
        bottom_index = i + w * (j + h * (k + c * b))
        c2, offset = k % top_c, k // top_c
        w2, h2 = i * stride + offset % stride, j * stride + offset // stride
        top_index = w2 + top_w * (h2 + top_h * (c2 + top_c * b))
        if reverse:
            top[top_index] = bottom[bottom_index]
        else:
            top[bottom_index] = bottom[top_index]
    shape = (n, c // (stride * stride), h * stride, w * stride) if reverse else (n, c * stride * stride, h // stride,
                                                                                 w // stride)
    return top.reshape(shape)


def shuffle_channel_ref(x: Array, group: int) -> Array:
    """ShuffleChannelLayer::Resize_cpu per sample: the plane at (i, j) of a group x C/group grid goes to (j, i)."""
    n, c = x.shape[:2]
    columns = c // group
    planes = x.reshape(n, c, -1)
    y = np.zeros_like(planes)
    for i, j in itertools.product(range(group), range(columns)):
        y[:, j * group + i] = planes[:, i * columns + j]
    return y.reshape(n, c, *x.shape[2:], *([1] * (4 - x.ndim)))


def bn_ref(x: Array, slope: Array, bias: Array, mean: Array, var: Array, eps: float) -> Array:
    """BNLayer::Forward_cpu at TEST: subtract the mean, add eps to the stored variance, power -0.5, multiply, scale,
    shift, each step in float32."""
    view = (1, -1) + (1,) * (x.ndim - 2)
    top = x - mean.reshape(view)
    inverse_std = np.power(var + f32(eps), f32(-0.5)).astype(np.float32)
    top = top * inverse_std.reshape(view)
    top = top * slope.reshape(view)
    return top + bias.reshape(view)


def pspnet_bn_ref(x: Array, scale: Array, shift: Array, mean: Array, var: Array, var_eps: float,
                  moving_average: bool, axis: int = 1) -> Array:
    """hszhao/PSPNet's BNLayer::Forward_cpu at TEST, on the input seen as its legacy 4-D shape: the batch mean as
    the fork takes it (per (outer, channel) the mean over the axes after ``axis``, then over the axes before it),
    replaced by the stored one when moving_average; the same for the variance of x - mean; var_eps added, the
    square root, a division; then times scale plus shift.  Each step in float32."""
    shape = x.shape
    x4 = x.reshape(shape + (1,) * (4 - x.ndim))
    view = [1, 1, 1, 1]
    view[axis] = -1
    inner = tuple(range(axis + 1, 4))  # the fork's spatial_statistic_: over the axes after the channel axis
    outer = tuple(range(axis))  # then batch_statistic_: over the axes before it

    def two_stage_mean(values: Array) -> Array:
        spatial = values.mean(axis=inner, keepdims=True, dtype=np.float32) if inner else values
        return spatial.mean(axis=outer, keepdims=True, dtype=np.float32).astype(np.float32)

    batch_mean = mean.reshape(view) if moving_average else two_stage_mean(x4)
    top = (x4 - batch_mean).astype(np.float32)
    batch_var = var.reshape(view) if moving_average else two_stage_mean(top * top)
    std = np.power((batch_var + f32(var_eps)).astype(np.float32), f32(0.5)).astype(np.float32)
    top = (top / std).astype(np.float32)
    top = (top * scale.reshape(view)).astype(np.float32)
    return (top + shift.reshape(view)).astype(np.float32).reshape(shape)


def crop_center_ref(x: Array, crop: tuple[int, ...]) -> Array:
    """crop_copy: every index from crop to size - crop on every axis, copied in order."""
    out_shape = tuple(size - 2 * c for size, c in zip(x.shape, crop))
    y = np.zeros(out_shape, x.dtype)
    for index in itertools.product(*(range(s) for s in out_shape)):
        y[index] = x[tuple(i + c for i, c in zip(index, crop))]
    return y


def depthwise_ref(x: Array, w: Array, b: Array | None, stride: int, pad: int, dilation: int) -> Array:
    """ConvolutionDepthwiseLayer::Forward_cpu: per channel, a kernel over the zero-padded input."""
    n, c, h, wd = x.shape
    k = w.shape[-1]
    out_h = (h + 2 * pad - (dilation * (k - 1) + 1)) // stride + 1
    out_w = (wd + 2 * pad - (dilation * (k - 1) + 1)) // stride + 1
    y = np.zeros((n, c, out_h, out_w))
    for s, ch, oh, ow in itertools.product(range(n), range(c), range(out_h), range(out_w)):
        value = 0.0
        for kh, kw in itertools.product(range(k), range(k)):
            ih, iw = -pad + oh * stride + kh * dilation, -pad + ow * stride + kw * dilation
            if 0 <= ih < h and 0 <= iw < wd:
                value += float(w[ch, 0, kh, kw]) * float(x[s, ch, ih, iw])
        y[s, ch, oh, ow] = value + (float(b[ch]) if b is not None else 0.0)
    return y


def relu6_ref(x: Array, negative_slope: float = 0.0) -> Array:
    """std::min(std::max(x, 0), 6); with eric612's slope, std::min(std::max(x, 0) + slope * std::min(x, 0), 6)."""
    if negative_slope == 0:
        return np.minimum(np.maximum(x, 0), f32(6))
    return np.minimum(np.maximum(x, 0) + f32(negative_slope) * np.minimum(x, 0), f32(6))


# --- Upsample -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_upsample_yolo_scale(scale: int) -> None:
    x = rand(2, 3, 4, 5, seed=1)
    model, y = run(layer("up", "Upsample", ["data"], ["up"], f"upsample_param {{ scale: {scale} }}"), {"data": x})
    expected = yolo_upsample_ref(x, scale)
    np.testing.assert_array_equal(y.numpy(), expected)  # a copy: exactly equal
    np.testing.assert_array_equal(expected, upsample_ref(x, 4 * scale, 5 * scale))


def test_upsample_default_scale_is_one() -> None:
    x = rand(1, 2, 3, 3, seed=2)
    _, y = run(layer("up", "Upsample", ["data"], ["up"]), {"data": x})
    np.testing.assert_array_equal(y.numpy(), x)


def test_upsample_per_axis_scale() -> None:
    x = rand(2, 2, 3, 4, seed=3)
    _, y = run(layer("up", "Upsample", ["data"], ["up"], "upsample_param { scale_h: 2 scale_w: 3 }"), {"data": x})
    np.testing.assert_array_equal(y.numpy(), upsample_ref(x, 6, 12))


@pytest.mark.parametrize("out_h, out_w", [(7, 9), (6, 8), (3, 4), (2, 11)])
def test_upsample_explicit_size(out_h: int, out_w: int) -> None:
    x = rand(2, 2, 3, 4, seed=4)
    params = f"upsample_param {{ upsample_h: {out_h} upsample_w: {out_w} }}"
    _, y = run(layer("up", "Upsample", ["data"], ["up"], params), {"data": x})
    np.testing.assert_array_equal(y.numpy(), upsample_ref(x, out_h, out_w))
    if (out_h, out_w) == (6, 8):  # a whole multiple: the YOLO rule exactly
        np.testing.assert_array_equal(y.numpy(), yolo_upsample_ref(x, 2))


@pytest.mark.parametrize("params, message", [
    ("upsample_param { scale: 0 }", "positive integer"),
    ("upsample_param { scale: -2 }", "positive integer"),
    ("upsample_param { scale_h: 2 }", "both scale_h and scale_w"),
    ("upsample_param { scale: 2 scale_h: 2 scale_w: 2 }", "either scale, or both"),
    ("upsample_param { upsample_h: 4 }", "both upsample_h and upsample_w"),
    ("upsample_param { scale: 2 upsample_h: 4 upsample_w: 4 }", "not both"),
    ("upsample_param { scale: 2 pad_out_h: true }", "SegNet"),
])
def test_upsample_refusals(params: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        run(layer("up", "Upsample", ["data"], ["up"], params), {"data": rand(1, 2, 3, 3)})


def test_upsample_with_the_yolo_ports_own_schema(tmp_path: Any) -> None:
    """With a YOLO port's caffe.proto (--caffe-proto), whose UpsampleParameter has only ``scale``, the fields it
    lacks count as not given."""
    import caffe2torch

    text = (ROOT / "caffe2torch" / "caffe_proto" / "caffe.proto").read_text(encoding="utf-8")
    text = text.replace("  repeated KeptField caffe2torch_kept_field = 536870000;\n", "")
    start = text.index("message UpsampleParameter {")
    text = text[:start] + "message UpsampleParameter {\n  optional int32 scale = 1 [default = 1];\n}\n" + text[
        text.index("}", start) + 2:]
    (tmp_path / "caffe.proto").write_text(text, encoding="utf-8")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(input_layers({"data": (1, 2, 3, 4)}) + "\n"
                        + layer("up", "Upsample", ["data"], ["up"], "upsample_param { scale: 3 }"))
    model = caffe2torch.load(str(prototxt), caffe_proto=str(tmp_path / "caffe.proto"))
    x = rand(1, 2, 3, 4, seed=5)
    np.testing.assert_array_equal(model(torch.from_numpy(x)).numpy(), yolo_upsample_ref(x, 3))


def test_upsample_with_a_mask_bottom_is_segnet_unpooling_and_refused() -> None:
    x = rand(1, 2, 3, 3)
    with pytest.raises(ConversionError, match=r"layer 'up' \(Upsample\): two bottoms make this SegNet's max-unpooling"):
        run(layer("up", "Upsample", ["data", "mask"], ["up"], "upsample_param { scale: 2 }"), {"data": x, "mask": x})


# --- Interp ---------------------------------------------------------------------------------------------------


INTERP_CASES = [
    # interp_param, the size rule, pad_beg, pad_end
    ("zoom_factor: 2", {"zoom_factor": 2}, 0, 0),
    ("zoom_factor: 3", {"zoom_factor": 3}, 0, 0),
    ("zoom_factor: 1", {"zoom_factor": 1}, 0, 0),  # same size: the fork's copy
    ("shrink_factor: 2", {"shrink_factor": 2}, 0, 0),
    ("shrink_factor: 4", {"shrink_factor": 4}, 0, 0),
    ("shrink_factor: 9", {"shrink_factor": 9}, 0, 0),  # 1 x 1 output: the ratio is 0
    ("zoom_factor: 3 shrink_factor: 2", {"zoom_factor": 3, "shrink_factor": 2}, 0, 0),
    ("height: 13 width: 4", {"height": 13, "width": 4}, 0, 0),
    ("height: 1 width: 1", {"height": 1, "width": 1}, 0, 0),
    ("height: 1 width: 9", {"height": 1, "width": 9}, 0, 0),
    ("height: 6 width: 7", {"height": 6, "width": 7}, 0, 0),  # the input's size: a copy
    ("zoom_factor: 2 pad_beg: -1 pad_end: -1", {"zoom_factor": 2}, -1, -1),
    ("shrink_factor: 2 pad_beg: -2", {"shrink_factor": 2}, -2, 0),
    ("height: 5 width: 5 pad_end: -3", {"height": 5, "width": 5}, 0, -3),
    ("zoom_factor: 2 shrink_factor: 3 pad_beg: -1 pad_end: -2", {"zoom_factor": 2, "shrink_factor": 3}, -1, -2),
    ("height: 4 width: 5 pad_beg: -1 pad_end: -1", {"height": 4, "width": 5}, -1, -1),  # cropped copy
    # the fork's order of branches: a lone shrink_factor beats height/width; height/width beat both factors
    ("shrink_factor: 2 height: 9 width: 9", {"shrink_factor": 2}, 0, 0),
    ("zoom_factor: 2 shrink_factor: 2 height: 9 width: 3", {"height": 9, "width": 3}, 0, 0),
]


@pytest.mark.parametrize("params, rule, pad_beg, pad_end", INTERP_CASES)
def test_interp(params: str, rule: dict[str, int], pad_beg: int, pad_end: int) -> None:
    x = rand(2, 3, 6, 7, seed=10)
    _, y = run(layer("interp", "Interp", ["data"], ["interp"], f"interp_param {{ {params} }}"), {"data": x})
    out_h, out_w = interp_size_ref(rule, 6 + pad_beg + pad_end, 7 + pad_beg + pad_end)
    check(y, interp_ref(x, out_h, out_w, pad_beg, pad_end), rtol=0, atol=1e-6)


@pytest.mark.parametrize("params, size", [
    ("zoom_factor: 2", (11, 13)), ("zoom_factor: 4", (21, 25)), ("shrink_factor: 2", (3, 4)),
    ("shrink_factor: 3", (2, 3)), ("zoom_factor: 2 shrink_factor: 2", (5, 7)), ("height: 2 width: 3", (2, 3)),
    ("zoom_factor: 2 pad_beg: -1 pad_end: -1", (7, 9)), ("shrink_factor: 5 pad_end: -1", (1, 2)),
])
def test_interp_output_size(params: str, size: tuple[int, int]) -> None:
    """Sizes worked out by hand from the fork's formulas for a 6 x 7 input."""
    model, y = run(layer("interp", "Interp", ["data"], ["interp"], f"interp_param {{ {params} }}"),
                   {"data": rand(1, 1, 6, 7)})
    assert tuple(y.shape[2:]) == size


def test_interp_output_size_follows_the_input() -> None:
    """Like the fork's Reshape, the factor rules are applied to each input, not fixed at conversion."""
    model, _ = run(layer("interp", "Interp", ["data"], ["interp"], "interp_param { zoom_factor: 2 pad_beg: -1 }"),
                   {"data": rand(1, 2, 6, 7)})
    x = rand(3, 2, 9, 4, seed=11)
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    check(y, interp_ref(x, 15, 5, -1, 0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2])
def test_interp_size_of_a_second_bottom(batch: int) -> None:
    """The size comes from the second bottom's height and width (the fork allows batch 1 only; any batch here)."""
    x, reference = rand(batch, 3, 5, 4, seed=12), rand(batch, 1, 9, 11, seed=13)
    body = layer("interp", "Interp", ["data", "ref"], ["interp"], "interp_param { pad_beg: -1 }")
    _, y = run(body, {"data": x, "ref": reference})
    check(y, interp_ref(x, 9, 11, -1, 0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("params, bottoms, message", [
    ("zoom_factor: 2 pad_beg: 1", 1, "must not be positive"),
    ("zoom_factor: 2 pad_end: 2", 1, "must not be positive"),
    ("height: 4", 1, "unspecified"),
    ("", 1, "unspecified"),
    ("zoom_factor: 0", 1, "zoom_factor must be at least 1"),
    ("shrink_factor: 0", 1, "shrink_factor must be at least 1"),
    ("height: 0 width: 4", 1, "must be positive"),
    ("zoom_factor: 2 pad_beg: -3 pad_end: -3", 1, "to nothing"),
    ("zoom_factor: 2", 2, "second bottom gives the output size"),
    ("height: 3 width: 3", 2, "second bottom gives the output size"),
])
def test_interp_refusals(params: str, bottoms: int, message: str) -> None:
    inputs = {"data": rand(1, 2, 5, 6), "ref": rand(1, 1, 3, 3)}
    body = layer("interp", "Interp", list(inputs)[:bottoms], ["interp"], f"interp_param {{ {params} }}")
    with pytest.raises(ConversionError, match=message):
        run(body, dict(list(inputs.items())[:bottoms]))


def test_interp_is_torch_bilinear_with_aligned_corners() -> None:
    """The module relies on F.interpolate(align_corners=True) agreeing with caffe_cpu_interp2: on 400 random
    geometries (1 to 40 pixels out, from 1 to 12 in) the two differ by float rounding only."""
    rng = np.random.default_rng(14)
    for _ in range(400):
        in_h, in_w, out_h, out_w = (int(v) for v in (*rng.integers(1, 13, 2), *rng.integers(1, 41, 2)))
        x = rng.standard_normal((1, 2, in_h, in_w)).astype(np.float32)
        expected = interp_ref(x, out_h, out_w)
        if (in_h, in_w) == (out_h, out_w):
            continue
        actual = F.interpolate(torch.from_numpy(x), size=(out_h, out_w), mode="bilinear", align_corners=True)
        np.testing.assert_allclose(actual.numpy(), expected, rtol=0, atol=1e-6 * max(1.0, np.abs(x).max()))


@pytest.mark.parametrize("params, rule", [("zoom_factor: 2", {"zoom_factor": 2}),
                                          ("height: 4 width: 11", {"height": 4, "width": 11}),
                                          ("height: 1 width: 1", {"height": 1, "width": 1})])
def test_interp_matches_opencv(tmp_path: Any, params: str, rule: dict[str, int]) -> None:
    """OpenCV's Interp agrees where it follows the fork.  It departs from it elsewhere (OpenCV 4.x): it ignores
    pad_beg/pad_end (no crop: a zoom of the whole input) and shrink_factor (a 0 x 0 output alone; with zoom_factor,
    a zoom of the whole input), so those cases are checked against the fork's loop only."""
    x = rand(2, 3, 5, 7, seed=15)
    body = layer("interp", "Interp", ["data"], ["interp"], f"interp_param {{ {params} }}")
    _, y = run(body, {"data": x})
    reference = opencv_forward(tmp_path, body, x, "interp")
    check(y, reference, rtol=0, atol=1e-6)
    check(y, interp_ref(x, *interp_size_ref(rule, 5, 7)), rtol=0, atol=1e-6)


# --- Reorg ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride, shape", [(2, (2, 8, 4, 6)), (3, (2, 18, 6, 3)), (2, (1, 4, 2, 2)), (1, (1, 3, 2, 2))])
@pytest.mark.parametrize("reverse", [False, True])
def test_reorg(stride: int, shape: tuple[int, ...], reverse: bool) -> None:
    x = rand(*shape, seed=20)
    params = f"reorg_param {{ stride: {stride} reverse: {str(reverse).lower()} }}"
    _, y = run(layer("reorg", "Reorg", ["data"], ["reorg"], params), {"data": x})
    np.testing.assert_array_equal(y.numpy(), reorg_ref(x, stride, reverse))


def test_reorg_is_darknets_quirk_not_space_to_depth() -> None:
    """darknet's reorg gathers from the input read as C/s^2 channels of H*s x W*s: it is not pixel_unshuffle,
    and a naive space-to-depth would break every YOLOv2 port."""
    x = rand(1, 8, 4, 4, seed=21)
    _, y = run(layer("reorg", "Reorg", ["data"], ["reorg"], "reorg_param { stride: 2 }"), {"data": x})
    assert not np.array_equal(y.numpy(), F.pixel_unshuffle(torch.from_numpy(x), 2).numpy())
    # Value by value: output channel k, pixel (j, i) is input-as-(2, 8, 8) channel k % 2 at (2j + o / 2, 2i + o % 2),
    # o = k / 2; the output's memory order is the input's dimensions (8 x 4 x 4) before the reshape.
    wide = x.reshape(2, 8, 8)
    gathered = np.array([[[wide[k % 2, 2 * j + (k // 2) // 2, 2 * i + (k // 2) % 2] for i in range(4)]
                          for j in range(4)] for k in range(8)])
    np.testing.assert_array_equal(y.numpy().reshape(-1), gathered.reshape(-1))


@pytest.mark.parametrize("params, shape, message", [
    ("reorg_param { reverse: true }", (1, 8, 4, 4), "positive stride"),
    ("reorg_param { stride: 0 }", (1, 8, 4, 4), "positive stride"),
    ("reorg_param { stride: 2 }", (1, 6, 4, 4), "its square the 6 channels"),
    ("reorg_param { stride: 2 }", (1, 8, 5, 4), "divide the height 5"),
    ("reorg_param { stride: 2 }", (1, 8, 4, 4, 1), "4-D"),
])
def test_reorg_refusals(params: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        run(layer("reorg", "Reorg", ["data"], ["reorg"], params), {"data": rand(*shape)})


def test_reorg_matches_opencv(tmp_path: Any) -> None:
    """OpenCV's Reorg is darknet's too (forward direction).  It ignores ``reverse``, which it does not know: a
    reverse Reorg runs forwards there, so only the forward layer is compared."""
    x = rand(2, 8, 6, 4, seed=22)
    body = layer("reorg", "Reorg", ["data"], ["reorg"], "reorg_param { stride: 2 }")
    _, y = run(body, {"data": x})
    np.testing.assert_array_equal(y.numpy(), opencv_forward(tmp_path, body, x, "reorg"))


# --- ShuffleChannel -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [1, 2, 3, 6])
@pytest.mark.parametrize("shape", [(2, 6, 3, 4), (2, 6, 5), (3, 6)])
def test_shuffle_channel(group: int, shape: tuple[int, ...]) -> None:
    x = rand(*shape, seed=30)
    params = f"shuffle_channel_param {{ group: {group} }}"
    _, y = run(layer("shuffle", "ShuffleChannel", ["data"], ["shuffle"], params), {"data": x})
    np.testing.assert_array_equal(y.numpy(), shuffle_channel_ref(x, group))
    assert y.dim() == 4  # the fork's top is num x channels x height x width


@pytest.mark.parametrize("params, message", [("shuffle_channel_param { group: 4 }", "does not divide the 6"),
                                             ("shuffle_channel_param { group: 0 }", "does not divide")])
def test_shuffle_channel_refusals(params: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        run(layer("shuffle", "ShuffleChannel", ["data"], ["shuffle"], params), {"data": rand(1, 6, 2, 2)})


@pytest.mark.parametrize("group", [2, 3])
def test_shuffle_channel_matches_opencv(tmp_path: Any, group: int) -> None:
    x = rand(2, 6, 3, 4, seed=31)
    body = layer("shuffle", "ShuffleChannel", ["data"], ["shuffle"], f"shuffle_channel_param {{ group: {group} }}")
    _, y = run(body, {"data": x})
    np.testing.assert_array_equal(y.numpy(), opencv_forward(tmp_path, body, x, "shuffle"))


# --- ReLU6 ----------------------------------------------------------------------------------------------------


def test_relu6() -> None:
    x = np.concatenate([rand(2, 3, 4, 4, seed=40) * 5, np.array([-0.0, 0.0, 6.0, 6.5, np.inf, -np.inf, np.nan],
                                                                  np.float32).reshape(1, 7, 1, 1).repeat(2, 0)
                        .repeat(4, 2).repeat(4, 3)], axis=1)
    _, y = run(layer("relu6", "ReLU6", ["data"], ["relu6"]), {"data": x})
    np.testing.assert_array_equal(y.numpy(), relu6_ref(x))


def test_relu6_ignores_relu_param() -> None:
    """No ReLU6 of a fork we know reads relu_param: its negative_slope changes nothing."""
    x = rand(1, 2, 3, 3, seed=41) * 8
    _, y = run(layer("relu6", "ReLU6", ["data"], ["relu6"], "relu_param { negative_slope: 0.5 }"), {"data": x})
    np.testing.assert_array_equal(y.numpy(), relu6_ref(x))


def test_relu6_negative_slope_of_eric612() -> None:
    """eric612/MobileNet-YOLO's ReLU6 reads relu6_param.negative_slope, a message no schema of ours types: it is
    read as the prototxt spells it."""
    x = rand(2, 3, 4, 4, seed=43) * 8
    with pytest.warns(Warning, match="relu6_param"):
        _, y = run(layer("relu6", "ReLU6", ["data"], ["relu6"], "relu6_param { negative_slope: 0.25 }"), {"data": x})
    np.testing.assert_array_equal(y.numpy(), relu6_ref(x, 0.25))


def test_relu6_matches_opencv(tmp_path: Any) -> None:
    x = rand(2, 3, 4, 4, seed=42) * 5
    body = layer("relu6", "ReLU6", ["data"], ["relu6"])
    _, y = run(body, {"data": x})
    np.testing.assert_array_equal(y.numpy(), opencv_forward(tmp_path, body, x, "relu6"))


# --- BN -------------------------------------------------------------------------------------------------------


def bn_blobs(channels: int, seed: int, legacy_2d: bool = False) -> list[Array]:
    """slope, bias, mean, variance as the fork stores them (1 x C x 1 x 1, or 1 x C in the moving_average
    variant); the last channel's variance is 0, where only eps keeps the output finite."""
    rng = np.random.default_rng(seed)
    values = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.3, channels), rng.normal(0, 1, channels),
              np.append(rng.uniform(0.1, 3, channels - 1), 0.0)]
    shape = (1, channels) if legacy_2d else (1, channels, 1, 1)
    return [v.astype(np.float32).reshape(shape) for v in values]


@pytest.mark.parametrize("params, eps", [("", 1e-5), ("bn_param { eps: 0.001 frozen: true }", 1e-3)])
@pytest.mark.parametrize("legacy_2d", [False, True])
def test_bn(params: str, eps: float, legacy_2d: bool) -> None:
    x = rand(2, 4, 3, 5, seed=50)
    blobs = bn_blobs(4, seed=51, legacy_2d=legacy_2d)
    _, y = run(layer("bn", "BN", ["data"], ["bn"], params), {"data": x}, {"bn": blobs})
    check(y, bn_ref(x, *(b.reshape(-1) for b in blobs), eps), rtol=1e-6, atol=1e-6)


def test_bn_adds_eps_to_the_stored_variance() -> None:
    """With a variance of 0 in channel 1 the output is (x - mean) / sqrt(eps) * slope + bias: eps goes inside the
    square root, and the stored variance is used as is (no moving-average factor, unlike BatchNorm)."""
    x = rand(1, 2, 2, 2, seed=52)
    slope, bias, mean, var = (np.array(v, np.float32).reshape(1, 2, 1, 1)
                              for v in ([2.0, 3.0], [0.5, -1.0], [0.1, 0.2], [4.0, 0.0]))
    _, y = run(layer("bn", "BN", ["data"], ["bn"], "bn_param { eps: 0.01 }"), {"data": x},
               {"bn": [slope, bias, mean, var]})
    np.testing.assert_allclose(y.numpy()[0, 1], (x[0, 1] - 0.2) / 0.1 * 3.0 - 1.0, rtol=1e-6)
    np.testing.assert_allclose(y.numpy()[0, 0], (x[0, 0] - 0.1) / np.sqrt(4.01) * 2.0 + 0.5, rtol=1e-6)


def test_bn_2d_input_and_random_init() -> None:
    x = rand(3, 4, seed=53)
    model, y = run(layer("bn", "BN", ["data"], ["bn"]), {"data": x}, {"bn": bn_blobs(4, seed=54)})
    check(y, bn_ref(x, *(b.reshape(-1) for b in bn_blobs(4, seed=54)), 1e-5), rtol=1e-6, atol=1e-6)
    net = parse_prototxt(input_layers({"data": (1, 3, 2, 2)}) + layer("bn", "BN", ["data"], ["bn"]))
    fresh = convert(net, None, random_init=True)
    x = rand(1, 3, 2, 2, seed=55)
    np.testing.assert_allclose(fresh(torch.from_numpy(x)).detach().numpy(), x / np.sqrt(f32(1 + 1e-5)), rtol=1e-6)


def test_bn_without_running_statistics_is_refused() -> None:
    blobs = bn_blobs(3, seed=56)[:2]
    with pytest.raises(ConversionError, match="no running mean and variance"):
        run(layer("bn", "BN", ["data"], ["bn"]), {"data": rand(1, 3, 2, 2)}, {"bn": blobs})


def test_bn_blob_shape_is_checked() -> None:
    blobs = bn_blobs(3, seed=57)
    blobs[3] = blobs[3].reshape(3)
    with pytest.raises(ConversionError, match=r"blob 3 has shape \[3\], expected \[1, 3, 1, 1\]"):
        run(layer("bn", "BN", ["data"], ["bn"]), {"data": rand(1, 3, 2, 2)}, {"bn": blobs})


# --- BN of hszhao/PSPNet ---------------------------------------------------------------------------------------


def pspnet_blobs(channels: int, seed: int, axis: int = 1) -> list[Array]:
    """scale, shift, mean, variance as PSPNet stores them: 4-D, the channels at ``axis``."""
    rng = np.random.default_rng(seed)
    values = [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.3, channels), rng.normal(0, 1, channels),
              rng.uniform(0.1, 3, channels)]
    shape = tuple(channels if dim == axis else 1 for dim in range(4))
    return [v.astype(np.float32).reshape(shape) for v in values]


@pytest.mark.parametrize("moving_average", [True, False])
@pytest.mark.parametrize("var_eps", [None, 1e-3])
@pytest.mark.parametrize("shape, axis", [((2, 3, 4, 5), 1), ((3, 4, 5), 1), ((4, 3), 1), ((2, 3, 4, 5), 2),
                                         ((2, 3, 4), 2)])
def test_bn_pspnet(moving_average: bool, var_eps: float | None, shape: tuple[int, ...], axis: int) -> None:
    """PSPNet's fields (moving_average, var_eps, axis) make the layer PSPNet's: var_eps (default 1e-10) on the
    variance, the stored statistics with moving_average and the batch's own without, per index of ``axis``."""
    x = rand(*shape, seed=150) * 2 + 0.5
    channels = (shape + (1,) * (4 - len(shape)))[axis]
    blobs = pspnet_blobs(channels, seed=151, axis=axis)
    fields = [f"moving_average: {str(moving_average).lower()}", f"axis: {axis}"]
    if var_eps is not None:
        fields.append(f"var_eps: {var_eps}")
    _, y = run(layer("bn", "BN", ["data"], ["bn"], "bn_param { " + " ".join(fields) + " }"), {"data": x},
               {"bn": blobs})
    expected = pspnet_bn_ref(x, *(b.reshape(-1) for b in blobs), 1e-10 if var_eps is None else var_eps,
                             moving_average, axis)
    check(y, expected, rtol=1e-5, atol=1e-5)
    if not moving_average:  # the stored statistics play no part
        blobs[2], blobs[3] = blobs[2] + 100, blobs[3] * 7
        _, again = run(layer("bn", "BN", ["data"], ["bn"], "bn_param { " + " ".join(fields) + " }"), {"data": x},
                       {"bn": blobs})
        torch.testing.assert_close(again, y, rtol=0, atol=0)


def test_bn_pspnet_adds_var_eps_not_eps() -> None:
    """The published PSPNet nets give moving_average: true and no var_eps: its default 1e-10 is added to a stored
    variance of 1e-6, where yjxiong's eps 1e-5 would give 0.3015 instead of 0.99995 (OpenCV-published repro)."""
    x = np.array([0.001, -0.001], np.float32).reshape(1, 1, 1, 2)
    blobs = [np.array(v, np.float32).reshape(1, 1, 1, 1) for v in (1.0, 0.0, 0.0, 1e-6)]
    _, y = run(layer("bn", "BN", ["data"], ["bn"], "bn_param { moving_average: true }"), {"data": x}, {"bn": blobs})
    expected = x / np.sqrt(f32(1e-6) + f32(1e-10))
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(y.numpy().reshape(-1), [0.99995, -0.99995], rtol=1e-6)
    _, yjxiong = run(layer("bn", "BN", ["data"], ["bn"], "bn_param { eps: 1e-5 }"), {"data": x}, {"bn": blobs})
    np.testing.assert_allclose(yjxiong.numpy().reshape(-1), [0.30151, -0.30151], rtol=1e-4)


def test_bn_pspnet_batch_statistics_need_no_stored_ones() -> None:
    """moving_average false (PSPNet's default) at test time: the batch's own mean and variance; the fork then reads
    only scale and shift, so weights holding just those two convert."""
    x = np.array([1.0, 3.0], np.float32).reshape(1, 1, 1, 2)
    blobs = [np.ones((1, 1, 1, 1), np.float32), np.zeros((1, 1, 1, 1), np.float32)]
    _, y = run(layer("bn", "BN", ["data"], ["bn"], "bn_param { moving_average: false }"), {"data": x}, {"bn": blobs})
    np.testing.assert_allclose(y.numpy().reshape(-1), [-1.0, 1.0], rtol=1e-6)
    with pytest.raises(ConversionError, match="moving_average is set but the weights hold only scale and shift"):
        run(layer("bn", "BN", ["data"], ["bn"], "bn_param { moving_average: true }"), {"data": x}, {"bn": blobs})


@pytest.mark.parametrize("params, pspnet", [
    ("", False),
    ("bn_param { eps: 0.001 momentum: 0.95 frozen: true }", False),  # names both forks have: yjxiong's reading
    ("bn_param { slope_filler { type: 'constant' value: 1 } }", False),
    ("bn_param { scale_filler { type: 'constant' value: 1 } shift_filler { type: 'constant' } }", True),
    ("bn_param { decay: 0.05 }", True),
    ("bn_param { var_eps: 1e-10 }", True),
    ("bn_param { axis: 1 eps: 0.001 }", True),  # PSPNet's BNLayer never reads eps
])
def test_bn_fork_is_told_by_the_fields_given(params: str, pspnet: bool) -> None:
    x = rand(2, 3, 2, 2, seed=152)
    blobs = bn_blobs(3, seed=153)
    blobs[3] = np.abs(blobs[3]) + 0.5
    _, y = run(layer("bn", "BN", ["data"], ["bn"], params), {"data": x}, {"bn": blobs})
    flat = [b.reshape(-1) for b in blobs]
    eps = 1e-3 if "eps: 0.001" in params and not pspnet else 1e-5
    expected = pspnet_bn_ref(x, *flat, 1e-10, False) if pspnet else bn_ref(x, *flat, eps)
    check(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("params, shape, message", [
    ("bn_param { slope_filler { type: 'constant' } var_eps: 1e-5 }", (1, 3, 2, 2),
     "slope_filler, var_eps: yjxiong/caffe's BN fields and PSPNet's together"),
    ("bn_param { axis: 3 }", (1, 3, 2, 2), "axis must be 1 or 2"),
    ("bn_param { axis: 0 }", (1, 3, 2, 2), "axis must be 1 or 2"),
    ("bn_param { moving_average: true }", (1, 3, 2, 2, 2), "needs 2 to 4 axes"),
])
def test_bn_pspnet_refusals(params: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ConversionError, match=f"'bn'.*{message}"):
        run(layer("bn", "BN", ["data"], ["bn"], params), {"data": rand(*shape)}, {"bn": pspnet_blobs(3, seed=154)})


def test_bn_pspnet_blob_shape_follows_the_axis() -> None:
    x = rand(2, 3, 4, 5, seed=155)
    with pytest.raises(ConversionError, match=r"blob 0 has shape \[1, 4, 1, 1\], expected \[1, 1, 4, 1\]"):
        run(layer("bn", "BN", ["data"], ["bn"], "bn_param { axis: 2 }"), {"data": x},
            {"bn": pspnet_blobs(4, seed=156, axis=1)})


def test_bn_with_a_pspnet_schema_is_pspnets_whatever_the_fields(tmp_path: Any) -> None:
    """With a fork's own caffe.proto (--caffe-proto) whose BNParameter has var_eps, a BN layer is PSPNet's even when
    it gives only names both forks share: here the batch's own statistics (moving_average's default) and var_eps's
    default 1e-10, where the built-in schema reads yjxiong's stored statistics and eps 1e-5."""
    import caffe2torch
    from caffe2torch.caffe_proto import write_caffemodel

    text = (ROOT / "caffe2torch" / "caffe_proto" / "caffe.proto").read_text(encoding="utf-8")
    text = text.replace("  repeated KeptField caffe2torch_kept_field = 536870000;\n", "")
    text = text.replace("  optional EmbedParameter embed_param = 137;\n", "")
    text = text.replace("  optional BNParameter bn_param = 1137;\n", "  optional BNParameter bn_param = 137;\n")
    start = text.index("message BNParameter {")
    text = text[:start] + """message BNParameter {
  optional FillerParameter scale_filler = 1;
  optional FillerParameter shift_filler = 2;
  optional float var_eps = 3 [default = 1e-10];
  optional bool moving_average = 4 [default = false];
  optional float decay = 5 [default = 0.05];
  optional int32 axis = 6 [default = 1];
  optional float momentum = 7 [default = 0.9];
  optional float eps = 8 [default = 1e-5];
  optional bool frozen = 9 [default = false];
}
""" + text[text.index("\n}\n", start) + 3:]
    (tmp_path / "caffe.proto").write_text(text, encoding="utf-8")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(input_layers({"data": (2, 3, 2, 2)}) + "\n"
                        + layer("bn", "BN", ["data"], ["bn"], "bn_param { momentum: 0.95 }"))
    blobs = pspnet_blobs(3, seed=157)
    write_caffemodel(parse_prototxt(prototxt.read_text()), {"bn": blobs}, tmp_path / "net.caffemodel")
    x = rand(2, 3, 2, 2, seed=158)
    flat = [b.reshape(-1) for b in blobs]
    theirs = caffe2torch.load(str(prototxt), str(tmp_path / "net.caffemodel"),
                              caffe_proto=str(tmp_path / "caffe.proto"))
    with torch.no_grad():
        check(theirs(torch.from_numpy(x)), pspnet_bn_ref(x, *flat, 1e-10, False), rtol=1e-5, atol=1e-5)
    ours = caffe2torch.load(str(prototxt), str(tmp_path / "net.caffemodel"))
    with torch.no_grad():
        check(ours(torch.from_numpy(x)), bn_ref(x, *flat, 1e-5), rtol=1e-5, atol=1e-5)


# --- CropCenter -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crop", [(0, 0, 1, 2), (0, 1, 0, 3), (1, 0, 2, 0), (0, 0, 0, 0)])
def test_crop_center(crop: tuple[int, ...]) -> None:
    x = rand(3, 4, 6, 7, seed=60)
    params = "crop_center_param { " + " ".join(f"crop_size: {c}" for c in crop) + " }"
    _, y = run(layer("crop", "CropCenter", ["data"], ["crop"], params), {"data": x})
    np.testing.assert_array_equal(y.numpy(), crop_center_ref(x, crop))


@pytest.mark.parametrize("params, message", [
    ("crop_center_param { crop_size: 1 crop_size: 1 }", "one value per input axis"),
    ("crop_center_param { crop_size: 0 crop_size: 0 crop_size: 3 crop_size: 0 }", "leaves nothing of axis 2"),
    ("crop_center_param { crop_size: 0 crop_size: 2 crop_size: 0 crop_size: 0 }", "leaves nothing of axis 1"),
])
def test_crop_center_refusals(params: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        run(layer("crop", "CropCenter", ["data"], ["crop"], params), {"data": rand(1, 4, 6, 7)})


# --- DepthwiseConvolution and ConvolutionDepthwise ------------------------------------------------------------


DEPTHWISE_PARAMS = "num_output: 6 group: 6 kernel_size: 3 pad: 1 stride: 2"


@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_convolution_is_grouped_convolution(bias: bool) -> None:
    x, w, b = rand(2, 6, 7, 8, seed=70), rand(6, 1, 3, 3, seed=71), rand(6, seed=72)
    params = f"convolution_param {{ {DEPTHWISE_PARAMS} bias_term: {str(bias).lower()} }}"
    blobs = [w, b] if bias else [w]
    _, y = run(layer("dw", "DepthwiseConvolution", ["data"], ["dw"], params), {"data": x}, {"dw": blobs})
    _, conv = run(layer("dw", "Convolution", ["data"], ["dw"], params), {"data": x}, {"dw": blobs})
    np.testing.assert_array_equal(y.numpy(), conv.numpy())
    check(y, depthwise_ref(x, w, b if bias else None, stride=2, pad=1, dilation=1).astype(np.float32))


def test_depthwise_convolution_reads_group_as_given() -> None:
    """eric612's DepthwiseConvolution is Caffe's convolution on the CPU: group 3 of 6 channels is honoured."""
    x, w = rand(1, 6, 5, 5, seed=73), rand(6, 2, 3, 3, seed=74)
    params = "convolution_param { num_output: 6 group: 3 kernel_size: 3 bias_term: false }"
    _, y = run(layer("dw", "DepthwiseConvolution", ["data"], ["dw"], params), {"data": x}, {"dw": [w]})
    expected = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), groups=3)
    check(y, expected.numpy().astype(np.float32))


@pytest.mark.parametrize("params", ["num_output: 6 kernel_size: 3 pad: 1",  # group 1 given: ignored
                                    "num_output: 32 group: 2 kernel_size: 3 stride: 2",  # num_output ignored too
                                    "kernel_size: 3 pad: 2 dilation: 2"])
def test_convolution_depthwise_ignores_num_output_and_group(params: str) -> None:
    x, w, b = rand(2, 6, 7, 6, seed=75), rand(6, 1, 3, 3, seed=76), rand(6, seed=77)
    _, y = run(layer("dw", "ConvolutionDepthwise", ["data"], ["dw"], f"convolution_param {{ {params} }}"),
               {"data": x}, {"dw": [w, b]})
    stride = 2 if "stride: 2" in params else 1
    pad = 2 if "pad: 2" in params else 1 if "pad: 1" in params else 0
    dilation = 2 if "dilation: 2" in params else 1
    check(y, depthwise_ref(x, w, b, stride=stride, pad=pad, dilation=dilation).astype(np.float32))


def test_depthwise_convolution_matches_opencv(tmp_path: Any) -> None:
    """OpenCV has no DepthwiseConvolution type; its grouped Convolution on the same weights is the reference."""
    x, w, b = rand(2, 6, 7, 8, seed=78), rand(6, 1, 3, 3, seed=79), rand(6, seed=80)
    params = f"convolution_param {{ {DEPTHWISE_PARAMS} }}"
    _, y = run(layer("dw", "DepthwiseConvolution", ["data"], ["dw"], params), {"data": x}, {"dw": [w, b]})
    reference = opencv_forward(tmp_path, layer("dw", "Convolution", ["data"], ["dw"], params), x, "dw", {"dw": [w, b]})
    check(y, reference)


# --- HoleConvolution (PSPNet) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("params, stride, pad, dilation, group, bias", [
    ("num_output: 1 kernel_size: 3 pad: 2 hole: 2 bias_term: false", (1, 1), (2, 2), (2, 2), 1, False),  # repro
    ("num_output: 4 kernel_size: 3 pad: 4 hole: 4", (1, 1), (4, 4), (4, 4), 1, True),
    ("num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 3 hole_h: 2 hole_w: 3 stride: 2", (2, 2), (1, 3),
     (2, 3), 1, True),
    ("num_output: 4 group: 2 kernel_size: 3 hole: 1", (1, 1), (0, 0), (1, 1), 2, True),
])
def test_hole_convolution_is_a_dilated_convolution(params: str, stride: tuple[int, int], pad: tuple[int, int],
                                                   dilation: tuple[int, int], group: int, bias: bool) -> None:
    """hole_conv_layer.cpp: im2col with the kernel's taps ``hole`` apart (hole_h / hole_w per axis), output size
    (size + 2 pad - (kernel + (kernel - 1)(hole - 1))) / stride + 1."""
    channels = 2 if group == 2 else 1 if "num_output: 1 " in params else 3
    out = 1 if "num_output: 1 " in params else 4
    kernel = (3, 2) if "kernel_w: 2" in params else (3, 3)
    x = rand(2, channels, 7, 8, seed=160)
    w = rand(out, channels // group, *kernel, seed=161)
    b = rand(out, seed=162)
    blobs = [w, b] if bias else [w]
    _, y = run(layer("conv", "HoleConvolution", ["data"], ["conv"], f"convolution_param {{ {params} }}"),
               {"data": x}, {"conv": blobs})
    check(y, conv_ref(x, w, b if bias else None, stride, pad, dilation, group).astype(np.float32))
    dilated = params.replace("hole_h", "dilation").replace("hole_w", "dilation").replace("hole", "dilation")
    _, conv = run(layer("conv", "Convolution", ["data"], ["conv"], f"convolution_param {{ {dilated} }}"),
                  {"data": x}, {"conv": blobs})
    torch.testing.assert_close(y, conv, rtol=0, atol=0)


def test_hole_convolution_matches_opencv_dilated_convolution(tmp_path: Any) -> None:
    """OpenCV has no HoleConvolution; its Convolution with the same dilation is the reference."""
    x, w, b = rand(2, 3, 9, 10, seed=163), rand(4, 3, 3, 3, seed=164), rand(4, seed=165)
    params = "num_output: 4 kernel_size: 3 pad: 2 stride: 1"
    _, y = run(layer("conv", "HoleConvolution", ["data"], ["conv"], f"convolution_param {{ {params} hole: 2 }}"),
               {"data": x}, {"conv": [w, b]})
    reference = opencv_forward(tmp_path, layer("conv", "Convolution", ["data"], ["conv"],
                                               f"convolution_param {{ {params} dilation: 2 }}"), x, "conv",
                               {"conv": [w, b]})
    check(y, reference)


@pytest.mark.parametrize("params, shape, message", [
    ("num_output: 2 kernel_size: 3", (1, 2, 6, 6), "gives no hole"),
    ("num_output: 2 kernel_size: 3 hole: 2 hole_h: 2 hole_w: 2", (1, 2, 6, 6), "give hole, or hole_h and hole_w"),
    ("num_output: 2 kernel_size: 3 hole_h: 2", (1, 2, 6, 6), "give hole, or hole_h and hole_w"),
    ("num_output: 2 kernel_size: 3 hole: 2 dilation: 2", (1, 2, 6, 6), "does not read"),
    ("num_output: 2 kernel_size: 3 hole: 0", (1, 2, 6, 6), "must be positive"),
    ("num_output: 2 kernel_size: 3 hole: 2", (1, 2, 6), "needs a 4-D input"),
    ("num_output: 2 kernel_size: 3 hole: 3", (1, 2, 6, 6), "leave no output"),
])
def test_hole_convolution_refusals(params: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ConversionError, match=f"'conv'.*{message}"):
        run(layer("conv", "HoleConvolution", ["data"], ["conv"], f"convolution_param {{ {params} }}"),
            {"data": rand(*shape)}, {"conv": [rand(2, 2, 3, 3), rand(2)]})


# --- AxpyFast (waifu2x-caffe) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("a_shape", [(2, 3), (2, 3, 1, 1)])
def test_axpy_fast_is_axpy(a_shape: tuple[int, ...]) -> None:
    """waifu2x-caffe's UpResNet10 gates its residual branch with AxpyFast(a, x, y) = a * x + y, a the SE gate (a
    Sigmoid of an InnerProduct: N x C), x the branch, y the cropped shortcut."""
    a, x, y_ = rand(*a_shape, seed=170), rand(2, 3, 4, 5, seed=171), rand(2, 3, 4, 5, seed=172)
    _, y = run(layer("axpy", "AxpyFast", ["a", "x", "y"], ["out"]), {"a": a, "x": x, "y": y_})
    check(y, a.reshape(2, 3, 1, 1) * x + y_)
    with pytest.raises(ConversionError, match=r"\(AxpyFast\): needs exactly 3 bottom"):
        run(layer("axpy", "AxpyFast", ["x", "y"], ["out"]), {"x": x, "y": y_})


# --- Python layers --------------------------------------------------------------------------------------------


class Doubler(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def convert_doubler(ctx: LayerContext) -> nn.Module:
    assert ctx.layer.python_param.param_str == "{'factor': 2}"
    return make(Doubler)


PYTHON_LAYER = layer("double", "Python", ["data"], ["double"],
                     "python_param { module: 'my_layers' layer: 'Doubler' param_str: \"{'factor': 2}\" }")


def test_python_layer_without_a_converter_names_its_module_and_class() -> None:
    with pytest.raises(ConversionError) as error:
        run(PYTHON_LAYER, {"data": rand(1, 2)})
    message = str(error.value)
    assert "layer 'double' is a Python layer (python_param module 'my_layers', layer 'Doubler')" in message
    assert "@caffe2torch.converter.register('Python:my_layers.Doubler')" in message


def test_python_layer_converter_is_registered_per_class() -> None:
    assert python_layer_type("my_layers", "Doubler") == "Python:my_layers.Doubler"
    x = rand(2, 3, seed=90)
    other = layer("other", "Python", ["double"], ["other"], "python_param { module: 'my_layers' layer: 'Other' }")
    with registered("Python:my_layers.Doubler", convert_doubler, bottoms=1, tops=1):
        _, y = run(PYTHON_LAYER, {"data": x})
        np.testing.assert_array_equal(y.numpy(), 2 * x)
        with pytest.raises(ConversionError, match="python_param module 'my_layers', layer 'Other'"):
            run(PYTHON_LAYER + "\n" + other, {"data": x})
        with pytest.raises(ConversionError, match=r"\(Python:my_layers.Doubler\): needs exactly 1 top"):
            run(layer("double", "Python", ["data"], ["a", "b"], "python_param { module: 'my_layers' "
                      "layer: 'Doubler' param_str: \"{'factor': 2}\" }"), {"data": x})
    with pytest.raises(ConversionError, match="is a Python layer"):  # forgotten outside the block
        run(PYTHON_LAYER, {"data": x})


def test_python_layer_without_bottoms_is_a_data_layer() -> None:
    net = parse_prototxt('layer { name: "feed" type: "Python" top: "data" top: "label" '
                         'python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" } }\n'
                         + layer("relu", "ReLU", ["data"], ["relu"]))
    model = convert(net, {}, input_shape=(1, 2, 3, 3))
    x = rand(1, 2, 3, 3, seed=91)
    np.testing.assert_array_equal(model(torch.from_numpy(x)).numpy(), np.maximum(x, 0))


# --- all of them in model.py ----------------------------------------------------------------------------------


def test_fork_layers_export_as_standalone_code() -> None:
    """The fork modules are copied into model.py and must run there with only torch imported."""
    from caffe2torch.converter.export import generate_code

    body = "\n".join([
        layer("up", "Upsample", ["data"], ["up"], "upsample_param { scale: 2 }"),
        layer("up2", "Upsample", ["up"], ["up2"], "upsample_param { upsample_h: 10 upsample_w: 13 }"),
        layer("interp", "Interp", ["up2"], ["interp"], "interp_param { zoom_factor: 2 shrink_factor: 3 pad_beg: -1 }"),
        layer("interp2", "Interp", ["interp", "data"], ["interp2"]),
        layer("reorg", "Reorg", ["up"], ["reorg"], "reorg_param { stride: 2 }"),
        layer("unreorg", "Reorg", ["reorg"], ["unreorg"], "reorg_param { stride: 2 reverse: true }"),
        layer("shuffle", "ShuffleChannel", ["unreorg"], ["shuffle"], "shuffle_channel_param { group: 2 }"),
        layer("relu6", "ReLU6", ["shuffle"], ["relu6"]),
        layer("bn", "BN", ["relu6"], ["bn"]),
        layer("crop", "CropCenter", ["bn"], ["crop"], "crop_center_param { crop_size: 0 crop_size: 1 crop_size: 2 "
                                                      "crop_size: 1 }"),
        layer("dw", "DepthwiseConvolution", ["crop"], ["dw"],
              "convolution_param { num_output: 2 group: 2 kernel_size: 3 }"),
        layer("cdw", "ConvolutionDepthwise", ["dw"], ["cdw"], "convolution_param { kernel_size: 1 }"),
        layer("psp", "BN", ["cdw"], ["psp"], "bn_param { moving_average: false }"),
        layer("psp2", "BN", ["psp"], ["psp2"], "bn_param { moving_average: true axis: 2 }"),
        layer("hole", "HoleConvolution", ["psp2"], ["hole"],
              "convolution_param { num_output: 2 kernel_size: 2 pad: 1 hole: 2 }"),
    ])
    net = parse_prototxt(input_layers({"data": (2, 4, 4, 6)}) + "\n" + body)
    model = convert(net, None, random_init=True, outputs=["interp2", "hole"])
    namespace: dict[str, Any] = {}
    exec(compile(generate_code(model), "model.py", "exec"), namespace)
    standalone = namespace["Net"]()
    standalone.load_state_dict(model.state_dict())
    x = torch.from_numpy(rand(2, 4, 4, 6, seed=95))
    with torch.no_grad():
        expected, actual = model(x), standalone.eval()(x)
    assert expected.keys() == actual.keys() == {"interp2", "hole"}
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)
