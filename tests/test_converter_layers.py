"""Every built-in layer converter against a plain numpy implementation of Caffe's forward pass.

The references below are written from Caffe's CPU code (src/caffe/layers/*.cpp), loop by loop where Caffe
loops over windows, and share nothing with the converter: a bug in a converter cannot hide in them.  Each
test builds a one- or few-layer net from prototxt text, converts it with seeded blobs and compares values
and shapes.  OpenCV's dnn module (an independent Caffe importer) checks a few layers where it is cheap.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.converter import convert, register, registered, registered_types
from caffe2torch.converter import registry
from caffe2torch.converter.layers.common import make
from caffe2torch.errors import ConversionError

Array = np.ndarray


# --- helpers ----------------------------------------------------------------------------------------------


def rand(*shape: int, seed: int = 0, low: float | None = None, high: float | None = None) -> Array:
    """Seeded float32 data: standard normal, or uniform in [low, high)."""
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, high, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def input_layers(inputs: dict[str, tuple[int, ...]]) -> str:
    return "\n".join(
        f'layer {{ name: "{name}" type: "Input" top: "{name}" '
        f'input_param {{ shape {{ {" ".join(f"dim: {d}" for d in shape)} }} }} }}'
        for name, shape in inputs.items())


def run(body: str, inputs: dict[str, Array], weights: dict[str, list[Array]] | None = None,
        outputs: list[str] | None = None) -> tuple[nn.Module, Any]:
    """Convert Input layers for ``inputs`` plus ``body`` with ``weights`` (strictly: no random blobs) and run."""
    net = parse_prototxt(input_layers({name: a.shape for name, a in inputs.items()}) + "\n" + body)
    model = convert(net, weights if weights is not None else {}, outputs=outputs)
    with torch.no_grad():
        result = model(*[torch.from_numpy(a) for a in inputs.values()])
    return model, result


def check(actual: torch.Tensor, expected: Array, rtol: float = 1e-5, atol: float = 1e-5) -> None:
    assert tuple(actual.shape) == expected.shape
    np.testing.assert_allclose(actual.numpy(), expected, rtol=rtol, atol=atol)


def layer(name: str, type_: str, bottoms: list[str], tops: list[str], params: str = "") -> str:
    wiring = " ".join([*(f'bottom: "{b}"' for b in bottoms), *(f'top: "{t}"' for t in tops)])
    return f'layer {{ name: "{name}" type: "{type_}" {wiring} {params} }}'


# --- numpy references of Caffe's forward ---------------------------------------------------------------------


def conv_ref(x: Array, w: Array, b: Array | None, stride: tuple[int, int], pad: tuple[int, int],
             dilation: tuple[int, int], group: int) -> Array:
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    out_h = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    out_w = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    y = np.zeros((n, o, out_h, out_w))
    per_group = o // group
    for s, oc, oy, ox in itertools.product(range(n), range(o), range(out_h), range(out_w)):
        first = (oc // per_group) * cg
        acc = 0.0
        for ic, ky, kx in itertools.product(range(cg), range(kh), range(kw)):
            iy = oy * stride[0] - pad[0] + ky * dilation[0]
            ix = ox * stride[1] - pad[1] + kx * dilation[1]
            if 0 <= iy < h and 0 <= ix < wd:
                acc += float(x[s, first + ic, iy, ix]) * float(w[oc, ic, ky, kx])
        y[s, oc, oy, ox] = acc + (float(b[oc]) if b is not None else 0.0)
    return y


def deconv_ref(x: Array, w: Array, b: Array | None, stride: tuple[int, int], pad: tuple[int, int],
               dilation: tuple[int, int], group: int) -> Array:
    """Caffe's deconvolution: every input pixel scatters its weighted kernel into the output (col2im)."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    out_h = stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - 2 * pad[0]
    out_w = stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1 - 2 * pad[1]
    y = np.zeros((n, og * group, out_h, out_w))
    per_group = c // group
    for s, ic, iy, ix in itertools.product(range(n), range(c), range(h), range(wd)):
        g = ic // per_group
        for oc, ky, kx in itertools.product(range(og), range(kh), range(kw)):
            oy = iy * stride[0] - pad[0] + ky * dilation[0]
            ox = ix * stride[1] - pad[1] + kx * dilation[1]
            if 0 <= oy < out_h and 0 <= ox < out_w:
                y[s, g * og + oc, oy, ox] += float(x[s, ic, iy, ix]) * float(w[ic, oc, ky, kx])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def pooled(size: int, kernel: int, stride: int, pad: int, ceil: bool = True) -> int:
    out = (math.ceil if ceil else math.floor)((size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_ref(x: Array, method: str, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
             ceil: bool = True) -> Array:
    """PoolingLayer::Forward_cpu: MAX over the window clipped to the input; AVE sums the clipped window and
    divides by the window clipped to the padded input."""
    n, c, h, w = x.shape
    out_h, out_w = pooled(h, kernel[0], stride[0], pad[0], ceil), pooled(w, kernel[1], stride[1], pad[1], ceil)
    y = np.zeros((n, c, out_h, out_w))
    for ph, pw in itertools.product(range(out_h), range(out_w)):
        hstart, wstart = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
        if method == "MAX":
            hend, wend = min(hstart + kernel[0], h), min(wstart + kernel[1], w)
            hstart, wstart = max(hstart, 0), max(wstart, 0)
            y[:, :, ph, pw] = x[:, :, hstart:hend, wstart:wend].max(axis=(2, 3))
        else:
            hend, wend = min(hstart + kernel[0], h + pad[0]), min(wstart + kernel[1], w + pad[1])
            pool_size = (hend - hstart) * (wend - wstart)
            hstart, wstart = max(hstart, 0), max(wstart, 0)
            hend, wend = min(hend, h), min(wend, w)
            y[:, :, ph, pw] = x[:, :, hstart:hend, wstart:wend].astype(np.float64).sum(axis=(2, 3)) / pool_size
    return y


def per_channel(v: Array, ndim: int, axis: int = 1) -> Array:
    return v.reshape((1,) * axis + v.shape + (1,) * (ndim - axis - v.ndim))


def lrn_across_ref(x: Array, size: int, alpha: float, beta: float, k: float) -> Array:
    channels, pre_pad = x.shape[1], (size - 1) // 2
    y = np.zeros(x.shape)
    for c in range(channels):
        lo, hi = max(c - pre_pad, 0), min(c - pre_pad + size, channels)
        scale = k + alpha / size * (x[:, lo:hi].astype(np.float64) ** 2).sum(axis=1)
        y[:, c] = x[:, c] * scale ** -beta
    return y


def lrn_within_ref(x: Array, size: int, alpha: float, beta: float) -> Array:
    """Caffe's WITHIN_CHANNEL: AVE pooling of x^2 (kernel size, stride 1, pad (size-1)/2), then power, product."""
    squares = pool_ref(x.astype(np.float64) ** 2, "AVE", (size, size), (1, 1), ((size - 1) // 2,) * 2)
    return x * (1 + alpha * squares) ** -beta


def argmax_ref(x: Array, top_k: int, out_max_val: bool, axis: int | None) -> Array:
    """ArgMaxLayer: std::partial_sort of (value, index) pairs with std::greater, i.e. Python's ordering of
    tuples, descending."""
    def best(values: Array) -> list[tuple[float, int]]:
        return sorted(((float(v), i) for i, v in enumerate(values)), reverse=True)[:top_k]

    if axis is None:
        rows = x.reshape(x.shape[0], -1)
        parts = 2 if out_max_val else 1
        y = np.zeros((x.shape[0], parts, top_k) + (1,) * max(x.ndim - 3, 0))
        for s in range(x.shape[0]):
            for j, (value, index) in enumerate(best(rows[s])):
                y[s, 0, j] = index
                if out_max_val:
                    y[s, 1, j] = value
        return y
    moved = np.moveaxis(x, axis, -1)
    y = np.zeros(moved.shape[:-1] + (top_k,))
    for position in np.ndindex(*moved.shape[:-1]):
        y[position] = [v if out_max_val else i for v, i in best(moved[position])]
    return np.moveaxis(y, -1, axis)


# --- convolution ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, x_shape, w_shape, stride, pad, dilation, group, bias", [
    ("num_output: 4 kernel_size: 3", (2, 3, 6, 5), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1, True),
    ("num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2", (2, 4, 7, 6), (6, 2, 3, 3), (2, 2), (1, 1),
     (1, 1), 2, True),
    ("num_output: 4 kernel_size: 3 dilation: 2 pad: 2 bias_term: false", (1, 2, 7, 7), (4, 2, 3, 3), (1, 1),
     (2, 2), (2, 2), 1, False),
    ("num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (2, 2, 7, 5),
     (3, 2, 3, 2), (2, 1), (1, 0), (1, 1), 1, True),
    ("num_output: 2 kernel_size: 3 kernel_size: 1 stride: 1 stride: 2 pad: 0 pad: 1 dilation: 2 dilation: 1",
     (1, 2, 8, 5), (2, 2, 3, 1), (1, 2), (0, 1), (2, 1), 1, True),
])
def test_convolution(params: str, x_shape: tuple, w_shape: tuple, stride: tuple, pad: tuple, dilation: tuple,
                     group: int, bias: bool) -> None:
    x, w, b = rand(*x_shape, seed=1), rand(*w_shape, seed=2), rand(w_shape[0], seed=3)
    weights = {"conv": [w, b] if bias else [w]}
    model, y = run(layer("conv", "Convolution", ["data"], ["conv"], f"convolution_param {{ {params} }}"),
                   {"data": x}, weights)
    expected = conv_ref(x, w, b if bias else None, stride, pad, dilation, group)
    check(y, expected)
    assert model.output_shapes == {"conv": expected.shape}


@pytest.mark.parametrize("params, x_shape, w_shape, stride, pad, dilation, group", [
    ("num_output: 3 kernel_size: 4 stride: 2 pad: 1", (2, 2, 4, 3), (2, 3, 4, 4), (2, 2), (1, 1), (1, 1), 1),
    ("num_output: 4 kernel_size: 3 stride: 2 group: 2 dilation: 2", (1, 4, 3, 3), (4, 2, 3, 3), (2, 2), (0, 0),
     (2, 2), 2),
])
def test_deconvolution(params: str, x_shape: tuple, w_shape: tuple, stride: tuple, pad: tuple, dilation: tuple,
                       group: int) -> None:
    x, w, b = rand(*x_shape, seed=4), rand(*w_shape, seed=5), rand(w_shape[1] * group, seed=6)
    _, y = run(layer("up", "Deconvolution", ["data"], ["up"], f"convolution_param {{ {params} }}"),
               {"data": x}, {"up": [w, b]})
    check(y, deconv_ref(x, w, b, stride, pad, dilation, group))


# --- pooling ----------------------------------------------------------------------------------------------

POOLING_CASES = [
    # (params, input H x W, method, kernel, stride, pad, round up)
    ("pool: MAX kernel_size: 3 stride: 2", (6, 7), "MAX", (3, 3), (2, 2), (0, 0), True),  # last window clipped
    ("pool: AVE kernel_size: 3 stride: 2", (6, 7), "AVE", (3, 3), (2, 2), (0, 0), True),
    ("pool: MAX kernel_size: 2 stride: 2 pad: 1", (5, 5), "MAX", (2, 2), (2, 2), (1, 1), True),  # last dropped
    ("pool: AVE kernel_size: 2 stride: 2 pad: 1", (5, 5), "AVE", (2, 2), (2, 2), (1, 1), True),
    ("pool: AVE kernel_size: 3 stride: 3 pad: 1", (5, 6), "AVE", (3, 3), (3, 3), (1, 1), True),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (7, 6), "AVE", (3, 3), (2, 2), (1, 1), True),
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1", (7, 6), "MAX", (3, 3), (2, 2), (1, 1), True),
    ("pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0", (7, 6), "MAX", (3, 2),
     (2, 1), (1, 0), True),
    ("pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1", (5, 8), "AVE", (2, 3),
     (1, 2), (0, 1), True),
    ("pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR", (6, 7), "AVE", (3, 3), (2, 2), (0, 0), False),
    ("pool: MAX kernel_size: 2 stride: 2 pad: 1 round_mode: FLOOR", (6, 5), "MAX", (2, 2), (2, 2), (1, 1), False),
]


@pytest.mark.parametrize("params, size, method, kernel, stride, pad, round_up", POOLING_CASES)
def test_pooling(params: str, size: tuple, method: str, kernel: tuple, stride: tuple, pad: tuple,
                 round_up: bool) -> None:
    # negative values: a MAX window that saw padding as 0 would be wrong
    x = rand(2, 3, *size, seed=7) - 2
    model, y = run(layer("pool", "Pooling", ["data"], ["pool"], f"pooling_param {{ {params} }}"), {"data": x})
    expected = pool_ref(x, method, kernel, stride, pad, round_up)
    check(y, expected)
    assert model.output_shapes == {"pool": expected.shape}


@pytest.mark.parametrize("params, size, out", [
    ("kernel_size: 3 stride: 2", 6, 3),  # rounded up: the last window is clipped (torch's floor gives 2)
    ("kernel_size: 2 stride: 2 pad: 1", 5, 3),  # rounded up to 4, then dropped: it would start in the padding
    ("kernel_size: 3 stride: 2 pad: 1", 7, 4),
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", 6, 2),
])
def test_pooling_output_size(params: str, size: int, out: int) -> None:
    model, _ = run(layer("pool", "Pooling", ["data"], ["pool"], f"pooling_param {{ {params} }}"),
                   {"data": rand(1, 1, size, size)})
    assert model.output_shapes == {"pool": (1, 1, out, out)}


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method: str) -> None:
    x = rand(2, 3, 5, 4, seed=8)
    _, y = run(layer("gp", "Pooling", ["data"], ["gp"], f"pooling_param {{ pool: {method} global_pooling: true }}"),
               {"data": x})
    check(y, pool_ref(x, method, (5, 4), (1, 1), (0, 0)))


