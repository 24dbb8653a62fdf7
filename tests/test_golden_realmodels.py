"""Golden tests on real Caffe files (``../shared/realmodels``): trained weights written by real Caffe
installations, in the current, legacy V1 and HDF5 forms, checked against OpenCV's dnn and against the
results Caffe itself gave.  Images are read with OpenCV here, independently of our preprocessing.  The
optimized graph (``caffe2torch.optimize``, what ``verify`` runs) is held to the faithful one's tolerances."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.caffe_proto import read_blob
from caffe2torch.runtime.reference import opencv_forward
from tests.conftest import shared_path

cv2 = pytest.importorskip("cv2")

MNIST_SCALE = np.float32(0.00390625)  # the tutorial data layer's scale: pixel / 256
NSFW_MEAN_BGR = np.array([104, 117, 123], np.float32).reshape(3, 1, 1)
CIFAR_IMAGES = ("dog10", "cat10", "truck10")
CIFAR_CAFFE_CLASSES = [5, 3, 9]  # what Caffe's own run of prediction_example.prototxt predicted


def read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (gzip): big-endian magic (0, 0, type 0x08 = uint8, number of axes), the axes as
    big-endian int32, then the bytes."""
    data = gzip.decompress(path.read_bytes())
    assert data[:3] == b"\x00\x00\x08", f"{path}: not an idx file of unsigned bytes"
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


GRAPHS = ("faithful", "optimized")  # caffe2torch.load's graph, and caffe2torch.optimize's (verify's default)


def run_ours(prototxt, weights, inputs: np.ndarray, *, output: str, batch: int,
             graph: str = "faithful") -> np.ndarray:
    model = caffe2torch.load(prototxt, weights, outputs=[output], input_shape=(batch, *inputs.shape[1:]))
    if graph == "optimized":
        model = caffe2torch.optimize(model)
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(inputs[i:i + batch]))[output].numpy()
                               for i in range(0, len(inputs), batch)])


def run_opencv(prototxt, weights, inputs: np.ndarray, *, output: str, batch: int) -> np.ndarray:
    return np.concatenate([opencv_forward(prototxt, weights, inputs[i:i + batch], [output])[output]
                           for i in range(0, len(inputs), batch)])


@pytest.mark.parametrize("graph", GRAPHS)
def test_lenet_classifies_all_mnist_test_digits_as_opencv_does(graph: str) -> None:
    folder = shared_path("realmodels", "lenet")
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    inputs = images[:, None].astype(np.float32) * MNIST_SCALE
    prototxt, weights = folder / "lenet.prototxt", folder / "lenet_iter_10000.caffemodel"
    ours = run_ours(prototxt, weights, inputs, output="prob", batch=2_000, graph=graph)
    reference = run_opencv(prototxt, weights, inputs, output="prob", batch=2_000)
    np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
    assert np.abs(ours - reference).max() <= 1e-5
    assert (ours.argmax(axis=1) == labels).mean() >= 0.99


def nsfw_input(path: Path) -> np.ndarray:
    """open_nsfw's preprocessing: 256 x 256, center 224 crop, BGR, minus the mean."""
    image = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (256, 256))[16:240, 16:240]
    return image.transpose(2, 0, 1).astype(np.float32) - NSFW_MEAN_BGR


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("count", [pytest.param(12, id="12-images"),
                                   pytest.param(100, id="100-images", marks=pytest.mark.slow)])
def test_open_nsfw_matches_opencv_on_real_photographs(count: int, graph: str) -> None:
    folder = shared_path("realmodels", "open_nsfw")
    photos = sorted(shared_path("realmodels", "imagenet-val-100").glob("*.JPEG"))
    assert len(photos) == 100
    inputs = np.stack([nsfw_input(path) for path in photos[:count]])
    prototxt, weights = folder / "deploy.prototxt", folder / "resnet_50_1by2_nsfw.caffemodel"
    ours = run_ours(prototxt, weights, inputs, output="prob", batch=25, graph=graph)
    reference = run_opencv(prototxt, weights, inputs, output="prob", batch=25)
    assert np.abs(ours - reference).max() <= 1e-4


def cifar_inputs(folder: Path) -> np.ndarray:
    """dog10, cat10, truck10 as Caffe's prediction example fed them: BGR as OpenCV reads them, minus the
    mean image."""
    mean = read_blob(folder / "mean.binaryproto")
    assert mean.shape == (1, 3, 32, 32)
    images = np.stack([cv2.imread(str(folder / f"{name}.png"), cv2.IMREAD_COLOR).transpose(2, 0, 1)
                       for name in CIFAR_IMAGES]).astype(np.float32)
    return images - mean


@pytest.mark.parametrize("graph", GRAPHS)
def test_cifar10_v1_caffemodel_predicts_what_caffe_predicted(graph: str) -> None:
    folder = shared_path("realmodels", "cifar10_quick")
    inputs = cifar_inputs(folder)
    prototxt, weights = folder / "cifar10_quick.prototxt", folder / "cifar10_quick_v1_iter_5000.caffemodel"
    ours = run_ours(prototxt, weights, inputs, output="prob", batch=len(inputs), graph=graph)
    assert ours.argmax(axis=1).tolist() == CIFAR_CAFFE_CLASSES
    reference = run_opencv(prototxt, weights, inputs, output="prob", batch=len(inputs))
    assert np.abs(ours - reference).max() <= 1e-5


def test_cifar10_v1_text_prototxt_converts_and_predicts_the_same() -> None:
    """The legacy V1 ``layers`` form with an IMAGE_DATA input (a mean_file, a label top), Accuracy, loss
    and ArgMax layers: the upgraded TEST-phase net must compute the same probabilities."""
    folder = shared_path("realmodels", "cifar10_quick")
    inputs = cifar_inputs(folder)
    weights = folder / "cifar10_quick_v1_iter_5000.caffemodel"
    legacy = run_ours(folder / "prediction_example.prototxt", weights, inputs, output="prob", batch=len(inputs))
    current = run_ours(folder / "cifar10_quick.prototxt", weights, inputs, output="prob", batch=len(inputs))
    assert legacy.argmax(axis=1).tolist() == CIFAR_CAFFE_CLASSES
    np.testing.assert_array_equal(legacy, current)


@pytest.mark.parametrize("graph", GRAPHS)
def test_cifar10_hdf5_snapshot_matches_opencv(graph: str) -> None:
    """Caffe's HDF5 snapshot (another training run): OpenCV cannot read HDF5, so the reference gets its
    blobs rewritten as a binary caffemodel; both sides must agree on real and on random-ish inputs."""
    folder = shared_path("realmodels", "cifar10_quick")
    prototxt, weights = folder / "cifar10_quick.prototxt", folder / "cifar10_quick_iter_5000.caffemodel.h5"
    rng = np.random.default_rng(0)
    inputs = np.concatenate([cifar_inputs(folder), rng.uniform(-128, 128, (5, 3, 32, 32)).astype(np.float32)])
    for output in ("ip2", "prob"):
        ours = run_ours(prototxt, weights, inputs, output=output, batch=len(inputs), graph=graph)
        reference = run_opencv(prototxt, weights, inputs, output=output, batch=len(inputs))
        assert np.abs(ours - reference).max() <= 1e-4  # logits reach about 16
        np.testing.assert_array_equal(ours.argmax(axis=1), reference.argmax(axis=1))
