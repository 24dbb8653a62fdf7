"""The SSD fork's layers (Permute, PriorBox, Normalize, DetectionOutput) against numpy references written from
Caffe-SSD's CPU code (weiliu89/caffe, branch ssd: permute_layer.cpp, prior_box_layer.cpp, normalize_layer.cpp,
detection_output_layer.cpp and bbox_util.cpp), loop by loop and in Caffe's float32 / double arithmetic, and
against OpenCV's dnn, which implements all four natively.

Where OpenCV departs from Caffe-SSD the tests say so and compare what both define: OpenCV keeps PriorBox sizes
as floats (Caffe truncates them to int), ignores DetectionOutput's eta, needs keep_top_k >= 0, writes the
detections of an image by score instead of by label, pads its output to N * keep_top_k rows of zeros and, when
nothing is detected, gives those zeros instead of Caffe's one ``[image_id, -1, ...]`` row per image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from caffe2torch.caffe_proto import parse_prototxt, write_caffemodel
from caffe2torch.converter import convert
from caffe2torch.converter.export import generate_code
from caffe2torch.converter.stats import count_macs
from caffe2torch.errors import ConversionError
from caffe2torch.modules.detection import DetectionOutput
from tests.test_converter_layers import input_layers, layer, rand

Array = np.ndarray
f32 = np.float32


def run_net(body: str, inputs: dict[str, Array], weights: dict[str, list[Array]] | None = None,
            random_init: bool = False) -> tuple[Any, torch.Tensor]:
    """Convert Input layers for ``inputs`` plus ``body`` and run it on ``inputs`` (in their order)."""
    net = parse_prototxt(input_layers({name: a.shape for name, a in inputs.items()}) + "\n" + body)
    model = convert(net, None if random_init else (weights or {}), random_init=random_init)
    with torch.no_grad():
        return model, model(*[torch.from_numpy(a) for a in inputs.values()])


def opencv_run(tmp_path: Path, body: str, inputs: dict[str, Array], output: str,
               weights: dict[str, list[Array]] | None = None) -> Array:
    """The same net in OpenCV's dnn (fusion off), every input set by name."""
    cv2 = pytest.importorskip("cv2")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(input_layers({name: a.shape for name, a in inputs.items()}) + "\n" + body)
    if weights:
        model_path = tmp_path / "net.caffemodel"
        write_caffemodel(parse_prototxt(prototxt.read_text()), weights, model_path, force=True)
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(model_path))
    else:
        net = cv2.dnn.readNetFromCaffe(str(prototxt))
    net.enableFusion(False)
    for name, array in inputs.items():
        net.setInput(array, name)
    return np.array(net.forward(output), dtype=np.float32)


# --- Permute -------------------------------------------------------------------------------------------------


def full_order(order: list[int], ndim: int) -> list[int]:
    """PermuteLayer::LayerSetUp: the named axes, then the others in their order."""
    return list(order) + [axis for axis in range(ndim) if axis not in order]