def test_pooling_rejects_pad_not_below_kernel() -> None:
    with pytest.raises(ConversionError, match=r"'pool' \(Pooling\).*pad"):
        run(layer("pool", "Pooling", ["data"], ["pool"], "pooling_param { kernel_size: 2 pad: 2 }"),
            {"data": rand(1, 1, 4, 4)})


# --- normalisation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.0015, 1.0, 0.0])
def test_batch_norm_divides_statistics_by_factor(factor: float) -> None:
    x = rand(2, 3, 4, 4, seed=9)
    mean, var = rand(3, seed=10), rand(3, seed=11, low=0.5, high=2.0)
    stored = [mean * factor, var * factor, np.array([factor], np.float32)]
    _, y = run(layer("bn", "BatchNorm", ["data"], ["bn"], "batch_norm_param { eps: 0.001 }"), {"data": x},
               {"bn": stored})
    scale = 0.0 if factor == 0 else 1.0 / np.float32(factor)
    m, v = stored[0] * scale, stored[1] * scale
    expected = (x - per_channel(m, 4)) / np.sqrt(per_channel(v, 4) + np.float32(0.001))
    check(y, expected)


def test_batch_norm_default_eps_and_batch_statistics() -> None:
    x = rand(3, 2, 3, 3, seed=12)
    blobs = [np.zeros(2, np.float32), np.ones(2, np.float32), np.ones(1, np.float32)]
    _, y = run(layer("bn", "BatchNorm", ["data"], ["bn"], "batch_norm_param { use_global_stats: false }"),
               {"data": x}, {"bn": blobs})
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    check(y, (x - mean) / np.sqrt(var + 1e-5))


