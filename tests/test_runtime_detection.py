"""``predict`` on detection nets (ending in SSD's DetectionOutput): detections in the original image's pixels,
``--threshold``, ``--draw``; checked on the real YuFaceDetectNet against OpenCV's dnn, and on synthetic rows
for what the sample image does not reach (placeholders, clipping, a cropped input)."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from caffe2torch.caffe_proto import read_prototxt, write_caffemodel
from caffe2torch.caffe_proto.upgrade import CaffeFormatWarning
from caffe2torch.cli import main
from caffe2torch.runtime.detection import BOX_COLOUR, Detection, caption_rectangle, image_detections, \
    line_thickness, pixel_box, to_pixels
from caffe2torch.runtime.predict import predict
from caffe2torch.runtime.preprocess import Preprocessor
from caffe2torch.runtime.protocol import PreprocessOptions, resolve_preprocessing
from caffe2torch.runtime.reference import opencv_forward
from tests.conftest import shared_path

# The demo's preprocessing (models.json): warp to 240 x 320, BGR, no mean, scale 1.
YUFACE_STEPS = ("--resize", "240x320", "--mean", "0", "--scale", "1", "--channel-order", "bgr")
SCORE_TOLERANCE = 1e-5
BOX_TOLERANCE = 1e-4  # of the image's width or height
PRINTED_BOX_TOLERANCE = 0.1  # pixels: printed with one decimal


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def yuface() -> dict[str, Path]:
    folder = shared_path("realmodels", "forks", "yufacedetectnet_v2")
    return {"prototxt": folder / "yufacedetectnet-open-v2.prototxt",
            "weights": folder / "yufacedetectnet-open-v2.caffemodel", "image": folder / "keliamoniz1.jpg"}


def run_yuface(yuface: dict[str, Path], *options: object) -> tuple[int, str, str]:
    return run("predict", yuface["prototxt"], yuface["weights"], yuface["image"], *YUFACE_STEPS,
               "--device", "cpu", *options)


@pytest.fixture(scope="module")
def opencv_detections(yuface: dict[str, Path]) -> np.ndarray:
    """OpenCV's DetectionOutput rows (R x 7, its zero padding dropped) for the sample image preprocessed
    as the demo does, with cv2 alone."""
    image = cv2.resize(cv2.imread(str(yuface["image"]), cv2.IMREAD_COLOR), (320, 240))
    inputs = image.transpose(2, 0, 1)[None].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeFormatWarning)
        rows = opencv_forward(yuface["prototxt"], yuface["weights"], inputs, ["detection_out"])["detection_out"]
    rows = rows.reshape(-1, 7).astype(np.float64)
    return rows[rows[:, 2] > 0]


def in_pixels(rows: np.ndarray, height: int, width: int) -> np.ndarray:
    """Score and box per row, the box scaled to the image and clipped to it: R x 5."""
    boxes = rows[:, 3:7] * [width, height, width, height]
    boxes = np.clip(boxes, 0, [width, height, width, height])
    return np.concatenate([rows[:, 2:3], boxes], axis=1)


def test_detections_are_opencvs_in_pixels_of_the_original_image(yuface, opencv_detections) -> None:
    height, width = cv2.imread(str(yuface["image"])).shape[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeFormatWarning)
        [prediction] = predict(yuface["prototxt"], yuface["weights"], [yuface["image"]], resize="240x320",
                               mean=0, scale=1, channel_order="bgr", device="cpu", threshold=0.0)
    assert prediction.top == [] and prediction.detections is not None
    shown = prediction.detections.shown
    assert prediction.detections.hidden == 0 and len(shown) == len(opencv_detections) > 10
    assert {d.label for d in shown} == {1} and all(d.name is None for d in shown)
    scores = [d.score for d in shown]
    assert scores == sorted(scores, reverse=True)
    # OpenCV orders equal scores its own way: match each of ours to the nearest unmatched OpenCV row
    expected = list(in_pixels(opencv_detections, height, width))
    tolerance = np.array([SCORE_TOLERANCE] + [BOX_TOLERANCE * max(height, width)] * 4)
    for detection in shown:
        ours = np.array([detection.score, *detection.box])
        nearest = min(range(len(expected)), key=lambda i: np.abs(expected[i] - ours).max())
        assert (np.abs(expected[nearest] - ours) <= tolerance).all(), (ours, expected[nearest])
        expected.pop(nearest)


def printed_detections(out: str) -> list[list[float]]:
    """The detection lines of ``predict``'s output: score, label, xmin, ymin, xmax, ymax."""
    return [[float(v) for v in line.split()[:6]] for line in out.splitlines()[1:]
            if line.startswith("  ") and not line.strip().startswith(("(", "no "))]


