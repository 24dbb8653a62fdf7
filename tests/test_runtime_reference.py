"""runtime.reference: what OpenCV's dnn is asked for is what Caffe computes (names, in-place blobs, Axpy,
data layers), on small nets whose every value can be computed by hand."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from caffe2torch.caffe_proto import parse_prototxt, write_hdf5
from caffe2torch.errors import InputError
from caffe2torch.runtime.reference import AXPY_TYPE, _axpy_registered, opencv_forward

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

    with _axpy_registered():
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