@pytest.mark.parametrize("size, region", [(1, "ACROSS_CHANNELS"), (3, "ACROSS_CHANNELS"), (5, "ACROSS_CHANNELS"),
                                          (3, "WITHIN_CHANNEL"), (5, "WITHIN_CHANNEL")])
def test_lrn(size: int, region: str) -> None:
    x = rand(2, 7, 5, 6, seed=13) * 3
    params = f"lrn_param {{ local_size: {size} alpha: 0.5 beta: 0.75 k: 2 norm_region: {region} }}"
    _, y = run(layer("norm", "LRN", ["data"], ["norm"], params), {"data": x})
    if region == "ACROSS_CHANNELS":
        expected = lrn_across_ref(x, size, 0.5, 0.75, 2.0)
    else:
        expected = lrn_within_ref(x, size, 0.5, 0.75)
    check(y, expected)


@pytest.mark.parametrize("size", [13, 15, 2_147_483_647])
def test_lrn_window_wider_than_the_input(size: int) -> None:
    """A window past every channel (or pixel) adds only zeros, and memory does not grow with local_size: the
    largest odd int Caffe accepts runs on a 7-channel map (it asked for 128 GiB of padding once)."""
    x = rand(2, 7, 5, 6, seed=14) * 3
    params = f"lrn_param {{ local_size: {size} alpha: 0.5 beta: 0.75 k: 2 }}"
    _, y = run(layer("norm", "LRN", ["data"], ["norm"], params), {"data": x})
    check(y, lrn_across_ref(x, size, 0.5, 0.75, 2.0))
    params = f"lrn_param {{ local_size: {size} alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }}"
    _, y = run(layer("norm", "LRN", ["data"], ["norm"], params), {"data": x})
    # every window covers the whole 5 x 6 map: Caffe divides its sum by size^2 all the same
    squares = (x.astype(np.float64) ** 2).sum(axis=(2, 3), keepdims=True) / float(size) ** 2
    check(y, x * (1 + 0.5 * squares) ** -0.75)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("size", [2, 4])
def test_lrn_even_size_is_refused_as_caffe_does(size: int, region: str) -> None:
    """Caffe's LRNLayer::LayerSetUp: CHECK_EQ(size_ % 2, 1) "LRN only supports odd values for local_size"."""
    with pytest.raises(ConversionError, match=rf"'norm' \(LRN\): local_size {size} is even"):
        run(layer("norm", "LRN", ["data"], ["norm"], f"lrn_param {{ local_size: {size} norm_region: {region} }}"),
            {"data": rand(1, 4, 3, 3)})


@pytest.mark.parametrize("params, shape, across, normalize, eps", [
    ("", (2, 3, 4, 5), False, True, 1e-9),
    ("mvn_param { across_channels: true }", (2, 3, 4, 5), True, True, 1e-9),
    ("mvn_param { normalize_variance: false }", (2, 3, 4, 5), False, False, 1e-9),
    ("mvn_param { eps: 0.5 across_channels: true }", (3, 4), True, True, 0.5),
    ("", (3, 4), False, True, 1e-9),  # N x C: every group is one value, which becomes 0
])
def test_mvn(params: str, shape: tuple, across: bool, normalize: bool, eps: float) -> None:
    x = rand(*shape, seed=14) * 2 + 1
    _, y = run(layer("mvn", "MVN", ["data"], ["mvn"], params), {"data": x})
    # MVNLayer views the blob as num x dim: num = N across channels, else N * C.
    num = shape[0] if across else shape[0] * shape[1]
    rows = x.reshape(num, -1).astype(np.float64)
    expected = rows - rows.mean(axis=1, keepdims=True)
    if normalize:
        expected /= np.sqrt((expected ** 2).mean(axis=1, keepdims=True)) + eps
    check(y, expected.reshape(shape))


# --- scale, bias, eltwise ---------------------------------------------------------------------------------


