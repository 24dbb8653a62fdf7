"""``caffe2torch compare``: layer-by-layer differences against OpenCV's dnn, and the first divergence."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from caffe2torch.caffe_proto import read_prototxt, write_caffemodel
from caffe2torch.cli import main
from caffe2torch.converter import registered
from caffe2torch.converter.layers.eltwise import Axpy
from caffe2torch.runtime.compare import compare_layers, difference
from tests.conftest import shared_path
from caffe2torch.testing import seeded_weights, smooth_images

pytest.importorskip("cv2")


def seeded_model(stem: str, folder: Path) -> tuple[Path, Path]:
    """A release prototxt and a caffemodel of seeded, calibrated weights for it."""
    prototxt = shared_path("senet", "models", f"{stem}.prototxt")
    net = read_prototxt(prototxt)
    caffemodel = folder / f"{stem}.caffemodel"
    write_caffemodel(net, seeded_weights(net, smooth_images(2, seed=1)), caffemodel)
    return prototxt, caffemodel


@pytest.fixture(scope="module")
def inception(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return seeded_model("SE-BN-Inception", tmp_path_factory.mktemp("inception"))


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return seeded_model("SE-ResNet-50", tmp_path_factory.mktemp("resnet50"))


class SwappedAxpy(Axpy):
    """Axpy on the wrong branch: scales the shortcut y and adds the residual x (OpenCV's own mistake)."""

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super().forward(a, y, x)


@pytest.fixture
def our_axpy_swapped() -> Iterator[None]:
    """Make our converter wrong at every Axpy layer; the reference is untouched."""
    with registered("Axpy", lambda ctx: SwappedAxpy(), bottoms=3, tops=1):
        yield


def test_every_layer_of_se_bn_inception_agrees_with_opencv(inception) -> None:
    prototxt, caffemodel = inception
    result = compare_layers(prototxt, caffemodel)
    net = read_prototxt(prototxt)
    assert [layer.layer for layer in result.layers] == [layer.name for layer in net.layer if layer.type != "Input"]
    assert result.first_divergence is None
    assert max(layer.max_rel for layer in result.layers) < result.tolerance / 10
    assert {layer.type for layer in result.layers} >= {"Convolution", "BatchNorm", "Scale", "Pooling", "Concat",
                                                        "Sigmoid", "Reshape", "InnerProduct", "Softmax"}


def test_the_first_diverging_layer_is_named(resnet50, our_axpy_swapped) -> None:
    prototxt, caffemodel = resnet50
    result = compare_layers(prototxt, caffemodel)
    first = result.first_divergence
    assert first is not None and (first.layer, first.type) == ("conv2_1", "Axpy")
    assert first.max_rel > 0.1
    before = result.layers[:[layer.layer for layer in result.layers].index("conv2_1")]
    assert before and not any(layer.diverges for layer in before)


def test_cli_reports_agreement_and_writes_json(inception, tmp_path: Path) -> None:
    prototxt, caffemodel = inception
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["compare", str(prototxt), str(caffemodel), "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "all 371 layers agree with opencv within 0.001" in result.output
    assert "inception_3a_scale" in result.output  # every layer is listed
    data = json.loads(report.read_text())
    assert data["first_divergence"] is None and len(data["layers"]) == 371
    again = CliRunner().invoke(main, ["compare", str(prototxt), str(caffemodel), "--json", str(report)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_cli_names_the_first_divergence_and_fails(resnet50, our_axpy_swapped, tmp_path: Path) -> None:
    prototxt, caffemodel = resnet50
    result = CliRunner().invoke(main, ["compare", str(prototxt), str(caffemodel)])
    assert result.exit_code == 1, result.output
    assert "first divergence: layer 'conv2_1' (Axpy)" in result.output


def test_cli_preprocesses_an_image_with_the_zoo_preset(inception, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    prototxt, caffemodel = inception
    picture = tmp_path / "picture.png"
    cv2.imwrite(str(picture), (smooth_images(1, size=300, mean=(0, 0, 0))[0].transpose(1, 2, 0)).astype(np.uint8))
    result = CliRunner().invoke(main, ["compare", str(prototxt), str(caffemodel), "--input", str(picture),
                                       "--json", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report.json").read_text())["input"] == str(picture)


def test_pycaffe_reference_without_caffe_is_a_clear_error(inception, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "caffe", None)  # import caffe raises ImportError
    prototxt, caffemodel = inception
    result = CliRunner().invoke(main, ["compare", str(prototxt), str(caffemodel), "--reference", "pycaffe"])
    assert result.exit_code == 2
    assert "pycaffe reference needs Caffe's Python module" in result.output


def test_difference_flags_shape_nan_and_scale() -> None:
    reference = np.array([[1.0, -4.0], [0.5, 2.0]], np.float32)
    close = difference("a", "ReLU", reference + 1e-4, reference, 1e-3)
    assert not close.diverges and close.max_abs == pytest.approx(1e-4, rel=1e-2)
    assert close.max_rel == pytest.approx(1e-4 / 4, rel=1e-2)  # relative to the largest magnitude, 4
    assert difference("a", "ReLU", reference + 1e-2, reference, 1e-3).diverges
    shape = difference("a", "ReLU", reference[:1], reference, 1e-3)
    assert shape.diverges and math.isinf(shape.max_abs) and "shape" in shape.note
    nan = reference.copy()
    nan[0, 0] = np.nan
    assert difference("a", "ReLU", nan, reference, 1e-3).diverges
    assert not difference("a", "ReLU", nan, nan, 1e-3).diverges
    zeros = np.zeros(3, np.float32)
    assert not difference("a", "ReLU", zeros, zeros, 1e-3).diverges
    assert difference("a", "ReLU", zeros + 1e-9, zeros, 1e-3).diverges