def permute_ref(x: Array, order: list[int]) -> Array:
    """PermuteLayer's Permute(): each output index decomposed with the new steps, recomposed with the old."""
    order = full_order(order, x.ndim)
    new_shape = [x.shape[axis] for axis in order]
    old_steps = [math.prod(x.shape[axis + 1:]) for axis in range(x.ndim)]
    new_steps = [math.prod(new_shape[axis + 1:]) for axis in range(x.ndim)]
    flat = x.reshape(-1)
    out = np.empty(x.size, x.dtype)
    for i in range(x.size):
        old_index, rest = 0, i
        for j in range(x.ndim):
            old_index += (rest // new_steps[j]) * old_steps[order[j]]
            rest %= new_steps[j]
        out[i] = flat[old_index]
    return out.reshape(new_shape)


def permute_layer(order: list[int]) -> str:
    params = " ".join(f"order: {axis}" for axis in order)
    return layer("perm", "Permute", ["data"], ["perm"], f"permute_param {{ {params} }}")


@pytest.mark.parametrize("shape, order", [
    ((2, 3, 4, 5), [0, 2, 3, 1]),  # SSD's NCHW -> NHWC
    ((2, 3, 4, 5), [0, 3, 1, 2]),
    ((2, 3, 4, 5), [3, 2, 1, 0]),
    ((2, 3, 4, 5), [0, 2]),  # partial: 0, 2, then 1, 3
    ((2, 3, 4, 5), [3]),  # 3, then 0, 1, 2
    ((2, 3, 4, 5), []),  # identity
    ((2, 3, 4), [0, 2, 1]),
    ((6, 7), [1]),
])
def test_permute_matches_caffe(shape: tuple[int, ...], order: list[int]) -> None:
    x = rand(*shape, seed=1)
    model, y = run_net(permute_layer(order), {"data": x})
    expected = permute_ref(x, order)
    assert y.is_contiguous()
    np.testing.assert_array_equal(y.numpy(), expected)
    assert model.output_shapes["perm"] == expected.shape


@pytest.mark.parametrize("order, message", [([0, 2, 2], "twice"), ([0, 4], "out of range")])
def test_permute_refuses_what_caffe_refuses(order: list[int], message: str) -> None:
    with pytest.raises(ConversionError, match=f"'perm'.*{message}"):
        run_net(permute_layer(order), {"data": rand(1, 2, 3, 4)})


def test_permute_matches_opencv(tmp_path: Path) -> None:
    x = rand(2, 3, 4, 5, seed=2)
    body = permute_layer([0, 2, 3, 1])
    _, y = run_net(body, {"data": x})
    np.testing.assert_array_equal(y.numpy(), opencv_run(tmp_path, body, {"data": x}, "perm"))


# --- PriorBox ------------------------------------------------------------------------------------------------


def prior_box_ref(layer_hw: tuple[int, int], image_hw: tuple[int, int], min_sizes: list[float],
                  max_sizes: list[float] = (), aspect_ratios: list[float] = (), flip: bool = True,
                  clip: bool = False, variances: list[float] = (), img_size: int | None = None,
                  img_hw: tuple[int, int] | None = None, step: float | None = None,
                  step_hw: tuple[float, float] | None = None, offset: float = 0.5) -> Array:
    """PriorBoxLayer::LayerSetUp and Forward_cpu: float centres, int sizes, double corners stored as float."""
    ratios = [f32(1.0)]
    for given in aspect_ratios:
        ratio = f32(given)
        if any(abs(ratio - known) < 1e-6 for known in ratios):  # float - float, as Caffe's fabs(ar - ...)
            continue
        ratios.append(ratio)
        if flip:
            ratios.append(f32(1.0 / float(ratio)))
    layer_h, layer_w = layer_hw
    img_h, img_w = (img_size, img_size) if img_size else img_hw if img_hw else image_hw
    if step:
        step_h = step_w = f32(step)
    elif step_hw:
        step_h, step_w = f32(step_hw[0]), f32(step_hw[1])
    else:
        step_h, step_w = f32(img_h) / f32(layer_h), f32(img_w) / f32(layer_w)
    boxes: list[float] = []
    for h in range(layer_h):
        for w in range(layer_w):
            center_x = (f32(w) + f32(offset)) * step_w
            center_y = (f32(h) + f32(offset)) * step_h
            for s, given_min in enumerate(min_sizes):
                min_size = int(given_min)
                sizes = [(f32(min_size), f32(min_size))]
                if max_sizes:
                    side = f32(math.sqrt(min_size * int(max_sizes[s])))
                    sizes.append((side, side))
                for ratio in ratios:
                    if abs(float(ratio) - 1.0) < 1e-6:
                        continue
                    sizes.append((f32(min_size * math.sqrt(float(ratio))), f32(min_size / math.sqrt(float(ratio)))))
                for box_w, box_h in sizes:
                    boxes += [(float(center_x) - float(box_w) / 2.0) / img_w,
                              (float(center_y) - float(box_h) / 2.0) / img_h,
                              (float(center_x) + float(box_w) / 2.0) / img_w,
                              (float(center_y) + float(box_h) / 2.0) / img_h]
    top = np.array(boxes, dtype=f32)
    if clip:
        top = np.minimum(np.maximum(top, f32(0)), f32(1))
    variance = np.array(list(variances) or [0.1], dtype=f32)
    variance_row = np.resize(variance, top.size) if len(variance) == 4 else np.full(top.size, variance[0], f32)
    return np.stack([top, variance_row])[None]


def prior_box_params(**params: Any) -> str:
    fields = []
    for name, value in params.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        fields += [f"{name}: {str(v).lower() if isinstance(v, bool) else v}" for v in values]
    return "prior_box_param { " + " ".join(fields) + " }"


PRIOR_BOX_CASES = [
    pytest.param(dict(min_size=[30]), id="min-only-defaults"),
    pytest.param(dict(min_size=[30], max_size=[60], aspect_ratio=[2, 3], flip=True, clip=True,
                      variance=[0.1, 0.1, 0.2, 0.2]), id="max-ratios-flip-clip-4-variances"),
    pytest.param(dict(min_size=[20], aspect_ratio=[2, 0.5, 1, 2.0000001, 3], flip=False, variance=[0.2]),
                 id="no-flip-duplicate-ratios-1-variance"),
    pytest.param(dict(min_size=[20], aspect_ratio=[0.5, 2], flip=True), id="flip-adds-no-duplicate-check"),
    pytest.param(dict(min_size=[16], step=8.0, offset=0.3), id="explicit-step-offset"),
    pytest.param(dict(min_size=[16], step_h=6.5, step_w=9.0), id="step-h-w"),
    pytest.param(dict(min_size=[40], img_size=300, clip=True), id="img-size"),
    pytest.param(dict(min_size=[40], img_h=120, img_w=250), id="img-h-w"),
    pytest.param(dict(min_size=[10, 16, 24.7], max_size=[16, 24, 32.9], aspect_ratio=[2]),
                 id="several-min-max-truncated-to-int"),
]


@pytest.mark.parametrize("params", PRIOR_BOX_CASES)
def test_prior_box_matches_caffe_bit_for_bit(params: dict[str, Any]) -> None:
    feature, image = rand(2, 4, 5, 7, seed=3), rand(2, 3, 37, 61, seed=4)
    body = layer("pb", "PriorBox", ["feat", "img"], ["pb"], prior_box_params(**params))
    model, y = run_net(body, {"feat": feature, "img": image})
    expected = prior_box_ref(
        (5, 7), (37, 61), params["min_size"], params.get("max_size", ()), params.get("aspect_ratio", ()),
        params.get("flip", True), params.get("clip", False), params.get("variance", ()), params.get("img_size"),
        (params["img_h"], params["img_w"]) if "img_h" in params else None, params.get("step"),
        (params["step_h"], params["step_w"]) if "step_h" in params else None, params.get("offset", 0.5))
    assert y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), expected)
    assert model.output_shapes["pb"] == expected.shape


def test_prior_box_order_within_a_cell() -> None:
    """One cell: min box, sqrt(min * max) box, then ratios 2, 1/2, 3, 1/3 (1 first in the list, skipped)."""
    body = layer("pb", "PriorBox", ["feat", "img"], ["pb"],
                 prior_box_params(min_size=[10], max_size=[40], aspect_ratio=[2, 3]))
    _, y = run_net(body, {"feat": rand(1, 1, 1, 1), "img": rand(1, 1, 100, 100)})
    boxes = y[0, 0].reshape(-1, 4).double()
    widths, heights = (boxes[:, 2] - boxes[:, 0]) * 100, (boxes[:, 3] - boxes[:, 1]) * 100
    expected_w = [10, 20, 10 * math.sqrt(2), 10 / math.sqrt(2), 10 * math.sqrt(3), 10 / math.sqrt(3)]
    np.testing.assert_allclose(widths.numpy(), expected_w, rtol=1e-5)
    np.testing.assert_allclose((widths * heights).numpy(), [100, 400, 100, 100, 100, 100], rtol=1e-5)