@pytest.mark.parametrize("params, blob_shape, axis, with_bias", [
    ("", (3,), 1, False),
    ("scale_param { bias_term: true }", (3,), 1, True),
    ("scale_param { axis: 1 num_axes: 2 }", (3, 4), 1, False),
    ("scale_param { axis: -2 num_axes: -1 bias_term: true }", (4, 5), 2, True),
    ("scale_param { num_axes: 0 bias_term: true }", (), 1, True),
])
def test_scale_learned(params: str, blob_shape: tuple, axis: int, with_bias: bool) -> None:
    x = rand(2, 3, 4, 5, seed=15)
    factor, shift = rand(*blob_shape, seed=16), rand(*blob_shape, seed=17)
    _, y = run(layer("sc", "Scale", ["data"], ["sc"], params), {"data": x},
               {"sc": [factor, shift] if with_bias else [factor]})
    expected = x * per_channel(factor, 4, axis)
    if with_bias:
        expected = expected + per_channel(shift, 4, axis)
    check(y, expected)


def test_scale_two_bottoms_at_axis_0_after_reshape() -> None:
    """SE-BN-Inception: the gate N x C x 1 x 1 reshaped to N x C multiplies the map from axis 0."""
    x, gate, shift = rand(2, 3, 4, 4, seed=18), rand(2, 3, 1, 1, seed=19), rand(2, 3, seed=20)
    body = "\n".join([
        layer("flat", "Reshape", ["gate"], ["gate_nc"], "reshape_param { shape { dim: 0 dim: -1 } }"),
        layer("sc", "Scale", ["data", "gate_nc"], ["sc"], "scale_param { axis: 0 bias_term: true }"),
    ])
    model, y = run(body, {"data": x, "gate": gate}, {"sc": [shift]})
    check(y, x * gate + shift.reshape(2, 3, 1, 1))
    assert model.blob_shapes["sc"] == [(2, 3)]


def test_scale_two_bottoms_axis_1() -> None:
    x, factor = rand(2, 3, 4, 5, seed=21), rand(3, 4, seed=22)
    _, y = run(layer("sc", "Scale", ["data", "f"], ["sc"]), {"data": x, "f": factor})
    check(y, x * factor.reshape(1, 3, 4, 1))


def test_bias_learned_and_second_bottom() -> None:
    x, b, b2 = rand(2, 3, 4, 5, seed=23), rand(4, 5, seed=24), rand(2, 3, seed=25)
    body = "\n".join([layer("b1", "Bias", ["data"], ["b1"], "bias_param { axis: 2 num_axes: 2 }"),
                      layer("b2", "Bias", ["b1", "v"], ["b2"], "bias_param { axis: 0 }")])
    _, y = run(body, {"data": x, "v": b2}, {"b1": [b]})
    check(y, x + b.reshape(1, 1, 4, 5) + b2.reshape(2, 3, 1, 1))


@pytest.mark.parametrize("params", ["eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }",
                                    "", "eltwise_param { operation: PROD }", "eltwise_param { operation: MAX }"])
def test_eltwise(params: str) -> None:
    a, b, c = rand(2, 3, 4, seed=26), rand(2, 3, 4, seed=27), rand(2, 3, 4, seed=28)
    _, y = run(layer("e", "Eltwise", ["a", "b", "c"], ["e"], params), {"a": a, "b": b, "c": c})
    if "PROD" in params:
        expected = a * b * c
    elif "MAX" in params:
        expected = np.maximum(np.maximum(a, b), c)
    elif "coeff" in params:
        expected = a - 0.5 * b + 2 * c
    else:
        expected = a + b + c
    check(y, expected)


def test_eltwise_coeff_count_must_match() -> None:
    with pytest.raises(ConversionError, match=r"'e' \(Eltwise\): 1 coeff values for 2 bottoms"):
        run(layer("e", "Eltwise", ["a", "b"], ["e"], "eltwise_param { coeff: 2 }"),
            {"a": rand(2, 3), "b": rand(2, 3)})


def test_axpy() -> None:
    a, x, y_ = rand(2, 3, 1, 1, seed=29), rand(2, 3, 4, 4, seed=30), rand(2, 3, 4, 4, seed=31)
    _, y = run(layer("axpy", "Axpy", ["a", "x", "y"], ["out"]), {"a": a, "x": x, "y": y_})
    expected = np.zeros(x.shape)
    for n, c in itertools.product(range(2), range(3)):
        expected[n, c] = a[n, c, 0, 0] * x[n, c] + y_[n, c]
    check(y, expected)


# --- inner product and embed ------------------------------------------------------------------------------


@pytest.mark.parametrize("params, axis, transpose, bias", [
    ("num_output: 4", 1, False, True),
    ("num_output: 4 axis: 2 bias_term: false", 2, False, False),
    ("num_output: 4 axis: -1 transpose: true", 3, True, True),
])
def test_inner_product(params: str, axis: int, transpose: bool, bias: bool) -> None:
    x = rand(2, 3, 2, 5, seed=32)
    k = int(np.prod(x.shape[axis:]))
    w, b = rand(*((k, 4) if transpose else (4, k)), seed=33), rand(4, seed=34)
    _, y = run(layer("ip", "InnerProduct", ["data"], ["ip"], f"inner_product_param {{ {params} }}"), {"data": x},
               {"ip": [w, b] if bias else [w]})
    rows = x.reshape(*x.shape[:axis], k).astype(np.float64)
    matrix = w if transpose else w.T
    expected = np.zeros(x.shape[:axis] + (4,))
    for position in np.ndindex(*x.shape[:axis]):
        for o in range(4):
            expected[position + (o,)] = sum(rows[position][i] * matrix[i, o] for i in range(k)) + (b[o] if bias else 0)
    check(y, expected)


@pytest.mark.parametrize("bias", [True, False])
def test_embed(bias: bool) -> None:
    indices = np.array([[0, 4, 2], [3.7, 1, 4]], np.float32)  # 3.7 -> row 3, as static_cast<int>
    w, b = rand(5, 6, seed=35), rand(6, seed=36)
    params = f"embed_param {{ num_output: 6 input_dim: 5 bias_term: {str(bias).lower()} }}"
    _, y = run(layer("emb", "Embed", ["data"], ["emb"], params), {"data": indices}, {"emb": [w, b] if bias else [w]})
    expected = np.zeros((2, 3, 6))
    for i, j in np.ndindex(2, 3):
        expected[i, j] = w[int(indices[i, j])] + (b if bias else 0)
    check(y, expected)


# --- element-wise activations -----------------------------------------------------------------------------

X = rand(2, 3, 4, seed=37) * 3


def elementwise(fn: Any, x: Array = X) -> Array:
    return np.vectorize(fn, otypes=[np.float64])(x.astype(np.float64))


