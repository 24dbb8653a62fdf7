"""Golden tests on four published models of Caffe forks (``../shared/realmodels/forks``): each converts,
and every blob it computes on its repository's sample image, preprocessed as the repository's demo does,
matches OpenCV's dnn; its exported ``model.py`` computes the same in a process without caffe2torch.

OpenCV 4.x runs the SSD layers (Permute, PriorBox, Normalize, DetectionOutput) natively but has neither
darknet2caffe's ``Upsample`` nor eric612's ``DepthwiseConvolution``: the reference runtime
(:mod:`caffe2torch.runtime.reference`) hands it the first as a numpy stand-in written from the fork's C++
and the second as OpenCV's own Convolution, so neither is our modules checked against themselves.  Fusion
and Winograd are off there: fusion corrupts the outputs of folded BatchNorm/Scale layers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.caffe_proto.upgrade import CaffeFormatWarning
from caffe2torch.runtime.reference import opencv_forward
from tests.conftest import shared_path

cv2 = pytest.importorskip("cv2")

MODEL_NAMES = ("ultraface_rfb320", "yufacedetectnet_v2", "yolov3_nano_voc", "mobilenet_yolov3_lite_lane")
BLOB_TOLERANCE = 1e-4  # of the blob's largest magnitude in OpenCV's run
SCORE_TOLERANCE, BOX_TOLERANCE = 1e-5, 1e-4  # DetectionOutput rows: score, normalised box coordinates


@dataclass(frozen=True)
class ForkModel:
    name: str
    prototxt: Path
    weights: Path
    image: Path
    preprocessing: dict[str, Any]

    def demo_input(self) -> np.ndarray:
        """The sample image as the repository's demo feeds it: cv2.imread, cv2.resize to H x W (bilinear),
        the demo's colour order, minus the mean, times the scale; 1 x 3 x H x W float32."""
        height, width = self.preprocessing["size"]
        image = cv2.resize(cv2.imread(str(self.image), cv2.IMREAD_COLOR), (width, height))
        if self.preprocessing["color"] == "rgb":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        pixels = (image.astype(np.float32) - np.float32(self.preprocessing["mean"])) \
            * np.float32(self.preprocessing["scale"])
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def fork_model(name: str) -> ForkModel:
    folder = shared_path("realmodels", "forks")
    entry = next(e for e in json.loads((folder / "models.json").read_text()) if e["name"] == name)
    here = folder / name
    return ForkModel(name, here / Path(entry["prototxt"]).name, here / Path(entry["weights"]).name,
                     here / Path(entry["image"]).name, entry["demo_preprocessing"])


def load_quietly(model: ForkModel, **options: Any) -> Any:
    """The converted net; yufacedetectnet's caffemodel carries its training layers' fork fields, whose
    warnings are expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeFormatWarning)
        return caffe2torch.load(model.prototxt, model.weights, **options)


@dataclass(frozen=True)
class Runs:
    """Every blob of one model on its demo input, computed by us and by OpenCV, the layer types, and the
    net's outputs computed by the optimized graph (``caffe2torch.optimize``, what ``predict`` runs)."""

    ours: dict[str, np.ndarray]
    opencv: dict[str, np.ndarray]
    types: dict[str, str]
    optimized: dict[str, np.ndarray]


@lru_cache(maxsize=None)
def both_runs(name: str) -> Runs:
    model = fork_model(name)
    converted = load_quietly(model)
    types = dict(converted.deploy.layers)
    inputs = model.demo_input()
    with torch.no_grad():
        ours = load_quietly(model, outputs=list(types))(torch.from_numpy(inputs))
        optimized = caffe2torch.optimize(converted)(torch.from_numpy(inputs))
    if isinstance(optimized, torch.Tensor):
        optimized = {next(iter(converted.output_shapes)): optimized}
    opencv = opencv_forward(converted, model.weights, inputs, list(types))
    return Runs({key: value.numpy() for key, value in ours.items()}, opencv, types,
                {key: value.numpy() for key, value in optimized.items()})


def relative_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    """The largest difference, as a fraction of the reference blob's largest magnitude."""
    scale = float(np.abs(reference).max())
    difference = float(np.abs(ours.astype(np.float64) - reference).max())
    return difference / scale if scale > 0 else difference


def detections(rows: np.ndarray) -> np.ndarray:
    """DetectionOutput's real rows (R x 7): without Caffe's label -1 "nothing found" row and without the
    zero rows OpenCV pads its output with up to keep_top_k."""
    rows = rows.reshape(-1, 7)
    return rows[(rows[:, 1] >= 0) & (rows[:, 2] > 0)]