def test_cli_prints_the_faces_and_draws_their_boxes(yuface, opencv_detections, tmp_path: Path) -> None:
    image = cv2.imread(str(yuface["image"]), cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    names = tmp_path / "names.txt"
    names.write_text("background\nface\n")
    drawing = tmp_path / "faces.png"
    code, out, _ = run_yuface(yuface, "--labels", names, "--draw", drawing)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(yuface["image"]) and lines[-1] == f"wrote {drawing}"
    expected = in_pixels(opencv_detections[opencv_detections[:, 2] >= 0.5], height, width)
    printed = printed_detections(out)
    assert len(printed) == len(expected) >= 1 and all(line.endswith("  face") for line in lines[1:1 + len(printed)])
    for row, want in zip(printed, expected[np.argsort(-expected[:, 0])]):
        assert row[1] == 1 and abs(row[0] - want[0]) <= 5e-5 + SCORE_TOLERANCE
        assert np.abs(np.array(row[2:]) - want[1:]).max() <= PRINTED_BOX_TOLERANCE
    assert f"  ({len(opencv_detections) - len(expected)} more under --threshold 0.5)" in lines

    drawn = cv2.imread(str(drawing), cv2.IMREAD_COLOR)
    assert drawn.shape == image.shape
    changed = (drawn != image).any(axis=2)
    thickness = line_thickness(height, width)
    allowed = np.zeros_like(changed)
    detections = [Detection(1, float(score), tuple(box), "face") for score, *box in expected]
    for detection in detections:
        x0, y0, x1, y1 = pixel_box(detection, height, width)
        allowed[max(y0 - thickness, 0):y1 + thickness + 1, max(x0 - thickness, 0):x1 + thickness + 1] = True
        cx0, cy0, cx1, cy1 = caption_rectangle(detection, height, width)
        allowed[cy0:cy1 + 1, cx0:cx1 + 1] = True
        # the box's left, right and bottom edges and the top edge right of the caption have the box colour
        edges = [drawn[y0:y1 + 1, x0], drawn[y0:y1 + 1, x1], drawn[y1, x0:x1 + 1], drawn[y0, cx1 + 1:x1 + 1]]
        assert all((edge == BOX_COLOUR).all() for edge in edges)
        # inside the box, away from the lines and the caption, the image is untouched
        inner = (slice(max(y0, cy1) + thickness + 1, y1 - thickness), slice(x0 + thickness + 1, x1 - thickness))
        assert not changed[inner].any()
    assert changed.any() and not (changed & ~allowed).any()


def test_draw_never_overwrites_without_force(yuface, tmp_path: Path) -> None:
    drawing = tmp_path / "faces.png"
    drawing.write_bytes(b"keep")
    code, _, err = run_yuface(yuface, "--draw", drawing)
    assert code == 2 and "already exists" in err and drawing.read_bytes() == b"keep"
    code, _, _ = run_yuface(yuface, "--draw", drawing, "--force", "--threshold", "0.9")
    assert code == 0 and cv2.imread(str(drawing)).shape == cv2.imread(str(yuface["image"])).shape
    assert [p.name for p in tmp_path.iterdir()] == ["faces.png"]  # no temporary file left


def test_bad_detection_options_exit_2(yuface, tmp_path: Path) -> None:
    code, _, err = run("predict", yuface["prototxt"], yuface["weights"], yuface["image"], yuface["image"],
                       *YUFACE_STEPS, "--draw", tmp_path / "two.png")
    assert code == 2 and "--draw draws the boxes of one image; 2 images given" in err
    code, _, err = run_yuface(yuface, "--draw", tmp_path / "missing" / "faces.png")
    assert code == 2 and "does not exist" in err
    code, _, err = run_yuface(yuface, "--draw", tmp_path / "faces.unknown")
    assert code == 2 and "OpenCV cannot write images of this kind" in err
    code, _, err = run_yuface(yuface, "--threshold", "1.5")
    assert code == 2 and "--threshold" in err
    (tmp_path / "three.txt").write_text("background\nface\nhand\n")
    code, _, err = run_yuface(yuface, "--labels", tmp_path / "three.txt")
    assert code == 2 and "3 class names for a detection net with 2 classes" in err
    code, _, err = run_yuface(yuface, "--labels", tmp_path / "three.txt", "--label-order", "synset")
    assert code == 2 and "--label-order applies to a classifier's outputs" in err
    assert not any(p.suffix == ".png" for p in tmp_path.iterdir())


def test_nothing_found_is_said(yuface) -> None:
    code, out, _ = run_yuface(yuface, "--threshold", "1")
    assert code == 0 and "  no detection scores 1 or more" in out.splitlines()


def test_rows_to_detections() -> None:
    """Placeholders (label -1) are no detections, other images' rows are not this one's, boxes are scaled
    to the image and clipped to it, names come by label, the best is first."""
    rows = np.array([[0, -1, -1, -1, -1, -1, -1],
                     [0, 1, 0.6, 0.1, 0.2, 0.5, 0.6],
                     [0, 2, 0.9, -0.1, 0.5, 1.2, 1.0],
                     [0, 2, 0.3, 0.0, 0.0, 0.1, 0.1],
                     [1, 1, 0.99, 0.0, 0.0, 1.0, 1.0]])
    found = image_detections(rows, 0, (0, 0, 200, 100), 100, 200, threshold=0.5, names=["bg", "cat", "dog"])
    assert found.hidden == 1
    assert found.shown == [Detection(2, 0.9, (0.0, 50.0, 200.0, 100.0), "dog"),
                           Detection(1, 0.6, (20.0, 20.0, 100.0, 60.0), "cat")]
    assert image_detections(rows[:1], 0, (0, 0, 200, 100), 100, 200).shown == []


def test_boxes_of_a_cropped_input_go_back_to_the_crop() -> None:
    """A 300 x 400 image resized to shorter side 200 (200 x 266) and center-cropped to 160 x 160 at (20, 53):
    the input covers x 53/266*400 .. 213/266*400, y 20*1.5 .. 180*1.5 of the image."""
    preset = resolve_preprocessing(PreprocessOptions(resize=200, crop=160, mean=0))
    region = Preprocessor(preset, input_size=(160, 160)).input_region(300, 400)
    assert region == pytest.approx((53 * 400 / 266, 30.0, 213 * 400 / 266, 270.0))
    corner = to_pixels(np.array([0, 1, 1, 0, 0, 1, 1.0]), region, 300, 400)
    assert corner == pytest.approx(region)
    whole = Preprocessor(resolve_preprocessing(PreprocessOptions(resize="240x320", mean=0)), input_size=(240, 320))
    assert whole.input_region(480, 640) == (0.0, 0.0, 640.0, 480.0)


CLASSIFIER = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_classifier_output_is_unchanged(tmp_path: Path) -> None:
    """A classifier still prints its top classes (probability, index, name), and --draw is refused."""
    prototxt, weights = tmp_path / "tiny.prototxt", tmp_path / "tiny.caffemodel"
    prototxt.write_text(CLASSIFIER)
    write_caffemodel(read_prototxt(prototxt), {"fc": [np.eye(3, dtype=np.float32) / 64,
                                                      np.zeros(3, np.float32)]}, weights)
    image = tmp_path / "bgr.png"
    cv2.imwrite(str(image), np.full((8, 8, 3), (192, 128, 64), np.uint8))
    (tmp_path / "names.txt").write_text("blue\ngreen\nred\n")
    code, out, _ = run("predict", prototxt, weights, image, "--resize", "8x8", "--mean", "0", "--labels",
                       tmp_path / "names.txt", "--device", "cpu")
    logits = np.array([192, 128, 64]) / 64
    probabilities = np.exp(logits) / np.exp(logits).sum()
    assert code == 0 and out == (f"{image}\n" + "".join(f"  {p:8.4f}  {i:4d}  {name}\n" for i, (p, name) in
                                                         enumerate(zip(probabilities, ["blue", "green", "red"]))))
    code, _, err = run("predict", prototxt, weights, image, "--resize", "8x8", "--mean", "0", "--device", "cpu",
                       "--draw", tmp_path / "boxes.png")
    assert code == 2 and "--draw draws the boxes of a detection net" in err
    assert not (tmp_path / "boxes.png").exists()