@pytest.mark.parametrize("params", [case for case in PRIOR_BOX_CASES
                                    if case.id not in ("several-min-max-truncated-to-int", "img-size", "img-h-w")])
def test_prior_box_matches_opencv(tmp_path: Path, params: dict[str, Any]) -> None:
    """OpenCV computes in float (Caffe in double, rounded once): equal within 1e-6.  The case with
    fractional sizes is left out: OpenCV does not truncate them to int as Caffe does; so are img_size and
    img_h/img_w, which OpenCV ignores (it normalises by the image input's size).  clip and variance are
    spelled out: OpenCV's defaults are clip true (SSD's first schema) and no variance at all."""
    params = {"clip": False, "variance": [0.1], **params}
    inputs = {"feat": rand(1, 4, 5, 7, seed=3), "img": rand(1, 3, 37, 61, seed=4)}
    body = layer("pb", "PriorBox", ["feat", "img"], ["pb"], prior_box_params(**params))
    _, y = run_net(body, inputs)
    reference = opencv_run(tmp_path, body, inputs, "pb")
    assert reference.shape == tuple(y.shape)
    np.testing.assert_allclose(y.numpy(), reference, rtol=0, atol=1e-6)


def test_prior_box_follows_the_input_size() -> None:
    """Computed from the shapes at each call: a model run at another input size gets that size's priors."""
    body = layer("pb", "PriorBox", ["feat", "img"], ["pb"], prior_box_params(min_size=[8], aspect_ratio=[2]))
    model, _ = run_net(body, {"feat": rand(1, 2, 3, 4), "img": rand(1, 3, 24, 32)})
    with torch.no_grad():
        y = model(torch.zeros(1, 2, 6, 5), torch.zeros(1, 3, 60, 40))
    np.testing.assert_array_equal(y.numpy(), prior_box_ref((6, 5), (60, 40), [8], aspect_ratios=[2]))


@pytest.mark.parametrize("params, message", [
    (dict(max_size=[20]), "min_size"),
    (dict(min_size=[20], max_size=[20]), "exceed"),
    (dict(min_size=[20, 30], max_size=[40]), "one per min_size"),
    (dict(min_size=[20], variance=[0.1, 0.2]), "1 or 4"),
    (dict(min_size=[20], variance=[0.0]), "positive"),
    (dict(min_size=[20], img_size=100, img_h=100), "not both"),
    (dict(min_size=[20], img_h=100), "positive"),
    (dict(min_size=[20], step=8, step_w=8), "not both"),
    (dict(min_size=[0]), "positive"),
])
def test_prior_box_refuses_what_caffe_refuses(params: dict[str, Any], message: str) -> None:
    body = layer("pb", "PriorBox", ["feat", "img"], ["pb"], prior_box_params(**params))
    with pytest.raises(ConversionError, match=f"'pb'.*{message}"):
        run_net(body, {"feat": rand(1, 2, 3, 3), "img": rand(1, 3, 30, 30)})


# --- Normalize -----------------------------------------------------------------------------------------------