ACTIVATIONS = [
    ("ReLU", "", lambda v: max(v, 0)),
    ("ReLU", "relu_param { negative_slope: 0.1 }", lambda v: max(v, 0) + 0.1 * min(v, 0)),
    ("Sigmoid", "", lambda v: 1 / (1 + math.exp(-v))),
    ("TanH", "", math.tanh),
    ("Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda v: v),
    ("ELU", "elu_param { alpha: 0.7 }", lambda v: max(v, 0) + 0.7 * (math.exp(min(v, 0)) - 1)),
    ("AbsVal", "", abs),
    ("BNLL", "", lambda v: v + math.log(1 + math.exp(-v)) if v > 0 else math.log(1 + math.exp(v))),
    ("Threshold", "threshold_param { threshold: 0.5 }", lambda v: 1.0 if v > 0.5 else 0.0),
    ("Clip", "clip_param { min: -1 max: 2 }", lambda v: max(-1, min(v, 2))),
    ("Swish", "swish_param { beta: 1.5 }", lambda v: v / (1 + math.exp(-1.5 * v))),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", lambda v: (1 + 0.5 * v) ** 2),
    ("Power", "power_param { power: 3 }", lambda v: v ** 3),
    ("Power", "power_param { scale: -2 shift: 0.5 }", lambda v: 0.5 - 2 * v),
    # Caffe ignores the input when power * scale == 0: power 0 gives 1, scale 0 gives shift ^ power.
    ("Power", "power_param { power: 0 scale: 3 }", lambda v: 1.0),
    ("Power", "power_param { power: 3 scale: 0 shift: 2 }", lambda v: 8.0),
    ("Exp", "", math.exp),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: -1 }", lambda v: 2 ** (-1 + 0.5 * v)),
    ("Exp", "exp_param { scale: -1 shift: 0.25 }", lambda v: math.exp(0.25 - v)),
]


@pytest.mark.parametrize("type_, params, fn", ACTIVATIONS, ids=[f"{a[0]}-{i}" for i, a in enumerate(ACTIVATIONS)])
def test_elementwise(type_: str, params: str, fn: Any) -> None:
    _, y = run(layer("act", type_, ["data"], ["act"], params), {"data": X})
    check(y, elementwise(fn))


def test_bnll_does_not_overflow() -> None:
    x = np.array([[-100.0, -20.0, 0.0, 20.0, 100.0]], np.float32)
    _, y = run(layer("act", "BNLL", ["data"], ["act"]), {"data": x})
    check(y, np.array([[math.log1p(math.exp(-100)), math.log1p(math.exp(-20)), math.log(2), 20.0, 100.0]]))


def test_power_fractional_power_of_negative_is_nan_as_in_c() -> None:
    x = np.array([[-4.0, 4.0]], np.float32)
    _, y = run(layer("p", "Power", ["data"], ["p"], "power_param { power: 0.5 }"), {"data": x})
    assert math.isnan(float(y[0, 0])) and float(y[0, 1]) == 2.0


@pytest.mark.parametrize("params, fn", [
    ("", math.log),
    ("log_param { base: 10 scale: 2 shift: 1 }", lambda v: math.log10(1 + 2 * v)),
    ("log_param { base: 2 }", math.log2),
])
def test_log(params: str, fn: Any) -> None:
    x = rand(2, 5, seed=38, low=0.1, high=4.0)
    _, y = run(layer("log", "Log", ["data"], ["log"], params), {"data": x})
    check(y, elementwise(fn, x))


@pytest.mark.parametrize("type_, params", [("Log", "log_param { base: 1 }"), ("Log", "log_param { base: -2 }"),
                                           ("Exp", "exp_param { base: 0 }")])
def test_log_exp_bad_base(type_: str, params: str) -> None:
    with pytest.raises(ConversionError, match=rf"'f' \({type_}\): base"):
        run(layer("f", type_, ["data"], ["f"], params), {"data": X})


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 4, 2), (4, 3)])
def test_prelu(shared: bool, shape: tuple) -> None:
    x = rand(*shape, seed=39)
    # Caffe's shared slope is a blob with no axes; one per channel otherwise.
    slope = np.array(0.3, np.float32) if shared else rand(3, seed=40)
    _, y = run(layer("pr", "PReLU", ["data"], ["pr"], f"prelu_param {{ channel_shared: {str(shared).lower()} }}"),
               {"data": x}, {"pr": [slope]})
    expected = np.zeros(shape)
    for index in np.ndindex(*shape):
        a = slope if shared else slope[index[1]]
        expected[index] = max(x[index], 0) + a * min(x[index], 0)
    check(y, expected)


def test_prelu_shared_accepts_legacy_4d_blob_but_not_per_channel() -> None:
    x = rand(2, 3, 2, 2, seed=41)
    body = layer("pr", "PReLU", ["data"], ["pr"], "prelu_param { channel_shared: true }")
    _, y = run(body, {"data": x}, {"pr": [np.full((1, 1, 1, 1), 0.5, np.float32)]})
    check(y, np.maximum(x, 0) + 0.5 * np.minimum(x, 0))
    with pytest.raises(ConversionError, match=r"'pr' \(PReLU\): blob 0 has shape \[3\], expected \[\]"):
        run(body, {"data": x}, {"pr": [rand(3)]})


def test_softmax_axis() -> None:
    x = rand(2, 3, 4, seed=42) * 4
    for axis_param, axis in [("", 1), ("softmax_param { axis: 2 }", 2), ("softmax_param { axis: -3 }", 0)]:
        _, y = run(layer("prob", "Softmax", ["data"], ["prob"], axis_param), {"data": x})
        shifted = np.exp(x - x.max(axis=axis, keepdims=True))
        check(y, shifted / shifted.sum(axis=axis, keepdims=True))


# --- layers that move data --------------------------------------------------------------------------------


def test_concat() -> None:
    a, b = rand(2, 3, 4, seed=43), rand(2, 1, 4, seed=44)
    _, y = run(layer("cat", "Concat", ["a", "b"], ["cat"]), {"a": a, "b": b})
    check(y, np.concatenate([a, b], axis=1))
    c = rand(2, 3, 2, seed=45)
    _, y = run(layer("cat", "Concat", ["a", "c"], ["cat"], "concat_param { axis: -1 }"), {"a": a, "c": c})
    check(y, np.concatenate([a, c], axis=2))


def test_concat_shape_mismatch() -> None:
    with pytest.raises(ConversionError, match=r"'cat' \(Concat\): bottoms differ outside axis 1"):
        run(layer("cat", "Concat", ["a", "b"], ["cat"]), {"a": rand(2, 3, 4), "b": rand(2, 3, 5)})


