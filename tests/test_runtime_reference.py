"""runtime.reference: what OpenCV's dnn is asked for is what Caffe computes (names, in-place blobs, Axpy,
data layers, the fork layers' stand-ins), on small nets whose every value can be computed by hand or by the
numpy transcriptions of the forks' C++ in tests/test_fork_layers; and ``compare --reference opencv`` on the
real fork models whose layers OpenCV lacks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from caffe2torch.caffe_proto import parse_prototxt, write_hdf5
from caffe2torch.errors import InputError
from caffe2torch.runtime.reference import (AXPY_TYPE, OPENCV_LAYER_TYPES, PSPNET_BN_FIELDS, STAND_INS, opencv_forward,
                                           parse_parameters, standin_type, standins_registered)
from tests.conftest import shared_path
from tests.test_converter_layers import conv_ref, input_layers, layer, rand
from tests.test_detection_layers import detection_layer, detection_output_ref, opencv_rows, ssd_inputs
from tests.test_fork_layers import (bn_blobs, bn_ref, crop_center_ref, depthwise_ref, interp_ref, interp_size_ref,
                                    pspnet_blobs, pspnet_bn_ref, relu6_ref, reorg_ref, shuffle_channel_ref,
                                    upsample_ref, yolo_upsample_ref)

cv2 = pytest.importorskip("cv2")

IN_PLACE = """
name: "in_place"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "x"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }
layer { name: "double" type: "Power" bottom: "x" top: "x" power_param { scale: 2 } }
"""

AXPY = """
name: "axpy"
layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 4 dim: 1 dim: 1 } } }
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 dim: 5 dim: 5 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 1 dim: 4 dim: 5 dim: 5 } } }
layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "out" }
"""

TRAINING = """
name: "training"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
layer { name: "mnist_test" type: "Data" top: "data" top: "label" include { phase: TEST } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "slice" type: "Slice" bottom: "ip" top: "first" top: "rest" slice_param { slice_point: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "train_only" type: "ReLU" bottom: "ip" top: "relu" include { phase: TRAIN } }
"""


def test_in_place_blobs_are_read_per_layer() -> None:
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(2, 2, 1, 1)).astype(np.float32), np.array([0.5, -0.5], np.float32)
    data = rng.normal(size=(1, 2, 3, 3)).astype(np.float32)
    result = opencv_forward(parse_prototxt(IN_PLACE), {"conv": [weight, bias]}, data,
                            ["data", "conv", "relu", "double", "x"])
    conv = np.einsum("oi,nihw->nohw", weight[:, :, 0, 0], data) + bias.reshape(1, 2, 1, 1)
    assert (conv < 0).any()  # so the ReLU changes something
    np.testing.assert_array_equal(result["data"], data)
    np.testing.assert_allclose(result["conv"], conv, rtol=1e-6, atol=1e-6)  # before the in-place ReLU
    np.testing.assert_allclose(result["relu"], np.maximum(conv, 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result["double"], 2 * np.maximum(conv, 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(result["x"], result["double"])  # a blob name: its last value


def test_hdf5_weights_behind_a_user_block_are_rewritten_for_opencv(tmp_path: Path) -> None:
    net = parse_prototxt(IN_PLACE)
    rng = np.random.default_rng(3)
    weights = {"conv": [rng.normal(size=(2, 2, 1, 1)).astype(np.float32), np.array([0.5, -0.5], np.float32)]}
    write_hdf5(net, weights, tmp_path / "plain.h5")
    blocked = tmp_path / "blocked.h5"  # its HDF5 signature at byte 512, where OpenCV's parser sees garbage
    with h5py.File(tmp_path / "plain.h5", "r") as source, h5py.File(blocked, "w", userblock_size=512) as copy:
        source.copy(source["data"], copy)
    data = rng.normal(size=(1, 2, 3, 3)).astype(np.float32)
    expected = opencv_forward(net, weights, data, ["conv"])["conv"]
    np.testing.assert_array_equal(opencv_forward(net, blocked, data, ["conv"])["conv"], expected)


def test_axpy_scales_the_second_bottom_at_any_batch_size() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(3, 4, 1, 1)).astype(np.float32)
    x, y = (rng.normal(size=(3, 4, 5, 5)).astype(np.float32) for _ in range(2))
    result = opencv_forward(parse_prototxt(AXPY), {}, {"a": a, "x": x, "y": y}, ["axpy"])
    np.testing.assert_array_equal(result["axpy"], a * x + y)  # exact: one multiply and one add


def test_axpy_layer_is_registered_only_while_the_reference_runs(tmp_path) -> None:
    prototxt = tmp_path / "renamed.prototxt"
    prototxt.write_text(AXPY.replace('type: "Axpy"', f'type: "{AXPY_TYPE}"'))
    arrays = {name: np.ones((1, 4, 1, 1) if name == "a" else (1, 4, 5, 5), np.float32) for name in "axy"}

    def run_renamed_net() -> np.ndarray:
        net = cv2.dnn.readNetFromCaffe(str(prototxt))
        for name, array in arrays.items():
            net.setInput(array, name)
        return net.forward()

    with standins_registered():
        np.testing.assert_array_equal(run_renamed_net(), np.full((1, 4, 5, 5), 2, np.float32))
    opencv_forward(parse_prototxt(AXPY), {}, arrays, ["axpy"])
    with pytest.raises(cv2.error):
        run_renamed_net()


def test_training_net_runs_in_its_test_phase_form() -> None:
    rng = np.random.default_rng(2)
    weight, bias = rng.normal(size=(3, 6)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    data = rng.normal(size=(4, 6)).astype(np.float32)
    result = opencv_forward(parse_prototxt(TRAINING), {"ip": [weight, bias]}, data, ["ip", "first"])
    np.testing.assert_allclose(result["ip"], data @ weight.T + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result["first"], result["ip"][:, :1])


def test_unreadable_names_are_clear_errors() -> None:
    net = parse_prototxt(TRAINING)
    weights = {"ip": [np.zeros((3, 6), np.float32), np.zeros(3, np.float32)]}
    data = np.zeros((1, 6), np.float32)
    with pytest.raises(InputError, match="output 1 of layer 'slice'"):
        opencv_forward(net, weights, data, ["rest"])
    with pytest.raises(InputError, match="neither a layer nor a blob"):
        opencv_forward(net, weights, data, ["train_only"])
    with pytest.raises(InputError, match="no array given for the net input"):
        opencv_forward(parse_prototxt(AXPY), {}, {"a": np.ones((1, 4, 1, 1), np.float32)}, ["axpy"])


# --- the fork layers' stand-ins -------------------------------------------------------------------------------


def fork_layer(layer_type: str, params: str, inputs: dict[str, np.ndarray],
               weights: dict[str, list[np.ndarray]] | None = None) -> np.ndarray:
    """OpenCV's output of one layer ``l`` of ``layer_type`` on ``inputs``, as the reference runs it."""
    net = parse_prototxt(input_layers({name: a.shape for name, a in inputs.items()}) + "\n"
                         + layer("l", layer_type, list(inputs), ["l"], params))
    return opencv_forward(net, weights or {}, inputs, ["l"])["l"]


@pytest.mark.parametrize("params, size", [("upsample_param { scale: 2 }", None),
                                          ("upsample_param { scale_h: 2 scale_w: 3 }", (6, 12)),
                                          ("upsample_param { upsample_h: 7 upsample_w: 9 }", (7, 9))])
def test_upsample_stand_in(params: str, size: tuple[int, int] | None) -> None:
    """OpenCV has no Upsample layer."""
    x = rand(2, 3, 3, 4, seed=1)
    expected = yolo_upsample_ref(x, 2) if size is None else upsample_ref(x, *size)
    np.testing.assert_array_equal(fork_layer("Upsample", params, {"data": x}), expected)


@pytest.mark.parametrize("params, stride, pad, dilation, bias", [
    ("num_output: 32 group: 2 kernel_size: 3 stride: 2", 2, 0, 1, True),  # num_output and group ignored
    ("kernel_size: 3 pad: 2 dilation: 2 bias_term: false", 1, 2, 2, False),
    ("num_output: 6 group: 6 kernel_h: 3 kernel_w: 3 pad_h: 1 pad_w: 1", 1, 1, 1, True),
])
def test_convolution_depthwise_stand_in(params: str, stride: int, pad: int, dilation: int, bias: bool) -> None:
    """OpenCV reads ConvolutionDepthwise as a Convolution of the given num_output and group (an error here)."""
    x, w, b = rand(2, 6, 7, 6, seed=2), rand(6, 1, 3, 3, seed=3), rand(6, seed=4)
    result = fork_layer("ConvolutionDepthwise", f"convolution_param {{ {params} }}", {"data": x},
                        {"l": [w, b] if bias else [w]})
    expected = depthwise_ref(x, w, b if bias else None, stride=stride, pad=pad, dilation=dilation)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_depthwise_convolution_is_opencvs_convolution_with_its_group() -> None:
    """eric612's DepthwiseConvolution is Caffe's Convolution with the parameters as given: group 3 of 6 too."""
    x, w, b = rand(2, 6, 5, 5, seed=5), rand(6, 2, 3, 3, seed=6), rand(6, seed=7)
    params = "convolution_param { num_output: 6 group: 3 kernel_size: 3 pad: 1 }"
    result = fork_layer("DepthwiseConvolution", params, {"data": x}, {"l": [w, b]})
    expected = conv_ref(x, w, b, stride=(1, 1), pad=(1, 1), dilation=(1, 1), group=3)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("legacy_2d", [False, True])
def test_bn_stand_in(legacy_2d: bool) -> None:
    """OpenCV has no BN layer (PSPNet's: four blobs, eps added to the stored variance)."""
    x, blobs = rand(2, 4, 3, 5, seed=8), bn_blobs(4, seed=9, legacy_2d=legacy_2d)
    result = fork_layer("BN", "bn_param { eps: 0.001 }", {"data": x}, {"l": blobs})
    np.testing.assert_allclose(result, bn_ref(x, *(blob.reshape(-1) for blob in blobs), 1e-3), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("moving_average", [True, False])
@pytest.mark.parametrize("var_eps", [None, 1e-3])
@pytest.mark.parametrize("shape, axis", [((2, 3, 4, 5), 1), ((2, 3, 4, 5), 2), ((3, 4, 5), 2), ((4, 3), 1)])
def test_pspnet_bn_stand_in(moving_average: bool, var_eps: float | None, shape: tuple[int, ...], axis: int) -> None:
    """hszhao/PSPNet's BN (a layer giving one of its own fields): var_eps (default 1e-10) on the variance, eps
    unused; the stored statistics with moving_average, the batch's own without; per index of ``axis``."""
    x = rand(*shape, seed=20) * 2 + 0.5
    channels = (shape + (1,) * (4 - len(shape)))[axis]
    blobs = pspnet_blobs(channels, seed=21, axis=axis)
    fields = [f"moving_average: {str(moving_average).lower()}", f"axis: {axis}", "eps: 0.5"]  # eps: never read
    if var_eps is not None:
        fields.append(f"var_eps: {var_eps}")
    params = "bn_param { " + " ".join(fields) + " }"
    result = fork_layer("BN", params, {"data": x}, {"l": blobs})
    expected = pspnet_bn_ref(x, *(blob.reshape(-1) for blob in blobs), 1e-10 if var_eps is None else var_eps,
                             moving_average, axis)
    assert result.shape == x.shape
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    if not moving_average:  # the batch's own statistics: the stored ones play no part, and need not be there
        np.testing.assert_array_equal(fork_layer("BN", params, {"data": x}, {"l": blobs[:2]}), result)


def test_stand_in_outputs_of_three_axes_keep_them() -> None:
    """OpenCV would read a 3-D numpy output as a 2-D image of channels (and refuse it as the wrong size)."""
    x, blobs = rand(2, 4, 5, seed=19), bn_blobs(4, seed=9)
    result = fork_layer("BN", "bn_param { eps: 0.001 }", {"data": x}, {"l": blobs})
    np.testing.assert_allclose(result, bn_ref(x, *(blob.reshape(-1) for blob in blobs), 1e-3), rtol=1e-6, atol=1e-6)


def test_pspnet_bn_stand_in_adds_var_eps_not_eps() -> None:
    """PSPNet's published nets (moving_average: true, no var_eps) on a stored variance of 1e-6: 1e-10 is added,
    +-0.99995; yjxiong's eps 1e-5 would give +-0.30151.  moving_average false: [1, 3] normalised to [-1, 1]."""
    x = np.array([0.001, -0.001], np.float32).reshape(1, 1, 1, 2)
    blobs = [np.array(v, np.float32).reshape(1, 1, 1, 1) for v in (1.0, 0.0, 0.0, 1e-6)]
    pspnet = fork_layer("BN", "bn_param { moving_average: true }", {"data": x}, {"l": blobs})
    np.testing.assert_allclose(pspnet.reshape(-1), [0.99995, -0.99995], rtol=1e-6)
    yjxiong = fork_layer("BN", "bn_param { eps: 1e-5 }", {"data": x}, {"l": blobs})
    np.testing.assert_allclose(yjxiong.reshape(-1), [0.30151, -0.30151], rtol=1e-4)
    batch = fork_layer("BN", "bn_param { moving_average: false }", {"data": np.array([[[[1, 3]]]], np.float32)},
                       {"l": blobs[:2]})
    np.testing.assert_allclose(batch.reshape(-1), [-1, 1], rtol=1e-6)


def test_pspnet_bn_fields_are_the_converters() -> None:
    """The stand-in tells the forks apart by the same fields as the converter."""
    from caffe2torch.converter.layers.batch_norm import PSPNET_ONLY_FIELDS

    assert PSPNET_BN_FIELDS == PSPNET_ONLY_FIELDS


@pytest.mark.parametrize("params, stride, pad, dilation, group, bias", [
    ("num_output: 4 kernel_size: 3 pad: 2 hole: 2", (1, 1), (2, 2), (2, 2), 1, True),
    ("num_output: 1 kernel_size: 3 pad: 4 hole: 4 bias_term: false", (1, 1), (4, 4), (4, 4), 1, False),
    ("num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 3 hole_h: 2 hole_w: 3 stride: 2", (2, 2), (1, 3),
     (2, 3), 1, True),
    ("num_output: 4 group: 2 kernel_size: 3 stride_h: 2 stride_w: 1 hole: 1", (2, 1), (0, 0), (1, 1), 2, True),
])
def test_hole_convolution_is_opencvs_dilated_convolution(params: str, stride: tuple[int, int],
                                                         pad: tuple[int, int], dilation: tuple[int, int], group: int,
                                                         bias: bool) -> None:
    """OpenCV has no HoleConvolution: it gets a Convolution with the taps ``hole`` (hole_h, hole_w) apart as its
    dilation."""
    out = 1 if "num_output: 1 " in params else 4
    kernel = (3, 2) if "kernel_w: 2" in params else (3, 3)
    x = rand(2, 4, 9, 10, seed=22)
    w, b = rand(out, 4 // group, *kernel, seed=23), rand(out, seed=24)
    result = fork_layer("HoleConvolution", f"convolution_param {{ {params} }}", {"data": x},
                        {"l": [w, b] if bias else [w]})
    expected = conv_ref(x, w, b if bias else None, stride, pad, dilation, group)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_hole_convolution_and_axpy_fast_are_handed_over_rewritten(tmp_path: Path) -> None:
    """In the prototxt OpenCV reads, HoleConvolution is a Convolution whose dilation is the hole, the rest of its
    parameters kept and its weights found by its name (a binary caffemodel read by OpenCV itself); AxpyFast is
    the Axpy stand-in's type."""
    from caffe2torch.caffe_proto import write_caffemodel
    from caffe2torch.converter.deploy import deploy_form
    from caffe2torch.runtime.reference import _opencv_deploy

    net = parse_prototxt(input_layers({"a": (1, 2), "x": (1, 2, 5, 5)}) + "\n"
                         + layer("hole", "HoleConvolution", ["x"], ["hole"],
                                 "convolution_param { num_output: 2 kernel_size: 3 pad_h: 2 pad_w: 3 "
                                 "hole_h: 2 hole_w: 3 }")
                         + "\n" + layer("axpy", "AxpyFast", ["a", "hole", "x"], ["axpy"]))
    deploy = deploy_form(net)
    deployed = parse_prototxt(_opencv_deploy(deploy).prototxt(layer_types=OPENCV_LAYER_TYPES))
    hole, axpy = deployed.layer[1:]
    assert (hole.type, axpy.type) == ("Convolution", AXPY_TYPE)
    param = hole.convolution_param
    assert list(param.dilation) == [2, 3] and (param.pad_h, param.pad_w, param.num_output) == (2, 3, 2)
    assert not any(param.HasField(name) for name in ("hole", "hole_h", "hole_w"))
    original = parse_prototxt(deploy.prototxt()).layer[1]  # the deploy form itself is left as it was
    assert (original.type, original.convolution_param.hole_w, list(original.convolution_param.dilation)) == (
        "HoleConvolution", 3, [])
    inputs = {"a": rand(1, 2, seed=29), "x": rand(1, 2, 5, 5, seed=30)}
    w, b = rand(2, 2, 3, 3, seed=31), rand(2, seed=32)
    write_caffemodel(net, {"hole": [w, b]}, tmp_path / "hole.caffemodel")
    result = opencv_forward(net, tmp_path / "hole.caffemodel", inputs, ["hole", "axpy"])
    hole_ref = conv_ref(inputs["x"], w, b, (1, 1), (2, 3), (2, 3), 1)
    np.testing.assert_allclose(result["hole"], hole_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result["axpy"], inputs["a"].reshape(1, 2, 1, 1) * result["hole"] + inputs["x"])


@pytest.mark.parametrize("params, message", [
    ("num_output: 2 kernel_size: 3", "gives no hole"),
    ("num_output: 2 kernel_size: 3 hole: 2 hole_h: 2 hole_w: 2", "give hole, or hole_h and hole_w"),
    ("num_output: 2 kernel_size: 3 hole_w: 2", "give hole, or hole_h and hole_w"),
])
def test_hole_convolution_without_its_holes_is_refused(params: str, message: str) -> None:
    """What hole_conv_layer.cpp refuses is not handed to OpenCV (as a Convolution it would run undilated)."""
    with pytest.raises(InputError, match=f"HoleConvolution 'l'.*{message}"):
        fork_layer("HoleConvolution", f"convolution_param {{ {params} }}", {"data": rand(1, 2, 6, 6)},
                   {"l": [rand(2, 2, 3, 3), rand(2)]})


@pytest.mark.parametrize("a_shape", [(2, 3), (2, 3, 1, 1)])
def test_axpy_fast_is_handed_to_the_axpy_stand_in(a_shape: tuple[int, ...]) -> None:
    """waifu2x-caffe's AxpyFast (OpenCV has none): a * x + y, a the SE gate of N x C (x 1 x 1)."""
    a, x, y = rand(*a_shape, seed=25), rand(2, 3, 4, 5, seed=26), rand(2, 3, 4, 5, seed=27)
    result = fork_layer("AxpyFast", "", {"a": a, "x": x, "y": y})
    np.testing.assert_array_equal(result, a.reshape(2, 3, 1, 1) * x + y)  # exact: one multiply and one add


@pytest.mark.parametrize("code_type", ["CORNER", "CENTER_SIZE"])
def test_detection_output_clip_reaches_opencv(code_type: str) -> None:
    """OpenCV's own DetectionOutput clip (field 1000 of its schema and ours) is written into the deploy prototxt
    and OpenCV applies it: its rows are the numpy reference's with clip, and not those without."""
    inputs = ssd_inputs(2, 4, loc_scale=1.5, seed=28)
    params = dict(num_classes=4, share_location=True, background_label_id=0, keep_top_k=100,
                  confidence_threshold=0.05, nms_threshold=0.45, code_type=code_type)
    for clip in (True, False):
        net = parse_prototxt(input_layers({name: a.shape for name, a in inputs.items()}) + "\n"
                             + detection_layer(clip=clip, **params))
        rows = opencv_rows(opencv_forward(net, {}, inputs, ["det"])["det"])
        expected = detection_output_ref(inputs["loc"], inputs["conf"], inputs["prior"], clip=clip, **params)[0, 0]
        assert rows.shape == expected.shape
        np.testing.assert_array_equal(rows[:, :3], expected[:, :3])
        np.testing.assert_allclose(rows[:, 3:], expected[:, 3:], rtol=0, atol=1e-6)
        assert (rows[:, 3:].min() >= 0 and rows[:, 3:].max() <= 1) == clip


def test_crop_center_stand_in_gets_every_crop_size() -> None:
    """OpenCV has no CropCenter layer, and reading crop_center_param itself it keeps only the last crop_size."""
    x = rand(3, 4, 6, 7, seed=10)
    params = "crop_center_param { crop_size: 0 crop_size: 1 crop_size: 1 crop_size: 2 }"
    np.testing.assert_array_equal(fork_layer("CropCenter", params, {"data": x}), crop_center_ref(x, (0, 1, 1, 2)))


@pytest.mark.parametrize("slope", [0.0, 0.25, -0.5])
def test_relu6_stand_in_reads_eric612s_slope(slope: float) -> None:
    """OpenCV's ReLU6 ignores relu6_param.negative_slope; read by OpenCV, its minus sign would be lost."""
    x = rand(2, 3, 4, 4, seed=11) * 5
    params = f"relu6_param {{ negative_slope: {slope} }}" if slope else ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # relu6_param is no field of our schema: kept as text, with a warning
        result = fork_layer("ReLU6", params, {"data": x})
    np.testing.assert_array_equal(result, relu6_ref(x, slope))


@pytest.mark.parametrize("shape", [(2, 6, 3, 4), (3, 6)])
def test_shuffle_channel_stand_in(shape: tuple[int, ...]) -> None:
    """OpenCV's ShuffleChannel refuses a 2-D input; the fork's top is 4-D whatever its bottom."""
    x = rand(*shape, seed=12)
    result = fork_layer("ShuffleChannel", "shuffle_channel_param { group: 3 }", {"data": x})
    np.testing.assert_array_equal(result, shuffle_channel_ref(x, 3))


@pytest.mark.parametrize("params, rule, pad_beg, pad_end", [
    ("zoom_factor: 2 pad_beg: -1 pad_end: -1", {"zoom_factor": 2}, -1, -1),  # OpenCV ignores the pads
    ("shrink_factor: 2", {"shrink_factor": 2}, 0, 0),  # OpenCV: a 0 x 0 output
    ("zoom_factor: 3 shrink_factor: 2 pad_end: -2", {"zoom_factor": 3, "shrink_factor": 2}, 0, -2),
    ("shrink_factor: 2 height: 9 width: 9", {"shrink_factor": 2}, 0, 0),  # the fork's order of rules
    ("height: 4 width: 6 pad_beg: -1 pad_end: -1", {"height": 4, "width": 6}, -1, -1),  # a cropped copy
])
def test_interp_stand_in(params: str, rule: dict[str, int], pad_beg: int, pad_end: int) -> None:
    x = rand(2, 3, 6, 8, seed=13)
    expected = interp_ref(x, *interp_size_ref(rule, 6 + pad_beg + pad_end, 8 + pad_beg + pad_end), pad_beg, pad_end)
    result = fork_layer("Interp", f"interp_param {{ {params} }}", {"data": x})
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)


def test_interp_stand_in_takes_a_second_bottoms_size() -> None:
    """OpenCV's Interp refuses a second bottom."""
    x, reference = rand(2, 3, 5, 4, seed=14), rand(2, 1, 9, 11, seed=15)
    result = fork_layer("Interp", "interp_param { pad_beg: -1 }", {"data": x, "ref": reference})
    np.testing.assert_allclose(result, interp_ref(x, 9, 11, -1, 0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_reorg_stand_in(reverse: bool) -> None:
    """OpenCV's Reorg is darknet's forward one whatever ``reverse`` says."""
    x = rand(2, 8, 4, 6, seed=16)
    result = fork_layer("Reorg", f"reorg_param {{ stride: 2 reverse: {str(reverse).lower()} }}", {"data": x})
    np.testing.assert_array_equal(result, reorg_ref(x, 2, reverse))


def test_stand_ins_are_registered_only_while_the_reference_runs(tmp_path: Path) -> None:
    x = rand(1, 2, 3, 3, seed=17)
    prototxt = tmp_path / "standin.prototxt"
    prototxt.write_text(input_layers({"data": x.shape}) + "\n"
                        + layer("l", standin_type("Upsample"), ["data"], ["l"], "python_param { param_str: "
                                                                                 "'upsample_param { scale: 2 }' }"))

    def run_renamed_net() -> np.ndarray:
        net = cv2.dnn.readNetFromCaffe(str(prototxt))
        net.setInput(x)
        return net.forward()

    with standins_registered():
        np.testing.assert_array_equal(run_renamed_net(), yolo_upsample_ref(x, 2))
    fork_layer("Upsample", "upsample_param { scale: 2 }", {"data": x})
    with pytest.raises(cv2.error):
        run_renamed_net()
    assert {OPENCV_LAYER_TYPES[layer_type] for layer_type in STAND_INS} == {standin_type(t) for t in STAND_INS}


def test_stand_in_parameters_are_read_from_prototxt_text() -> None:
    parsed = parse_parameters('interp_param { pad_beg: -1 zoom_factor: 2 } crop_center_param { crop_size: 0 '
                              'crop_size: 2 } x { s: "a b" e: ENUM f: 1.5e-05 t: true l: [1, 2] m { k: -3 } }')
    assert parsed["interp_param"] == [{"pad_beg": [-1], "zoom_factor": [2]}]
    assert parsed["crop_center_param"] == [{"crop_size": [0, 2]}]
    assert parsed["x"] == [{"s": ["a b"], "e": ["ENUM"], "f": [1.5e-05], "t": [True], "l": [1, 2], "m": [{"k": [-3]}]}]
    assert parse_parameters("") == {}


# --- compare --reference opencv on the real fork models -------------------------------------------------------


@pytest.mark.parametrize("name, files, input_shape, fork_types", [
    ("yolov3_nano_voc", ("MobileNetV2-YOLOv3-Nano-voc.prototxt", "MobileNetV2-YOLOv3-Nano-voc.caffemodel"),
     "1,3,160,160", {"Upsample"}),
    ("mobilenet_yolov3_lite_lane", ("mobilenet_yolov3_lite_deploy.prototxt",
                                    "mobilenet_yolov3_lite_deploy_iter_50000.caffemodel"),
     "1,3,256,256", {"DepthwiseConvolution"}),
])
def test_cli_compare_passes_on_the_real_fork_models(name: str, files: tuple[str, str], input_shape: str,
                                                    fork_types: set[str], tmp_path: Path) -> None:
    """The two real models with layers OpenCV lacks (at a smaller input than their demos' to keep the test
    short; the golden fork tests run the demo inputs)."""
    from click.testing import CliRunner

    from caffe2torch.cli import main

    prototxt, weights = (shared_path("realmodels", "forks", name, file) for file in files)
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["compare", str(prototxt), str(weights), "--reference", "opencv",
                                       "--input-shape", input_shape, "--json", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["first_divergence"] is None and f"all {len(data['layers'])} layers agree with opencv" in result.output
    assert fork_types <= {entry["type"] for entry in data["layers"]}


PSPNET_WAIFU2X = """
name: "pspnet_waifu2x"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 10 } } }
layer { name: "hole" type: "HoleConvolution" bottom: "data" top: "hole"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 hole: 2 } }
layer { name: "bn_batch" type: "BN" bottom: "hole" top: "bn_batch" bn_param { moving_average: false var_eps: 1e-5 } }
layer { name: "bn_stored" type: "BN" bottom: "bn_batch" top: "bn_stored" bn_param { moving_average: true } }
layer { name: "bn_axis2" type: "BN" bottom: "bn_stored" top: "bn_axis2"
        bn_param { moving_average: true axis: 2 var_eps: 0.001 } }
layer { name: "bn_yjxiong" type: "BN" bottom: "bn_axis2" top: "bn_yjxiong" bn_param { eps: 0.5 } }
layer { name: "relu" type: "ReLU" bottom: "bn_yjxiong" top: "bn_yjxiong" }
layer { name: "hole2" type: "HoleConvolution" bottom: "bn_yjxiong" top: "hole2"
        convolution_param { num_output: 4 kernel_size: 3 pad_h: 1 pad_w: 2 hole_h: 1 hole_w: 2 } }
layer { name: "pool" type: "Pooling" bottom: "hole2" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "gate" type: "Sigmoid" bottom: "fc" top: "gate" }
layer { name: "axpy" type: "AxpyFast" bottom: "gate" bottom: "hole2" bottom: "bn_yjxiong" top: "axpy" }
layer { name: "pool4" type: "Pooling" bottom: "axpy" top: "pool4" pooling_param { pool: AVE global_pooling: true } }
layer { name: "gate4" type: "Sigmoid" bottom: "pool4" top: "gate4" }
layer { name: "axpy4" type: "AxpyFast" bottom: "gate4" bottom: "axpy" bottom: "hole2" top: "axpy4" }
"""


def test_cli_compare_passes_on_pspnet_and_waifu2x_layers(tmp_path: Path) -> None:
    """A small net of PSPNet's HoleConvolution (hole, hole_h/hole_w) and BN (batch statistics with two blobs, stored
    ones, var_eps, axis 2) beside yjxiong's BN, and waifu2x's AxpyFast with an N x C and an N x C x 1 x 1 gate:
    every layer agrees with OpenCV."""
    from click.testing import CliRunner

    from caffe2torch.caffe_proto import write_caffemodel
    from caffe2torch.cli import main

    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(PSPNET_WAIFU2X)
    weights = {"hole": [rand(4, 3, 3, 3, seed=40), rand(4, seed=41)],
               "bn_batch": pspnet_blobs(4, seed=42)[:2], "bn_stored": pspnet_blobs(4, seed=43),
               "bn_axis2": pspnet_blobs(9, seed=44, axis=2), "bn_yjxiong": bn_blobs(4, seed=45),
               "hole2": [rand(4, 4, 3, 3, seed=46) * 0.3, rand(4, seed=47)],
               "fc": [rand(4, 4, seed=48) * 0.5, rand(4, seed=49)]}
    write_caffemodel(parse_prototxt(PSPNET_WAIFU2X), weights, tmp_path / "net.caffemodel")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["compare", str(prototxt), str(tmp_path / "net.caffemodel"), "--reference",
                                       "opencv", "--json", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["first_divergence"] is None and "all 14 layers agree with opencv" in result.output
    assert {"BN", "HoleConvolution", "AxpyFast"} <= {entry["type"] for entry in data["layers"]}
    assert max(entry["max_rel"] for entry in data["layers"]) < 1e-5