def normalize_ref(x: Array, scale: Array, across_spatial: bool, eps: float) -> Array:
    """NormalizeLayer::Forward_cpu per image: across_spatial x * (1 / sqrt(sum x^2 + eps)); else per position
    x / sqrt(eps + sum_c x^2); then times the scale (one value, or one per channel)."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1).astype(np.float64)
    y = np.empty_like(flat)
    for image in range(n):
        if across_spatial:
            norm = math.sqrt(float((flat[image] ** 2).sum()) + eps)
            y[image] = flat[image] * (1.0 / norm)
        else:
            for position in range(flat.shape[2]):
                norm = math.sqrt(eps + float((flat[image, :, position] ** 2).sum()))
                y[image, :, position] = flat[image, :, position] / norm
        y[image] *= float(scale) if scale.ndim == 0 else scale.astype(np.float64).reshape(c, 1)
    return y.reshape(x.shape)


def normalize_layer(across_spatial: bool, channel_shared: bool, eps: float | None = None) -> str:
    eps_field = f"eps: {eps}" if eps is not None else ""
    return layer("norm", "Normalize", ["data"], ["norm"],
                 f"norm_param {{ across_spatial: {str(across_spatial).lower()} "
                 f"channel_shared: {str(channel_shared).lower()} {eps_field} }}")


def normalize_scale(channel_shared: bool, channels: int) -> Array:
    return np.array(2.5, f32) if channel_shared else rand(channels, seed=5, low=0.5, high=3.0)


@pytest.mark.parametrize("across_spatial", [True, False])
@pytest.mark.parametrize("channel_shared", [True, False])
@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (3, 6), (2, 4, 7)])
def test_normalize_matches_caffe(across_spatial: bool, channel_shared: bool, shape: tuple[int, ...]) -> None:
    x = rand(*shape, seed=6)
    scale = normalize_scale(channel_shared, shape[1])
    model, y = run_net(normalize_layer(across_spatial, channel_shared), {"data": x}, {"norm": [scale]})
    np.testing.assert_allclose(y.numpy(), normalize_ref(x, scale, across_spatial, f32(1e-10)), rtol=1e-5, atol=1e-6)
    assert model.output_shapes["norm"] == shape


@pytest.mark.parametrize("across_spatial", [True, False])
def test_normalize_adds_eps_inside_the_square_root(across_spatial: bool) -> None:
    """With eps comparable to sum(x^2), sqrt(sum + eps) and sqrt(sum) + eps differ by half the output."""
    x = rand(1, 3, 2, 2, seed=7) * 1e-3
    eps = float(f32(1e-5))
    scale = np.ones(3, f32)
    _, y = run_net(normalize_layer(across_spatial, False, 1e-5), {"data": x}, {"norm": [scale]})
    expected = normalize_ref(x, scale, across_spatial, eps)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5)
    outside = x / (np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True)) + eps)
    assert np.abs(y.numpy() - outside).max() > 0.1 * np.abs(outside).max()


@pytest.mark.parametrize("across_spatial", [True, False])
def test_normalize_of_zeros_is_zero_not_nan(across_spatial: bool) -> None:
    _, y = run_net(normalize_layer(across_spatial, True), {"data": np.zeros((2, 3, 2, 2), f32)},
                   {"norm": [np.array(4.0, f32)]})
    assert torch.equal(y, torch.zeros(2, 3, 2, 2))


def test_normalize_scale_blob_shapes_are_caffes() -> None:
    """Shared: a blob with no axes (or the legacy 1 x 1 x 1 x 1); per channel: C values."""
    x = rand(1, 3, 2, 2, seed=8)
    for blob in (np.array(2.0, f32), np.full((1, 1, 1, 1), 2.0, f32)):
        _, y = run_net(normalize_layer(True, True), {"data": x}, {"norm": [blob]})
        np.testing.assert_allclose(y.numpy(), normalize_ref(x, np.array(2.0, f32), True, f32(1e-10)), rtol=1e-5)
    with pytest.raises(ConversionError, match="'norm'.*blob 0 has shape \\[2\\], expected \\[3\\]"):
        run_net(normalize_layer(False, False), {"data": x}, {"norm": [np.ones(2, f32)]})


def test_normalize_random_init_uses_the_constant_scale_filler() -> None:
    body = layer("norm", "Normalize", ["data"], ["norm"],
                 'norm_param { across_spatial: false channel_shared: false '
                 'scale_filler { type: "constant" value: 20 } }')
    x = rand(1, 3, 2, 2, seed=9)
    _, y = run_net(body, {"data": x}, random_init=True)
    np.testing.assert_allclose(y.numpy(), normalize_ref(x, np.full(3, 20, f32), False, f32(1e-10)), rtol=1e-5)


@pytest.mark.parametrize("across_spatial, channel_shared", [(True, True), (False, True), (False, False)])
def test_normalize_matches_opencv(tmp_path: Path, across_spatial: bool, channel_shared: bool) -> None:
    x = rand(2, 5, 4, 3, seed=10)
    """OpenCV refuses one norm per image with a scale per channel (it asserts one scale per norm there)."""
    # A shared scale in the legacy 1 x 1 x 1 x 1 form, which Caffe accepts too.
    weights = {"norm": [normalize_scale(channel_shared, 5).reshape((1, 1, 1, 1) if channel_shared else (5,))]}
    body = normalize_layer(across_spatial, channel_shared)
    _, y = run_net(body, {"data": x}, weights)
    np.testing.assert_allclose(y.numpy(), opencv_run(tmp_path, body, {"data": x}, "norm", weights),
                               rtol=1e-5, atol=1e-6)


# --- DetectionOutput -----------------------------------------------------------------------------------------


def decode_ref(prior: Array, variance: Array | None, pred: Array, code_type: str) -> list[Any]:
    """bbox_util.cpp's DecodeBBox of one box, in float32 scalars (variance None: encoded in the target)."""
    px0, py0, px1, py1 = prior
    d0, d1, d2, d3 = pred
    v0, v1, v2, v3 = variance if variance is not None else (None,) * 4
    if code_type == "CORNER":
        if variance is None:
            return [px0 + d0, py0 + d1, px1 + d2, py1 + d3]
        return [px0 + v0 * d0, py0 + v1 * d1, px1 + v2 * d2, py1 + v3 * d3]
    prior_w, prior_h = px1 - px0, py1 - py0
    if code_type == "CORNER_SIZE":
        if variance is None:
            return [px0 + d0 * prior_w, py0 + d1 * prior_h, px1 + d2 * prior_w, py1 + d3 * prior_h]
        return [px0 + v0 * d0 * prior_w, py0 + v1 * d1 * prior_h, px1 + v2 * d2 * prior_w, py1 + v3 * d3 * prior_h]
    center_x, center_y = (px0 + px1) / f32(2), (py0 + py1) / f32(2)
    if variance is None:
        cx, cy = d0 * prior_w + center_x, d1 * prior_h + center_y
        w, h = np.exp(d2) * prior_w, np.exp(d3) * prior_h
    else:
        cx, cy = v0 * d0 * prior_w + center_x, v1 * d1 * prior_h + center_y
        w, h = np.exp(v2 * d2) * prior_w, np.exp(v3 * d3) * prior_h
    return [cx - w / f32(2), cy - h / f32(2), cx + w / f32(2), cy + h / f32(2)]


def size_ref(box: list[Any]) -> Any:
    """BBoxSize of a normalised box: 0 when invalid."""
    if box[2] < box[0] or box[3] < box[1]:
        return f32(0)
    return (box[2] - box[0]) * (box[3] - box[1])


def overlap_ref(a: list[Any], b: list[Any]) -> Any:
    """JaccardOverlap, normalised: IntersectBBox (zeros when apart), then intersection over union."""
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return f32(0)
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width > 0 and height > 0:
        inter = width * height
        return inter / (size_ref(a) + size_ref(b) - inter)
    return f32(0)


def nms_ref(boxes: list[list[Any]], scores: Array, score_threshold: float, nms_threshold: float, eta: float,
            top_k: int) -> list[int]:
    """ApplyNMSFast: GetMaxScoreIndex (strictly above the threshold, stable sort, top_k), then greedy."""
    pairs = [(scores[i], i) for i in range(len(scores)) if scores[i] > f32(score_threshold)]
    pairs.sort(key=lambda pair: -pair[0])  # Python's sort is stable, as std::stable_sort
    if -1 < top_k < len(pairs):
        pairs = pairs[:top_k]
    threshold = f32(nms_threshold)
    kept: list[int] = []
    for _, index in pairs:
        keep = True
        for kept_index in kept:
            if not keep:
                break
            keep = overlap_ref(boxes[index], boxes[kept_index]) <= threshold
        if keep:
            kept.append(index)
        if keep and eta < 1 and threshold > 0.5:
            threshold = threshold * f32(eta)
    return kept