@pytest.mark.parametrize("params, tops, bounds, axis", [
    ("slice_param { slice_point: 1 slice_point: 4 }", 3, [(0, 1), (1, 4), (4, 6)], 1),
    ("slice_param { axis: -1 }", 2, [(0, 2), (2, 4)], 2),
    ("slice_param { slice_dim: 0 slice_point: 1 }", 2, [(0, 1), (1, 2)], 0),
    ("slice_param { axis: 1 }", 3, [(0, 2), (2, 4), (4, 6)], 1),
])
def test_slice(params: str, tops: int, bounds: list[tuple[int, int]], axis: int) -> None:
    x = rand(2, 6, 4, seed=46)
    names = [f"part{i}" for i in range(tops)]
    _, y = run(layer("slice", "Slice", ["data"], names, params), {"data": x})
    for name, (start, end) in zip(names, bounds):
        check(y[name], np.take(x, range(start, end), axis=axis))


@pytest.mark.parametrize("params, tops, message", [
    ("slice_param { slice_point: 1 }", 3, "1 slice_point"),
    ("slice_param { slice_point: 3 slice_point: 2 }", 3, "must increase"),
    ("slice_param { slice_point: 7 }", 2, "must increase"),
    ("", 4, "4 tops do not divide axis 1 of size 6"),
])
def test_slice_errors(params: str, tops: int, message: str) -> None:
    with pytest.raises(ConversionError, match=rf"'slice' \(Slice\): .*{message}"):
        run(layer("slice", "Slice", ["data"], [f"p{i}" for i in range(tops)], params), {"data": rand(2, 6, 4)})


def test_split() -> None:
    x = rand(2, 3, seed=47)
    body = "\n".join([layer("split", "Split", ["data"], ["a", "b"]),
                      layer("relu", "ReLU", ["a"], ["r"]),
                      layer("sum", "Eltwise", ["r", "b"], ["out"])])
    _, y = run(body, {"data": x})
    check(y, np.maximum(x, 0) + x)


@pytest.mark.parametrize("params, shape", [("", (2, 60)), ("flatten_param { axis: 2 }", (2, 3, 20)),
                                           ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
                                           ("flatten_param { axis: -3 end_axis: -2 }", (2, 12, 5))])
def test_flatten(params: str, shape: tuple) -> None:
    x = rand(2, 3, 4, 5, seed=48)
    _, y = run(layer("flat", "Flatten", ["data"], ["flat"], params), {"data": x})
    check(y, x.reshape(shape))


@pytest.mark.parametrize("params, shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 3 dim: -1 dim: 5 }", (2, 3, 4, 5)),
    ("shape { dim: 6 dim: 2 } axis: 1 num_axes: 2", (2, 6, 2, 5)),
    ("shape { dim: -1 } axis: -3", (2, 3, 20)),
    ("shape { dim: 1 } axis: 4 num_axes: 0", (2, 3, 4, 5, 1)),
    ("shape { dim: 1 dim: -1 } axis: 0 num_axes: 1", (1, 2, 3, 4, 5)),
])
def test_reshape(params: str, shape: tuple) -> None:
    x = rand(2, 3, 4, 5, seed=49)
    _, y = run(layer("rs", "Reshape", ["data"], ["rs"], f"reshape_param {{ {params} }}"), {"data": x})
    check(y, x.reshape(shape))


def test_reshape_copy_past_replaced_range() -> None:
    """Caffe copies the input axis start + i for a 0 even outside [axis, axis + num_axes)."""
    x = rand(2, 3, 1, 5, seed=50)
    _, y = run(layer("rs", "Reshape", ["data"], ["rs"], "reshape_param { shape { dim: 0 dim: 0 } axis: 1 "
                                                         "num_axes: 1 }"), {"data": x})
    check(y, x.reshape(2, 3, 1, 1, 5))


@pytest.mark.parametrize("params, axis, offsets", [
    ("", 2, (0, 0, 0, 0)),
    ("crop_param { offset: 1 }", 2, (0, 0, 1, 1)),
    ("crop_param { axis: 1 offset: 2 offset: 0 offset: 3 }", 1, (0, 2, 0, 3)),
    ("crop_param { axis: -1 offset: 2 }", 3, (0, 0, 0, 2)),
])
def test_crop(params: str, axis: int, offsets: tuple) -> None:
    x, reference = rand(2, 5, 6, 7, seed=51), rand(2, 3, 4, 4, seed=52)
    _, y = run(layer("crop", "Crop", ["data", "ref"], ["crop"], params), {"data": x, "ref": reference})
    # CropLayer::Reshape: axes before `axis` keep their size, the others take the reference's.
    size = [x.shape[i] if i < axis else reference.shape[i] for i in range(4)]
    expected = x[tuple(slice(o, o + s) for o, s in zip(offsets, size))]
    check(y, expected)


@pytest.mark.parametrize("params, message", [
    ("crop_param { offset: 3 }", "crop of axis 2 is out of bounds"),
    ("crop_param { offset: 1 offset: 2 offset: 3 }", "3 offsets given for the 2 axes"),
])
def test_crop_errors(params: str, message: str) -> None:
    with pytest.raises(ConversionError, match=rf"'crop' \(Crop\): {message}"):
        run(layer("crop", "Crop", ["data", "ref"], ["crop"], params),
            {"data": rand(1, 2, 6, 6), "ref": rand(1, 2, 4, 4)})


@pytest.mark.parametrize("params, axis, tiles", [("tile_param { tiles: 3 }", 1, 3),
                                                 ("tile_param { axis: -1 tiles: 2 }", 2, 2),
                                                 ("tile_param { axis: 0 tiles: 2 }", 0, 2)])
def test_tile(params: str, axis: int, tiles: int) -> None:
    x = rand(2, 3, 4, seed=53)
    _, y = run(layer("tile", "Tile", ["data"], ["tile"], params), {"data": x})
    # TileLayer::Forward_cpu: for each outer index, copy the inner block (axis and after) `tiles` times.
    outer, inner = int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))
    flat = x.reshape(outer, inner)
    expected = np.concatenate([np.concatenate([flat[i]] * tiles) for i in range(outer)])
    shape = list(x.shape)
    shape[axis] *= tiles
    check(y, expected.reshape(shape))


# --- reductions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, top_k, out_max_val, axis", [
    ("", 1, False, None),
    ("argmax_param { top_k: 3 out_max_val: true }", 3, True, None),
    ("argmax_param { axis: 1 }", 1, False, 1),
    ("argmax_param { axis: -1 top_k: 2 }", 2, False, 3),
    ("argmax_param { axis: 2 top_k: 2 out_max_val: true }", 2, True, 2),
])
def test_argmax(params: str, top_k: int, out_max_val: bool, axis: int | None) -> None:
    # integers in a small range: plenty of ties, which Caffe breaks towards the larger index
    x = np.floor(rand(2, 4, 3, 5, seed=54, low=0, high=3)).astype(np.float32)
    _, y = run(layer("am", "ArgMax", ["data"], ["am"], params), {"data": x})
    check(y, argmax_ref(x, top_k, out_max_val, axis))