def assert_same_detections(ours: np.ndarray, reference: np.ndarray) -> None:
    """The same set of detections; OpenCV orders rows by score, Caffe (and we) by label then score, so
    each of our rows is matched to the closest unmatched OpenCV row of the same image and label."""
    ours, reference = detections(ours), detections(reference)
    assert len(ours) == len(reference), f"{len(ours)} detections, OpenCV finds {len(reference)}"
    unmatched = list(range(len(reference)))
    for row in ours:
        candidates = [i for i in unmatched if tuple(reference[i, :2]) == tuple(row[:2])]
        assert candidates, f"no OpenCV detection of image {row[0]:g} label {row[1]:g}: {row}"
        closest = min(candidates, key=lambda i: np.abs(reference[i, 2:] - row[2:]).max())
        assert abs(reference[closest, 2] - row[2]) <= SCORE_TOLERANCE, (row, reference[closest])
        assert np.abs(reference[closest, 3:] - row[3:]).max() <= BOX_TOLERANCE, (row, reference[closest])
        unmatched.remove(closest)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_blob_matches_opencv_on_the_sample_image(name: str) -> None:
    runs = both_runs(name)
    assert runs.ours.keys() == runs.opencv.keys() == runs.types.keys()
    worst: dict[str, tuple[float, str]] = {}
    for blob, layer_type in runs.types.items():
        ours, reference = runs.ours[blob], runs.opencv[blob]
        if layer_type == "DetectionOutput":
            assert_same_detections(ours, reference)
            continue
        assert ours.shape == reference.shape, f"{blob} ({layer_type}): {ours.shape} vs OpenCV's {reference.shape}"
        difference = relative_difference(ours, reference)
        worst[layer_type] = max(worst.get(layer_type, (0.0, "")), (difference, blob))
    print(f"\n{name}: largest difference / largest magnitude, per layer type: "
          + ", ".join(f"{t} {d:.1e} ({b})" for t, (d, b) in sorted(worst.items())))
    failing = {t: (d, b) for t, (d, b) in worst.items() if d > BLOB_TOLERANCE}
    assert not failing, f"blobs differing from OpenCV by more than {BLOB_TOLERANCE} of their magnitude: {failing}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_optimized_outputs_match_opencv_on_the_sample_image(name: str) -> None:
    runs = both_runs(name)
    assert runs.optimized
    for blob, ours in runs.optimized.items():
        if runs.types[blob] == "DetectionOutput":
            assert_same_detections(ours, runs.opencv[blob])
        else:
            assert ours.shape == runs.opencv[blob].shape
            assert relative_difference(ours, runs.opencv[blob]) <= BLOB_TOLERANCE, blob


def test_detection_rows_are_compared_as_sets() -> None:
    """The matching used above: order and OpenCV's zero padding do not matter, a moved box or a missing
    detection does."""
    rows = np.array([[0, 1, 0.9, 0.1, 0.1, 0.2, 0.2], [0, 2, 0.8, 0.3, 0.3, 0.4, 0.4],
                     [0, 1, 0.5, 0.5, 0.5, 0.6, 0.6]], np.float32)
    padded = np.concatenate([rows[[1, 0, 2]], np.zeros((4, 7), np.float32)])[None, None]
    assert_same_detections(rows[None, None], padded)
    assert_same_detections(np.array([[[[0, -1, -1, -1, -1, -1, -1]]]], np.float32), np.zeros((1, 1, 5, 7)))
    moved = rows.copy()
    moved[2, 5] += 2 * BOX_TOLERANCE
    with pytest.raises(AssertionError):
        assert_same_detections(moved[None, None], padded)
    with pytest.raises(AssertionError):
        assert_same_detections(rows[:2][None, None], padded)


# Runs each exported model.py, imported by path with caffe2torch made unimportable, on its saved input;
# argv: (model.py, input.pt, output.pt) triples.
RUN_MODEL_PY = """
import importlib.util, sys
import torch
sys.modules["caffe2torch"] = None  # any import of caffe2torch now fails
arguments = sys.argv[1:]
for index in range(0, len(arguments), 3):
    model_py, inputs, outputs = arguments[index:index + 3]
    spec = importlib.util.spec_from_file_location(f"exported_model_{index}", model_py)
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    with torch.no_grad():
        torch.save(model.load(model_py.replace("model.py", "model.safetensors"))(torch.load(inputs)), outputs)
"""


@pytest.fixture(scope="module")
def exported_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each model converted by the ``caffe2torch convert`` command, then every model.py run in one fresh
    process on its demo input (one process for the four keeps the test fast): the outputs by model name."""
    from click.testing import CliRunner

    from caffe2torch.cli import main

    root = tmp_path_factory.mktemp("forks")
    models = [fork_model(name) for name in MODEL_NAMES]
    for model in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CaffeFormatWarning)
            result = CliRunner().invoke(main, ["convert", str(model.prototxt), "--weights", str(model.weights),
                                               "-o", str(root / model.name)])
        assert result.exit_code == 0, f"convert {model.name}: {result.output}"
    arguments = []
    for model in models:
        torch.save(torch.from_numpy(model.demo_input()), root / f"{model.name}.in.pt")
        arguments += [str(root / model.name / "model.py"), str(root / f"{model.name}.in.pt"),
                      str(root / f"{model.name}.out.pt")]
    ran = subprocess.run([sys.executable, "-c", RUN_MODEL_PY, *arguments], capture_output=True, text=True, cwd=root)
    assert ran.returncode == 0, ran.stderr
    return {model.name: torch.load(root / f"{model.name}.out.pt") for model in models}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_exported_model_py_computes_what_the_converted_model_does(name: str, exported_outputs) -> None:
    model = fork_model(name)
    with torch.no_grad():
        expected = load_quietly(model)(torch.from_numpy(model.demo_input()))
    actual = exported_outputs[name]
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys()
        pairs = [(actual[key], expected[key]) for key in expected]
    else:
        pairs = [(actual, expected)]
    for got, want in pairs:
        assert got.shape == want.shape and torch.equal(got, want)