def detection_output_ref(loc: Array, conf: Array, prior: Array, num_classes: int, share_location: bool = True,
                         background_label_id: int = 0, code_type: str = "CORNER",
                         variance_encoded_in_target: bool = False, keep_top_k: int = -1,
                         confidence_threshold: float = -3.4028234663852886e38, nms_threshold: float = 0.3,
                         top_k: int = -1, eta: float = 1.0, clip: bool = False) -> Array:
    """DetectionOutputLayer::Forward_cpu; with ``clip``, OpenCV's: DecodeBBox clips each corner of the decoded box
    to [0, 1] (std::max(std::min(v, 1.f), 0.f)), and its size is the clipped box's."""
    num, num_priors = loc.shape[0], prior.shape[2] // 4
    loc_classes = 1 if share_location else num_classes
    loc = loc.reshape(num, num_priors, loc_classes, 4)
    conf = conf.reshape(num, num_priors, num_classes)
    priors = prior[0, 0].reshape(num_priors, 4)
    variances = None if variance_encoded_in_target else prior[0, 1].reshape(num_priors, 4)
    all_boxes, all_indices, num_kept = [], [], 0
    for image in range(num):
        boxes = [[decode_ref(priors[p], None if variances is None else variances[p], loc[image, p, c], code_type)
                  for p in range(num_priors)] for c in range(loc_classes)]
        if clip:
            boxes = [[[max(min(v, f32(1)), f32(0)) for v in box] for box in row] for row in boxes]
        indices: dict[int, list[int]] = {}
        num_det = 0
        for c in range(num_classes):
            if c == background_label_id:
                continue
            indices[c] = nms_ref(boxes[0 if share_location else c], conf[image, :, c], confidence_threshold,
                                 nms_threshold, eta, top_k)
            num_det += len(indices[c])
        if -1 < keep_top_k < num_det:
            pairs = [(conf[image, index, label], label, index) for label in sorted(indices) for index in indices[label]]
            pairs.sort(key=lambda pair: -pair[0])
            regrouped: dict[int, list[int]] = {}
            for _, label, index in pairs[:keep_top_k]:
                regrouped.setdefault(label, []).append(index)
            indices = regrouped
            num_kept += keep_top_k
        else:
            num_kept += num_det
        all_boxes.append(boxes)
        all_indices.append(indices)
    if num_kept == 0:
        rows = np.full((num, 7), -1, f32)
        rows[:, 0] = np.arange(num)
        return rows.reshape(1, 1, num, 7)
    rows_list = []
    for image in range(num):
        for label in sorted(all_indices[image]):
            for index in all_indices[image][label]:
                box = all_boxes[image][0 if share_location else label][index]
                rows_list.append([image, label, conf[image, index, label], *box])
    return np.array(rows_list, f32).reshape(1, 1, -1, 7)