def test_argmax_ties_pick_the_largest_index() -> None:
    x = np.array([[1, 5, 2, 5, 5, 0]], np.float32)
    _, y = run(layer("am", "ArgMax", ["data"], ["am"], "argmax_param { top_k: 4 out_max_val: true }"), {"data": x})
    assert y.tolist() == [[[4.0, 3.0, 1.0, 2.0], [5.0, 5.0, 5.0, 2.0]]]


def test_argmax_top_k_too_large() -> None:
    with pytest.raises(ConversionError, match=r"'am' \(ArgMax\): top_k 5 exceeds the 4 values of axis 1"):
        run(layer("am", "ArgMax", ["data"], ["am"], "argmax_param { axis: 1 top_k: 5 }"), {"data": rand(2, 4)})


@pytest.mark.parametrize("operation", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis, coeff", [(0, 1.0), (1, -0.5), (-1, 2.0)])
def test_reduction(operation: str, axis: int, coeff: float) -> None:
    x = rand(2, 3, 4, seed=55)
    params = f"reduction_param {{ operation: {operation} axis: {axis} coeff: {coeff} }}"
    _, y = run(layer("red", "Reduction", ["data"], ["red"], params), {"data": x})
    start = axis % 3
    rows = x.reshape(int(np.prod(x.shape[:start])), -1).astype(np.float64)
    values = {"SUM": rows, "ASUM": np.abs(rows), "SUMSQ": rows ** 2, "MEAN": rows}[operation]
    expected = values.sum(axis=1) * coeff / (rows.shape[1] if operation == "MEAN" else 1)
    check(y, expected.reshape(x.shape[:start]))


# --- net plumbing: Input, Silence ---------------------------------------------------------------------------


def test_input_layers_give_the_inputs() -> None:
    text = '''
    layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "in2" type: "Input" top: "c" input_param { shape { dim: 1 dim: 3 } } }
    layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" bottom: "c" top: "cat" }
    '''
    model = convert(parse_prototxt(text), {})
    assert model.input_names == ["a", "b", "c"]
    assert model.input_shapes == [(1, 2), (1, 2), (1, 3)]
    a, b, c = rand(1, 2, seed=1), rand(1, 2, seed=2), rand(1, 3, seed=3)
    with torch.no_grad():
        check(model(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)), np.concatenate([a, b, c], 1))


def test_silence_consumes_without_output() -> None:
    x = rand(2, 3, seed=56)
    body = "\n".join([layer("relu", "ReLU", ["data"], ["r"]), layer("tanh", "TanH", ["data"], ["t"]),
                      layer("mute", "Silence", ["t"], [])])
    model, y = run(body, {"data": x})
    check(y, np.maximum(x, 0))
    assert "mute" not in dict(model.named_children())


def test_in_place_layers_chain() -> None:
    x = rand(2, 3, seed=57)
    body = "\n".join([layer("scale", "Power", ["data"], ["data"], "power_param { scale: -1 }"),
                      layer("relu", "ReLU", ["data"], ["data"])])
    _, y = run(body, {"data": x})
    check(y, np.maximum(-x, 0))


def test_every_registered_type_is_tested_here() -> None:
    """A new converter must come with a reference test in this file, or in another layer test file beside it
    (test_fork_layers.py, ...)."""
    source = "".join(path.read_text(encoding="utf-8") for path in sorted(Path(__file__).parent.glob("test_*layers.py")))
    assert [t for t in registered_types() if f'"{t}"' not in source] == []


def test_layers_export_as_standalone_code() -> None:
    """Layer classes are copied into exported model.py: they must run there with only torch imported."""
    from caffe2torch.converter.export import generate_code

    body = "\n".join([
        layer("prelu", "PReLU", ["data"], ["prelu"]),
        layer("lrn", "LRN", ["prelu"], ["lrn"], "lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }"),
        layer("lrn2", "LRN", ["lrn"], ["lrn2"]),
        layer("mvn", "MVN", ["lrn2"], ["mvn"]),
        layer("slice", "Slice", ["mvn"], ["s1", "s2"], "slice_param { slice_point: 1 }"),
        layer("crop", "Crop", ["s2", "s1"], ["crop"], "crop_param { axis: 1 offset: 1 offset: 0 offset: 0 }"),
        layer("tile", "Tile", ["crop"], ["tile"], "tile_param { tiles: 2 }"),
        layer("elu", "ELU", ["tile"], ["elu"]),
        layer("exp", "Exp", ["elu"], ["exp"], "exp_param { base: 2 shift: 1 }"),
        layer("log", "Log", ["exp"], ["log"], "log_param { base: 10 }"),
        layer("pool", "Pooling", ["log"], ["pool"], "pooling_param { pool: AVE kernel_size: 2 round_mode: FLOOR }"),
        layer("argmax", "ArgMax", ["pool"], ["argmax"], "argmax_param { top_k: 2 out_max_val: true }"),
        layer("sum", "Reduction", ["pool"], ["sum"], "reduction_param { operation: SUMSQ axis: 1 }"),
        layer("emb", "Embed", ["ids"], ["emb"], "embed_param { num_output: 3 input_dim: 4 }"),
    ])
    net = parse_prototxt(input_layers({"data": (2, 3, 5, 5), "ids": (2, 2)}) + "\n" + body)
    model = convert(net, None)
    namespace: dict[str, Any] = {}
    exec(compile(generate_code(model), "model.py", "exec"), namespace)
    standalone = namespace["Net"]()
    standalone.load_state_dict(model.state_dict())
    inputs = (torch.from_numpy(rand(2, 3, 5, 5, seed=65)), torch.tensor([[0.0, 3.0], [2.0, 1.0]]))
    with torch.no_grad():
        expected, actual = model(*inputs), standalone.eval()(*inputs)
    assert expected.keys() == actual.keys() == {"argmax", "sum", "emb"}
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


# --- errors -----------------------------------------------------------------------------------------------


def test_unknown_layer_type() -> None:
    with pytest.raises(ConversionError) as error:
        run(layer("mystery", "Frobnicate", ["data"], ["out"]), {"data": rand(1, 2)})
    message = str(error.value)
    assert "'mystery'" in message and "'Frobnicate'" in message and "register('Frobnicate')" in message


def test_blob_shape_mismatch_names_layer_blob_and_shapes() -> None:
    body = layer("conv1", "Convolution", ["data"], ["conv1"], "convolution_param { num_output: 4 kernel_size: 3 }")
    with pytest.raises(ConversionError) as error:
        run(body, {"data": rand(1, 2, 5, 5)}, {"conv1": [rand(4, 2, 3, 3), rand(5)]})
    message = str(error.value)
    assert "'conv1'" in message and "blob 1" in message and "[5]" in message and "[4]" in message


def test_extra_blob_is_an_error() -> None:
    body = layer("ip", "InnerProduct", ["data"], ["ip"], "inner_product_param { num_output: 2 bias_term: false }")
    with pytest.raises(ConversionError, match=r"'ip' \(InnerProduct\): the weights hold 2 blob\(s\), the layer uses 1"):
        run(body, {"data": rand(1, 3)}, {"ip": [rand(2, 3), rand(2)]})


def test_missing_weights_without_random_init() -> None:
    body = layer("conv1", "Convolution", ["data"], ["conv1"], "convolution_param { num_output: 4 kernel_size: 3 }")
    with pytest.raises(ConversionError, match=r"'conv1' \(Convolution\): the weights have no blobs.*random"):
        run(body, {"data": rand(1, 2, 5, 5)}, {})


def test_bottom_nobody_produces() -> None:
    with pytest.raises(ConversionError, match=r"'relu' \(ReLU\): bottom blob 'ghost' is not produced"):
        run(layer("relu", "ReLU", ["ghost"], ["out"]), {"data": rand(1, 2)})


def test_cycle_bottom_only_produced_later() -> None:
    body = "\n".join([layer("a", "ReLU", ["b_out"], ["a_out"]), layer("b", "ReLU", ["a_out"], ["b_out"])])
    with pytest.raises(ConversionError, match=r"'a' \(ReLU\): bottom blob 'b_out'.*only a later layer produces it"):
        run(body, {"data": rand(1, 2)})


def test_axis_out_of_range_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match=r"'prob' \(Softmax\): axis 3 is out of range for a 2-D input"):
        run(layer("prob", "Softmax", ["data"], ["prob"], "softmax_param { axis: 3 }"), {"data": rand(2, 3)})


class TimesTwoPlus(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x + self.offset.reshape(1, -1)


def convert_times_two_plus(ctx: registry.LayerContext) -> nn.Module:
    module = make(TimesTwoPlus, channels=ctx.input_shapes[0][1])
    module.offset = nn.Parameter(ctx.blob(0, (ctx.input_shapes[0][1],)))
    return module


def test_user_registered_layer() -> None:
    x, offset = rand(2, 3, seed=58), rand(3, seed=59)
    with registered("MyTimesTwoPlus", convert_times_two_plus, bottoms=1, tops=1):
        model, y = run(layer("mine", "MyTimesTwoPlus", ["data"], ["mine"]), {"data": x}, {"mine": [offset]})
        check(y, 2 * x + offset)
        assert "MyTimesTwoPlus" in registered_types()
        with pytest.raises(ValueError, match="already registered"):
            register("MyTimesTwoPlus")(lambda ctx: nn.Identity())
        with pytest.raises(ConversionError, match=r"'two' \(MyTimesTwoPlus\): needs exactly 1 bottom"):
            run(layer("two", "MyTimesTwoPlus", ["data", "data"], ["two"]), {"data": x}, {"two": [offset]})
    assert "MyTimesTwoPlus" not in registered_types()
    with pytest.raises(ConversionError, match="no converter for Caffe type 'MyTimesTwoPlus'"):
        run(layer("mine", "MyTimesTwoPlus", ["data"], ["mine"]), {"data": x}, {"mine": [offset]})


def test_a_scoped_converter_gives_the_built_in_one_back() -> None:
    x = rand(2, 3, seed=60)
    with registered("ReLU", convert_times_two_plus):
        _, y = run(layer("relu", "ReLU", ["data"], ["relu"]), {"data": x}, {"relu": [np.ones(3, np.float32)]})
        check(y, 2 * x + 1)
    _, y = run(layer("relu", "ReLU", ["data"], ["relu"]), {"data": x})
    check(y, np.maximum(x, 0))
    with pytest.raises(ConversionError, match="needs exactly 1 top"):  # the built-in's counts are back too
        run(layer("relu", "ReLU", ["data"], ["a", "b"]), {"data": x})


# --- OpenCV dnn as an independent Caffe runtime -------------------------------------------------------------


def opencv_forward(tmp_path: Any, body: str, x: Array, output: str, weights: dict[str, list[Array]] | None = None
                   ) -> Array:
    cv2 = pytest.importorskip("cv2")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(input_layers({"data": x.shape}) + "\n" + body)
    if weights:
        try:
            from caffe2torch.caffe_proto import write_caffemodel
        except ImportError:
            pytest.skip("caffe_proto.write_caffemodel is not available yet")
        model_path = tmp_path / "net.caffemodel"
        write_caffemodel(parse_prototxt(prototxt.read_text()), weights, model_path)
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(model_path))
    else:
        net = cv2.dnn.readNetFromCaffe(str(prototxt))
    net.setInput(x, "data")
    return net.forward(output)


@pytest.mark.parametrize("params", [case[0] for case in POOLING_CASES if "round_mode" not in case[0]]
                         + ["pool: AVE global_pooling: true"])
def test_pooling_matches_opencv(tmp_path: Any, params: str) -> None:
    x = rand(2, 3, 7, 6, seed=60) - 1
    body = layer("pool", "Pooling", ["data"], ["pool"], f"pooling_param {{ {params} }}")
    _, y = run(body, {"data": x})
    check(y, opencv_forward(tmp_path, body, x, "pool"))


@pytest.mark.parametrize("size, region", [(3, "ACROSS_CHANNELS"), (5, "ACROSS_CHANNELS"), (3, "WITHIN_CHANNEL")])
def test_lrn_matches_opencv(tmp_path: Any, size: int, region: str) -> None:
    x = rand(2, 6, 5, 5, seed=61) * 3
    # k stays at its default 1: OpenCV's importer ignores Caffe's k (its LRN reads "bias", default 1).
    body = layer("norm", "LRN", ["data"], ["norm"],
                 f"lrn_param {{ local_size: {size} alpha: 0.3 beta: 0.75 norm_region: {region} }}")
    _, y = run(body, {"data": x})
    check(y, opencv_forward(tmp_path, body, x, "norm"))


def test_scale_matches_opencv(tmp_path: Any) -> None:
    x, factor, shift = rand(2, 3, 4, 4, seed=62), rand(3, seed=63), rand(3, seed=64)
    body = layer("sc", "Scale", ["data"], ["sc"], "scale_param { bias_term: true }")
    weights = {"sc": [factor, shift]}
    _, y = run(body, {"data": x}, weights)
    check(y, opencv_forward(tmp_path, body, x, "sc", weights))