def ssd_inputs(num: int, num_classes: int, share_location: bool = True, loc_scale: float = 1.0,
               prior_channels: int = 2, seed: int = 0) -> dict[str, Array]:
    """Priors on a 4 x 4 grid, two overlapping sizes per cell; location offsets; scores in [0, 1)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for cy in np.arange(4) * 0.25 + 0.125:
        for cx in np.arange(4) * 0.25 + 0.125:
            for half in (0.15, 0.25):
                boxes.append([cx - half, cy - half * 0.8, cx + half, cy + half * 0.8])
    priors = np.array(boxes, f32).reshape(-1)
    variance = np.tile(np.array([0.1, 0.1, 0.2, 0.2], f32), len(boxes))
    prior = np.stack([priors, variance])[None][:, :prior_channels].copy()
    num_priors = len(boxes)
    loc_classes = 1 if share_location else num_classes
    loc = (rng.standard_normal((num, num_priors * loc_classes * 4)) * loc_scale).astype(f32)
    conf = rng.uniform(0, 1, (num, num_priors * num_classes)).astype(f32)
    return {"loc": loc, "conf": conf, "prior": prior}


def detection_layer(**params: Any) -> str:
    nms = {k: params.pop(k) for k in ("nms_threshold", "top_k", "eta") if k in params}
    fields = [f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in params.items()]
    if nms:
        fields.append("nms_param { " + " ".join(f"{k}: {v}" for k, v in nms.items()) + " }")
    return layer("det", "DetectionOutput", ["loc", "conf", "prior"], ["det"],
                 "detection_output_param { " + " ".join(fields) + " }")


def check_detections(actual: torch.Tensor, expected: Array) -> None:
    """Same rows in the same order: ids, labels and scores exactly, boxes within 1e-6 (exp may differ by an ulp)."""
    assert tuple(actual.shape) == expected.shape
    actual_rows, expected_rows = actual.numpy()[0, 0], expected[0, 0]
    np.testing.assert_array_equal(actual_rows[:, :3], expected_rows[:, :3])
    np.testing.assert_allclose(actual_rows[:, 3:], expected_rows[:, 3:], rtol=0, atol=1e-6)


DETECTION_CASES = [
    pytest.param(dict(code_type="CORNER", nms_threshold=0.45), 0.1, id="corner"),
    pytest.param(dict(code_type="CENTER_SIZE", nms_threshold=0.45), 1.0, id="center-size"),
    pytest.param(dict(code_type="CORNER_SIZE", nms_threshold=0.45), 0.5, id="corner-size"),
    pytest.param(dict(code_type="CORNER", variance_encoded_in_target=True, nms_threshold=0.45), 0.02,
                 id="corner-variance-in-target"),
    pytest.param(dict(code_type="CENTER_SIZE", variance_encoded_in_target=True, nms_threshold=0.45), 0.2,
                 id="center-size-variance-in-target"),
    pytest.param(dict(code_type="CORNER_SIZE", variance_encoded_in_target=True, nms_threshold=0.45), 0.1,
                 id="corner-size-variance-in-target"),
    pytest.param(dict(code_type="CENTER_SIZE", share_location=False, nms_threshold=0.45), 1.0,
                 id="share-location-false"),
    pytest.param(dict(code_type="CENTER_SIZE", share_location=False, background_label_id=-1, nms_threshold=0.45),
                 1.0, id="no-background"),
    pytest.param(dict(code_type="CENTER_SIZE", background_label_id=2, nms_threshold=0.45,
                      confidence_threshold=0.3), 1.0, id="background-in-the-middle"),
    pytest.param(dict(code_type="CENTER_SIZE", confidence_threshold=0.6, nms_threshold=0.3), 1.0,
                 id="confidence-threshold"),
    pytest.param(dict(code_type="CENTER_SIZE", nms_threshold=0.45, top_k=3), 1.0, id="top-k"),
    pytest.param(dict(code_type="CENTER_SIZE", nms_threshold=0.45, keep_top_k=7), 1.0, id="keep-top-k"),
    pytest.param(dict(code_type="CENTER_SIZE", nms_threshold=0.45, top_k=5, keep_top_k=4,
                      confidence_threshold=0.2), 1.0, id="top-k-and-keep-top-k"),
    pytest.param(dict(code_type="CENTER_SIZE", nms_threshold=0.9, eta=0.7), 1.0, id="eta"),
    pytest.param(dict(code_type="CENTER_SIZE", nms_threshold=0.45, keep_top_k=0), 1.0, id="keep-top-k-0"),
    pytest.param(dict(code_type="CENTER_SIZE", confidence_threshold=1.0), 1.0, id="nothing-detected"),
]


@pytest.mark.parametrize("params, loc_scale", DETECTION_CASES)
@pytest.mark.parametrize("num", [1, 2])
def test_detection_output_matches_caffe(params: dict[str, Any], loc_scale: float, num: int) -> None:
    num_classes = 4
    share_location = params.get("share_location", True)
    inputs = ssd_inputs(num, num_classes, share_location, loc_scale, seed=11 + num)
    model, y = run_net(detection_layer(num_classes=num_classes, **params), inputs)
    expected = detection_output_ref(inputs["loc"], inputs["conf"], inputs["prior"], num_classes, **params)
    check_detections(y, expected)
    bound = model.output_shapes["det"]
    assert bound[:2] == (1, 1) and bound[3] == 7 and bound[2] >= expected.shape[2]


def test_detection_output_cases_exercise_what_they_name() -> None:
    """The inputs above make each truncation and the adaptive threshold change the result."""
    inputs = ssd_inputs(2, 4, seed=13)
    args = (inputs["loc"], inputs["conf"], inputs["prior"], 4)
    base = detection_output_ref(*args, code_type="CENTER_SIZE", nms_threshold=0.45)
    assert base.shape[2] > 12
    for changed in (dict(top_k=3), dict(keep_top_k=7)):
        truncated = detection_output_ref(*args, code_type="CENTER_SIZE", nms_threshold=0.45, **changed)
        assert truncated.shape[2] < base.shape[2]
    with_eta = detection_output_ref(*args, code_type="CENTER_SIZE", nms_threshold=0.9, eta=0.7)
    without = detection_output_ref(*args, code_type="CENTER_SIZE", nms_threshold=0.9)
    assert with_eta.shape[2] < without.shape[2]
    kept = detection_output_ref(*args, code_type="CENTER_SIZE", nms_threshold=0.45, keep_top_k=7)[0, 0]
    for image in (0, 1):  # regrouped by label, scores descending within a label
        rows = kept[kept[:, 0] == image]
        assert list(rows[:, 1]) == sorted(rows[:, 1])
        assert len(set(rows[:, 1])) > 1


def test_detection_output_with_nothing_detected_gives_caffes_placeholder_rows() -> None:
    inputs = ssd_inputs(2, 3, seed=14)
    _, y = run_net(detection_layer(num_classes=3, confidence_threshold=0.99999), inputs)
    assert torch.equal(y, torch.tensor([[[[0.0, -1, -1, -1, -1, -1, -1], [1.0, -1, -1, -1, -1, -1, -1]]]]))


def test_detection_output_ignores_a_fourth_input() -> None:
    inputs = ssd_inputs(1, 3, seed=15)
    body = layer("det", "DetectionOutput", ["loc", "conf", "prior", "data"], ["det"],
                 "detection_output_param { num_classes: 3 nms_param { nms_threshold: 0.45 } keep_top_k: 5 }")
    _, y = run_net(body, {**inputs, "data": rand(1, 3, 8, 8)})
    check_detections(y, detection_output_ref(inputs["loc"], inputs["conf"], inputs["prior"], 3, nms_threshold=0.45,
                                             keep_top_k=5))


def test_detection_output_declares_a_bound_and_runs_on_meta_tensors() -> None:
    inputs = ssd_inputs(2, 4, seed=16)
    model, _ = run_net(detection_layer(num_classes=4, keep_top_k=10, nms_threshold=0.45), inputs)
    assert model.output_shapes["det"] == (1, 1, 20, 7)  # N x keep_top_k
    module = DetectionOutput(num_classes=4, share_location=True, background_label_id=0, code_type="CORNER",
                             variance_encoded_in_target=False, keep_top_k=-1, confidence_threshold=0.1,
                             nms_threshold=0.45, top_k=6, eta=1.0)
    assert module.output_shapes([(2, 128), (2, 128), (1, 2, 128)]) == [(1, 1, 2 * 3 * 6, 7)]
    assert count_macs(model, [a.shape for a in inputs.values()]) == 0  # a whole-model pass on meta tensors


@pytest.mark.parametrize("params, shapes, message", [
    (dict(nms_threshold=0.45), None, "num_classes"),
    (dict(num_classes=4, eta=1.5), None, "eta"),
    (dict(num_classes=4, nms_threshold=-0.1), None, "nms_threshold"),
    (dict(num_classes=5), None, "conf"),
    (dict(num_classes=4, share_location=False), None, "loc"),
    (dict(num_classes=4), dict(prior=(1, 1, 128)), "prior"),
    (dict(num_classes=4, background_label_id=-1), None, "label -1"),  # Caffe-SSD aborts at its first forward
])
def test_detection_output_refuses_what_caffe_refuses(params: dict[str, Any], shapes: dict[str, tuple] | None,
                                                     message: str) -> None:
    inputs = ssd_inputs(1, 4, seed=17)
    for name, shape in (shapes or {}).items():
        inputs[name] = np.zeros(shape, f32)
    with pytest.raises(ConversionError, match=f"'det'.*{message}"):
        run_net(detection_layer(**params), inputs)


@pytest.mark.parametrize("code_type", ["CORNER", "CENTER_SIZE", "CORNER_SIZE"])
@pytest.mark.parametrize("num", [1, 2])
def test_detection_output_clip_clips_the_decoded_boxes_before_nms(code_type: str, num: int) -> None:
    """OpenCV's clip (DetectionOutputParameter field 1000): the boxes are clipped to [0, 1] as they are decoded,
    so NMS compares the clipped boxes; the rows differ from the unclipped ones in more than their boxes."""
    num_classes = 4
    inputs = ssd_inputs(num, num_classes, loc_scale=1.5, seed=19 + num)
    params = dict(code_type=code_type, nms_threshold=0.45, keep_top_k=30)
    _, y = run_net(detection_layer(num_classes=num_classes, clip=True, **params), inputs)
    expected = detection_output_ref(inputs["loc"], inputs["conf"], inputs["prior"], num_classes, clip=True, **params)
    check_detections(y, expected)
    rows = y.numpy()[0, 0]
    assert rows[:, 3:].min() >= 0 and rows[:, 3:].max() <= 1
    unclipped = detection_output_ref(inputs["loc"], inputs["conf"], inputs["prior"], num_classes, **params)[0, 0]
    assert unclipped[:, 3:].min() < 0 or unclipped[:, 3:].max() > 1
    _, default = run_net(detection_layer(num_classes=num_classes, clip=False, **params), inputs)
    check_detections(default, unclipped[None, None])


def test_detection_output_clip_changes_which_boxes_nms_keeps() -> None:
    """Two boxes reaching past the image, [0.5, 0.5, 1.5, 1.5] and the same moved right by 0.3: unclipped they
    overlap by 0.7 / 1.3 = 0.54 and the weaker goes (nms 0.45); clipped to the image, [0.5, 0.5, 1, 1] and
    [0.8, 0.5, 1, 1], by 0.1 / 0.25 = 0.4, and both stay."""
    prior = np.array([[[0.5, 0.5, 1.5, 1.5, 0.5, 0.5, 1.5, 1.5], [0.1, 0.1, 0.2, 0.2] * 2]], f32)
    loc = np.array([[0, 0, 0, 0, 3, 0, 1.5, 0]], f32)  # CORNER, variances 0.1 and 0.2: x moved by 0.3
    conf = np.array([[0.1, 0.9, 0.2, 0.8]], f32)
    inputs = {"loc": loc, "conf": conf, "prior": prior}
    params = dict(code_type="CORNER", nms_threshold=0.45)
    for clip, count in ((False, 1), (True, 2)):
        expected = detection_output_ref(loc, conf, prior, 2, clip=clip, **params)
        assert expected.shape[2] == count
        _, y = run_net(detection_layer(num_classes=2, clip=clip, **params), inputs)
        check_detections(y, expected)


def test_detection_output_clip_of_the_published_repro() -> None:
    """/tmp/published/repros/det_clip.prototxt: a prior [0.9, 0.9, 1.1, 1.1] and no offset decode to 0.9 0.9 1.0 1.0
    with clip (OpenCV's result), to 1.1 at the far corner without."""
    body = detection_layer(num_classes=2, share_location=True, background_label_id=0, nms_threshold=0.45, top_k=10,
                           code_type="CENTER_SIZE", keep_top_k=10, confidence_threshold=0.1, clip=True)
    inputs = {"loc": np.zeros((1, 4), f32), "conf": np.array([[0.2, 0.8]], f32),
              "prior": np.array([[[0.9, 0.9, 1.1, 1.1], [0.1, 0.1, 0.2, 0.2]]], f32)}
    _, y = run_net(body, inputs)
    np.testing.assert_allclose(y.numpy().reshape(-1), [0, 1, 0.8, 0.9, 0.9, 1.0, 1.0], rtol=0, atol=1e-6)
    _, unclipped = run_net(body.replace("clip: true", ""), inputs)
    np.testing.assert_allclose(unclipped.numpy().reshape(-1)[5:], [1.1, 1.1], rtol=0, atol=1e-6)


def test_one_bottom_detection_output_is_named_a_yolo_region_layer() -> None:
    """caffe-yolov2's DetectionOutput (one bottom, coords/biases) is another layer under SSD's type name."""
    body = layer("det", "DetectionOutput", ["region"], ["det"],
                 "detection_output_param { num_classes: 9 confidence_threshold: 0.01 }")
    with pytest.raises(ConversionError) as error:
        run_net(body, {"region": rand(1, 70, 13, 13)})
    message = str(error.value)
    assert "layer 'det' (DetectionOutput): has one bottom: this looks like a YOLO region DetectionOutput" in message
    assert "not SSD's DetectionOutput (bottoms loc, conf, prior)" in message
    assert "@caffe2torch.converter.register('DetectionOutput', bottoms=(1, 4), tops=1, replace=True)" in message
    inputs = ssd_inputs(1, 4, seed=20)
    two = layer("det", "DetectionOutput", ["loc", "conf"], ["det"], "detection_output_param { num_classes: 4 }")
    with pytest.raises(ConversionError,
                       match=r"'det' \(DetectionOutput\): needs 3 to 4 bottom\(s\) \(loc, conf, prior\), got 2"):
        run_net(two, {"loc": inputs["loc"], "conf": inputs["conf"]})


def opencv_rows(detections: Array) -> Array:
    """OpenCV's rows without its zero padding, in Caffe's order (image, label, score descending)."""
    rows = detections.reshape(-1, 7)
    rows = rows[np.abs(rows).sum(axis=1) > 0]
    return rows[np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("params, loc_scale", [
    pytest.param(dict(code_type="CORNER"), 0.1, id="corner"),
    pytest.param(dict(code_type="CENTER_SIZE"), 1.0, id="center-size"),
    pytest.param(dict(code_type="CENTER_SIZE", share_location=False), 1.0, id="share-location-false"),
    pytest.param(dict(code_type="CENTER_SIZE", share_location=False, background_label_id=-1), 1.0,
                 id="no-background"),
    pytest.param(dict(code_type="CENTER_SIZE", top_k=3), 1.0, id="top-k"),
    pytest.param(dict(code_type="CENTER_SIZE", keep_top_k=7), 1.0, id="keep-top-k"),
    pytest.param(dict(code_type="CENTER_SIZE", clip=True), 1.5, id="clip"),
    pytest.param(dict(code_type="CORNER", clip=True), 1.0, id="corner-clip"),
])
def test_detection_output_matches_opencv(tmp_path: Path, params: dict[str, Any], loc_scale: float) -> None:
    """OpenCV needs share_location, background_label_id, code_type and keep_top_k spelled out; its schema
    has no CORNER_SIZE."""
    num_classes = 4
    full = {"share_location": True, "background_label_id": 0, "keep_top_k": 100, "confidence_threshold": 0.05,
            "nms_threshold": 0.45, **params}
    inputs = ssd_inputs(2, num_classes, full["share_location"], loc_scale, seed=18)
    body = detection_layer(num_classes=num_classes, **full)
    _, y = run_net(body, inputs)
    reference = opencv_rows(opencv_run(tmp_path, body, inputs, "det"))
    ours = y.numpy()[0, 0]
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(ours[:, :3], reference[:, :3])
    np.testing.assert_allclose(ours[:, 3:], reference[:, 3:], rtol=0, atol=1e-6)


# --- a small SSD head end to end -----------------------------------------------------------------------------

SSD_HEAD = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "norm" type: "Normalize" bottom: "conv" top: "norm" norm_param { across_spatial: false channel_shared: false } }
layer { name: "loc" type: "Convolution" bottom: "norm" top: "loc" convolution_param { num_output: 16 kernel_size: 1 } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "norm" top: "conf" convolution_param { num_output: 12 kernel_size: 1 } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "conf_reshape" type: "Reshape" bottom: "conf_flat" top: "conf_reshape" reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax" softmax_param { axis: 2 } }
layer { name: "conf_out" type: "Flatten" bottom: "conf_softmax" top: "conf_out" }
layer { name: "prior" type: "PriorBox" bottom: "norm" bottom: "data" top: "prior"
  prior_box_param { min_size: 8 max_size: 16 aspect_ratio: 2 flip: true clip: false
                    variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 offset: 0.5 } }
layer { name: "det" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_out" bottom: "prior" top: "det"
  detection_output_param { num_classes: 3 share_location: true background_label_id: 0
    nms_param { nms_threshold: 0.45 top_k: 40 } code_type: CENTER_SIZE keep_top_k: 20 confidence_threshold: 0.3 } }
"""


def ssd_head_weights() -> dict[str, list[Array]]:
    return {"conv": [rand(6, 3, 3, 3, seed=20), rand(6, seed=21) * 0.1],
            "norm": [rand(6, seed=22, low=5, high=15)],
            "loc": [rand(16, 6, 1, 1, seed=23) * 0.1, rand(16, seed=24) * 0.1],
            "conf": [rand(12, 6, 1, 1, seed=25) * 0.05, rand(12, seed=26) * 0.1]}


def test_ssd_head_matches_opencv_blob_by_blob(tmp_path: Path) -> None:
    x = rand(2, 3, 24, 32, seed=27)
    weights = ssd_head_weights()
    net = parse_prototxt(input_layers({"data": x.shape}) + SSD_HEAD)
    model = convert(net, weights, outputs=["norm", "loc_flat", "conf_out", "prior", "det"])
    with torch.no_grad():
        ours = {name: value.numpy() for name, value in model(torch.from_numpy(x)).items()}
    for name in ("norm", "loc_flat", "conf_out", "prior"):
        reference = opencv_run(tmp_path, SSD_HEAD, {"data": x}, name, weights)
        assert np.abs(ours[name] - reference).max() <= 1e-5 * max(1.0, float(np.abs(reference).max())), name
    reference = opencv_rows(opencv_run(tmp_path, SSD_HEAD, {"data": x}, "det", weights))
    rows = ours["det"][0, 0]
    assert len(rows) > 5 and set(rows[:, 0]) == {0, 1}
    np.testing.assert_array_equal(rows[:, :2], reference[:, :2])
    np.testing.assert_allclose(rows[:, 2], reference[:, 2], rtol=0, atol=1e-5)
    np.testing.assert_allclose(rows[:, 3:], reference[:, 3:], rtol=0, atol=1e-4)


def test_ssd_head_exports_to_a_standalone_model_py() -> None:
    """model.py copies modules/detection.py whole: the exported net computes the same detections."""
    x = torch.from_numpy(rand(1, 3, 24, 32, seed=28))
    model = convert(parse_prototxt(input_layers({"data": (1, 3, 24, 32)}) + SSD_HEAD), ssd_head_weights())
    namespace: dict = {"__name__": "exported_model"}
    exec(compile(generate_code(model), "model.py", "exec"), namespace)
    standalone = namespace["Net"]()
    standalone.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(standalone.eval()(x), model(x))
