"""Preprocessing for any net: presets, --transform-from and explicit steps on ``predict`` and ``verify``,
``verify --skip-missing`` and ``compare`` at the declared batch size.

Every expected array is computed here with cv2 calls and numpy slicing only, and every expected accuracy
with OpenCV's dnn reading the same prototxt and caffemodel: nothing below reuses the preprocessing code
under test to make its own expectation.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from caffe2torch.caffe_proto import caffe_pb2, read_prototxt, write_caffemodel
from caffe2torch.cli import main
from caffe2torch.errors import InputError
from caffe2torch.runtime.predict import predict
from caffe2torch.runtime.preprocess import Preprocessor
from caffe2torch.runtime.presets import PRESETS, get_preset
from caffe2torch.runtime.protocol import PreprocessOptions, read_transform_param, resolve_preprocessing
from caffe2torch.runtime.verify import verify
from caffe2torch.testing import seeded_weights, smooth_images
from tests.conftest import shared_path

MEAN_BGR = np.array([104, 117, 123], np.float32).reshape(3, 1, 1)
CLASSES = 10

# A CaffeNet-sized input (227 x 227) on a small, spatially sensitive net: a wrong crop offset, resize or
# channel order changes its scores.
CLASSIFIER = f"""name: "small_classifier"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: 227 dim: 227 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 8 kernel_size: 11 stride: 4 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param {{ num_output: {CLASSES} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "fc" top: "prob" }}
"""
# (height, width) of the generated images: landscape, portrait, square, smaller than 256 (enlarged), odd margins
SIZES = [(300, 400), (400, 300), (256, 256), (200, 180), (257, 333), (480, 270), (231, 229), (512, 384),
         (260, 261), (300, 300), (333, 500), (240, 320)]
# rank of each image's label in the reference's ranking: 0 right, 1..4 right at top-5 only, 5.. wrong
LABEL_RANKS = [0, 0, 1, 0, 7, 2, 0, 4, 9, 0, 5, 3]


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photograph-like BGR uint8 picture: smooth colour blobs plus grain."""
    coarse = rng.uniform(0, 255, (6, 7, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).round().astype(np.uint8)


def shorter_side(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    size = (width * side // height, side) if height <= width else (side, height * side // width)
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def center(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centered window of an H x W (x C) array, at Caffe's offsets (integer halves of the margins)."""
    top, left = (array.shape[0] - height) // 2, (array.shape[1] - width) // 2
    return array[top:top + height, left:left + width]


def reference_input(path: Path) -> np.ndarray:
    """--resize 256 --crop 227 --mean 104,117,123, written out with cv2 and numpy."""
    image = center(shorter_side(cv2.imread(str(path), cv2.IMREAD_COLOR), 256), 227, 227)
    return image.transpose(2, 0, 1).astype(np.float32) - MEAN_BGR


def opencv_probabilities(prototxt: Path, weights: Path, blob: np.ndarray) -> np.ndarray:
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.setInput(np.ascontiguousarray(blob, dtype=np.float32))
    return net.forward().reshape(len(blob), -1)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("any_net")
    prototxt, weights = root / "net.prototxt", root / "net.caffemodel"
    prototxt.write_text(CLASSIFIER)
    net = read_prototxt(prototxt)
    blobs = seeded_weights(net, smooth_images(4, 227, seed=3))
    blobs["conv1"] = [blob / 64 for blob in blobs["conv1"]]  # pixels are about 64 times unit scale: logits near 1
    write_caffemodel(net, blobs, weights)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(7)
    names = [f"img{index:02d}.png" for index in range(len(SIZES))]  # PNG: read back bit for bit
    for name, size in zip(names, SIZES):
        cv2.imwrite(str(images / name), picture(rng, *size))
    probabilities = opencv_probabilities(prototxt, weights, np.stack([reference_input(images / n) for n in names]))
    ranking = np.argsort(-probabilities, axis=1, kind="stable")
    gaps = -np.diff(np.log(np.take_along_axis(probabilities, ranking, axis=1)), axis=1)
    assert gaps[:, [0, 4]].min() > 1e-4, "a near tie at top-1 or top-5: float rounding could decide it"
    labels = [int(ranking[i, rank]) for i, rank in enumerate(LABEL_RANKS)]
    (root / "labels.txt").write_text("".join(f"{n} {label}\n" for n, label in zip(names, labels)))
    top1 = int(sum(ranking[i, 0] == label for i, label in enumerate(labels)))
    top5 = int(sum(label in ranking[i, :5] for i, label in enumerate(labels)))
    return {"root": root, "prototxt": prototxt, "weights": weights, "images": images, "names": names,
            "labels": labels, "probabilities": probabilities, "ranking": ranking, "top1": top1, "top5": top5}


def verify_cli(case: dict, *args: object) -> tuple[int, str, str]:
    return run("verify", case["prototxt"], case["weights"], "--images", case["images"], "--device", "cpu",
               "--workers", 0, "--quiet", *args)


STEPS = ("--resize", 256, "--crop", 227, "--mean", "104,117,123")


# --- verify and predict on a net outside the zoo ------------------------------------------------------------


def test_verify_with_explicit_steps_equals_opencv_on_independently_preprocessed_images(classifier: dict) -> None:
    out_json = classifier["root"] / "steps.json"
    code, out, err = verify_cli(classifier, "--labels", classifier["root"] / "labels.txt", "--label-order",
                                "synset", *STEPS, "--json", out_json, "--force")
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert (classifier["top1"], classifier["top5"]) == (5, 9)  # LABEL_RANKS: 5 at rank 0, 4 more within top-5
    assert (data["images"], data["top1_correct"], data["top5_correct"]) == (12, 5, 9)
    assert data["preset"] == "custom" and data["reproduced"] is None and data["skipped"] == 0
    assert data["preprocessing"]["resize"] == 256 and data["preprocessing"]["crop_size"] == 227
    assert data["net_label_order"] == "synset"  # the only order anyone named: taken as the net's
    assert "no published result to compare with" in out
    # the Python API takes the same fields, parsed or as text
    result = verify(classifier["prototxt"], classifier["weights"], classifier["images"],
                    classifier["root"] / "labels.txt", resize=256, crop=(227, 227), mean=(104, 117, 123),
                    device="cpu", workers=0, progress=False)
    assert (result.evaluation.top1_correct, result.evaluation.top5_correct) == (5, 9)


def test_wrong_steps_change_the_measurement(classifier: dict) -> None:
    """The check above has teeth: warping instead of keeping the aspect ratio changes the answers."""
    result = verify(classifier["prototxt"], classifier["weights"], classifier["images"],
                    classifier["root"] / "labels.txt", resize="256x256", crop=227, mean="104,117,123",
                    device="cpu", workers=0, progress=False)
    assert (result.evaluation.top1_correct, result.evaluation.top5_correct) != (5, 9)


def test_predict_with_explicit_steps_gives_opencvs_probabilities(classifier: dict) -> None:
    paths = [classifier["images"] / name for name in classifier["names"][:4]]
    predictions = predict(classifier["prototxt"], classifier["weights"], paths, top=CLASSES, resize="256",
                          crop="227", mean="104,117,123", device="cpu")
    for prediction, expected in zip(predictions, classifier["probabilities"]):
        ours = np.zeros(CLASSES)
        for score in prediction.top:
            ours[score.index] = score.probability
        assert np.abs(ours - expected).max() <= 1e-5


def test_unknown_net_without_preprocessing_lists_every_way_to_give_it(classifier: dict) -> None:
    expected = ["--model", "--preset bvlc|mobilenet|nsfw|senet|vgg", "--transform-from", "--resize N|HxW",
                "--crop N|HxW", "--mean B,G,R", "--mean-file F.binaryproto", "--scale S", "--channel-order bgr|rgb"]
    code, _, err = verify_cli(classifier, "--labels", classifier["root"] / "labels.txt")
    assert code == 2 and len(err.splitlines()) == 1 and "cannot tell how this net's images were preprocessed" in err
    assert all(option in err for option in expected), err
    code, _, err_predict = run("predict", classifier["prototxt"], classifier["weights"],
                               classifier["images"] / "img00.png", "--device", "cpu", "--interpolation", "area")
    assert code == 2 and err_predict == err  # a resize filter alone says nothing about the protocol


# --- verify --skip-missing -----------------------------------------------------------------------------------


def test_skip_missing_evaluates_the_present_images_and_says_how_many_were_skipped(classifier: dict,
                                                                                 tmp_path: Path) -> None:
    labels = tmp_path / "with_missing.txt"
    lines = classifier["root"].joinpath("labels.txt").read_text().splitlines()
    labels.write_text("\n".join(lines[:3] + ["gone1.png 3", "sub/gone2.png 4"] + lines[3:] + ["gone3.png 0"]) + "\n")
    code, _, err = verify_cli(classifier, "--labels", labels, *STEPS)
    assert code == 2 and "with_missing.txt:4: image 'gone1.png' is not in" in err and "--skip-missing" in err
    code, out, err = verify_cli(classifier, "--labels", labels, *STEPS, "--skip-missing", "--json", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, err
    assert "skipped 3 images" in out and data["skipped"] == 3
    assert (data["images"], data["top1_correct"], data["top5_correct"]) == (12, 5, 9)
    # with --limit: the first 4 present images (one image missing before the 4th)
    code, out, _ = verify_cli(classifier, "--labels", labels, *STEPS, "--skip-missing", "--limit", 4,
                              "--json", tmp_path / "l.json")
    data = json.loads((tmp_path / "l.json").read_text())
    ranking, expected = classifier["ranking"][:4], classifier["labels"][:4]
    assert data["images"] == 4 and data["skipped"] == 2 and "skipped 2 images" in out
    assert data["top1_correct"] == int(sum(r[0] == label for r, label in zip(ranking, expected)))
    nothing = tmp_path / "nothing.txt"
    nothing.write_text("gone1.png 0\ngone2.png 1\n")
    code, _, err = verify_cli(classifier, "--labels", nothing, *STEPS, "--skip-missing")
    assert code == 2 and "none of the 2 images" in err


# --- each option against numpy -------------------------------------------------------------------------------


def _gradient(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 7 % 256, cols * 5 % 256, (rows * 3 + cols * 11) % 256], axis=2).astype(np.uint8)


def _write_mean(path: Path, mean: np.ndarray) -> Path:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(mean.shape)
    blob.data.extend(mean.ravel().tolist())
    path.write_bytes(blob.SerializeToString())
    return path


def _preprocessor(input_size: tuple[int, int] | None = None, default: str | None = None,
                  **options: object) -> Preprocessor:
    preset = resolve_preprocessing(PreprocessOptions(**options), default)
    assert preset is not None
    return Preprocessor(preset, input_size=input_size)


def test_mean_image_larger_than_the_crop_is_subtracted_before_cropping(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    mean = rng.uniform(0, 255, (3, 20, 24)).astype(np.float32)
    mean_file = _write_mean(tmp_path / "mean.binaryproto", mean[None])
    image = _gradient(31, 17)
    # Caffe: the image at the mean's size, minus the mean, then the crop at offsets (4, 5)
    whole = cv2.resize(image, (24, 20), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1).astype(np.float32) - mean
    expected = whole[:, 4:15, 5:18]
    assert np.array_equal(_preprocessor((11, 13), mean_file=mean_file).transform(image), expected)
    # --crop wins over the net's input size; --resize equal to the mean's size is the same protocol
    assert np.array_equal(_preprocessor((7, 7), mean_file=mean_file, crop="11x13").transform(image), expected)
    assert np.array_equal(_preprocessor((11, 13), mean_file=mean_file, resize="20x24").transform(image), expected)
    # a preset's own resize gives way to the mean image's size
    assert np.array_equal(_preprocessor((11, 13), "vgg", mean_file=mean_file).transform(image), expected)
    for resize in ("30x30", "20"):
        with pytest.raises(InputError, match=r"mean.binaryproto: a 20x24 mean image is subtracted from images "
                                             r"resized to exactly 20x24"):
            _preprocessor((11, 13), mean_file=mean_file, resize=resize)


def test_mean_image_equal_to_the_resized_size_and_to_the_crop(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    mean = rng.uniform(0, 255, (1, 3, 12, 14)).astype(np.float32)
    mean_file = _write_mean(tmp_path / "mean.binaryproto", mean)
    image = _gradient(40, 50)
    resized = cv2.resize(image, (14, 12), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1).astype(np.float32)
    # mean the size of the resized image and of the crop: no offset at all
    assert np.array_equal(_preprocessor((12, 14), mean_file=mean_file).transform(image), resized - mean[0])
    # and with the scale applied after it
    scaled = _preprocessor((12, 14), mean_file=mean_file, scale="0.5").transform(image)
    assert np.array_equal(scaled, (resized - mean[0]) * np.float32(0.5))


def test_single_mean_value_serves_every_channel() -> None:
    image = _gradient(30, 40)
    out = _preprocessor(None, mean="100").transform(image)
    assert np.array_equal(out, image.transpose(2, 0, 1).astype(np.float32) - 100)
    with pytest.raises(InputError, match="2 mean values for a 3-channel input"):
        _preprocessor(None, mean="1,2")


def test_rgb_and_bgr_channel_orders() -> None:
    image = _gradient(9, 10)
    crop = center(image, 5, 6).astype(np.float32)
    bgr = _preprocessor((5, 6), mean="1,2,3", channel_order="bgr").transform(image)
    rgb = _preprocessor((5, 6), mean="1,2,3", channel_order="RGB").transform(image)
    assert np.array_equal(bgr, crop.transpose(2, 0, 1) - np.float32([1, 2, 3]).reshape(3, 1, 1))
    assert np.array_equal(rgb, crop[:, :, ::-1].transpose(2, 0, 1) - np.float32([1, 2, 3]).reshape(3, 1, 1))


def test_warp_and_shorter_side_resize() -> None:
    image = _gradient(64, 80)
    warped = _preprocessor(None, resize="32x48").transform(image)
    shorter = _preprocessor(None, resize=32).transform(image)
    assert np.array_equal(warped, cv2.resize(image, (48, 32)).transpose(2, 0, 1).astype(np.float32))
    assert np.array_equal(shorter, cv2.resize(image, (40, 32)).transpose(2, 0, 1).astype(np.float32))
    cropped = _preprocessor((24, 24), resize=32).transform(image)
    assert np.array_equal(cropped, center(cv2.resize(image, (40, 32)), 24, 24).transpose(2, 0, 1).astype(np.float32))


def test_options_override_a_presets_fields(tmp_path: Path) -> None:
    vgg = resolve_preprocessing(PreprocessOptions(preset="vgg", mean="1,2,3", scale="2"))
    assert vgg == dataclasses.replace(PRESETS["vgg"], mean=(1.0, 2.0, 3.0), scale=2.0)
    bvlc = resolve_preprocessing(PreprocessOptions(preset="bvlc", crop="200", channel_order="rgb",
                                                   interpolation="area"))
    assert (bvlc.resize, bvlc.crop_size, bvlc.crop_fixed, bvlc.channel_order, bvlc.interpolation, bvlc.mean) == \
        ((256, 256), 200, True, "RGB", "area", (104.0, 117.0, 123.0))
    assert Preprocessor(bvlc, input_size=(227, 227)).transform(_gradient(300, 300)).shape == (3, 200, 200)
    # without --crop the net's declared size wins over the preset's 227 (GoogLeNet declares 224)
    assert Preprocessor(get_preset("bvlc"), input_size=(224, 224)).crop == (224, 224)
    mean_file = _write_mean(tmp_path / "m.binaryproto", np.zeros((1, 3, 8, 8), np.float32))
    senet = resolve_preprocessing(PreprocessOptions(mean_file=mean_file), "senet")  # the zoo model's preset
    assert (senet.mean, senet.mean_file, senet.resize, senet.label_order) == (None, str(mean_file), None, "senet")
    assert resolve_preprocessing(PreprocessOptions(preset="bvlc", resize="300")).resize == 300
    assert resolve_preprocessing(PreprocessOptions()) is None
    assert resolve_preprocessing(PreprocessOptions(interpolation="area")) is None


def test_presets_of_the_common_families() -> None:
    fields = {name: (p.resize, p.crop_size, p.mean, p.scale, p.channel_order, p.interpolation)
              for name, p in PRESETS.items()}
    assert fields["bvlc"] == ((256, 256), 227, (104.0, 117.0, 123.0), 1.0, "BGR", "linear")
    assert fields["vgg"] == (256, 224, (103.939, 116.779, 123.68), 1.0, "BGR", "linear")
    assert fields["mobilenet"] == (256, 224, (103.94, 116.78, 123.68), 0.017, "BGR", "linear")
    assert fields["nsfw"] == ((256, 256), 224, (104.0, 117.0, 123.0), 1.0, "BGR", "pil-linear")
    image = _gradient(300, 400)
    mobilenet = Preprocessor(get_preset("mobilenet"), input_size=(224, 224)).transform(image)
    expected = center(shorter_side(image, 256), 224, 224).transpose(2, 0, 1).astype(np.float32)
    expected = (expected - np.float32([103.94, 116.78, 123.68]).reshape(3, 1, 1)) * np.float32(0.017)
    assert np.array_equal(mobilenet, expected)


TRAIN_VAL = """name: "train_val"
layer { name: "train_data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { mirror: true crop_size: 227 mean_file: "train_mean.binaryproto" scale: 0.25 } }
layer { name: "test_data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { mirror: false crop_size: 9 mean_value: 1 mean_value: 2 mean_value: 3 scale: 0.5 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_transform_from_reads_the_test_phase_data_layer(tmp_path: Path) -> None:
    (tmp_path / "train_val.prototxt").write_text(TRAIN_VAL)
    param = read_transform_param(tmp_path / "train_val.prototxt")
    assert (param.layer, param.crop, param.mean, param.mean_file, param.scale) == \
        ("test_data", 9, (1.0, 2.0, 3.0), None, 0.5)
    image = _gradient(20, 30)
    out = _preprocessor((4, 4), transform_from=tmp_path / "train_val.prototxt").transform(image)
    expected = (center(image, 9, 9).transpose(2, 0, 1).astype(np.float32)
                - np.float32([1, 2, 3]).reshape(3, 1, 1)) * np.float32(0.5)
    assert np.array_equal(out, expected)  # its crop_size wins over the net's input size, as --crop does
    # explicit options override it field by field
    overridden = _preprocessor((4, 4), transform_from=tmp_path / "train_val.prototxt", mean="10", crop="5x7")
    expected = (center(image, 5, 7).transpose(2, 0, 1).astype(np.float32) - 10) * np.float32(0.5)
    assert np.array_equal(overridden.transform(image), expected)
    # a layer with no rule is in the TEST phase; an exclude { phase: TRAIN } one too
    for rule in ("", "exclude { phase: TRAIN }"):
        text = TRAIN_VAL.replace("include { phase: TEST }", rule)
        (tmp_path / "norule.prototxt").write_text(text)
        assert read_transform_param(tmp_path / "norule.prototxt").layer == "test_data"
    (tmp_path / "train_only.prototxt").write_text(TRAIN_VAL.replace("phase: TEST", "phase: TRAIN"))
    with pytest.raises(InputError, match="train_only.prototxt: no data layer with a transform_param in the TEST"):
        read_transform_param(tmp_path / "train_only.prototxt")


def test_transform_from_finds_a_mean_file_beside_the_prototxt(tmp_path: Path) -> None:
    mean = np.random.default_rng(4).uniform(0, 255, (1, 3, 10, 12)).astype(np.float32)
    _write_mean(tmp_path / "imagenet_mean.binaryproto", mean)
    text = TRAIN_VAL.replace("mean_value: 1 mean_value: 2 mean_value: 3",
                             'mean_file: "data/ilsvrc12/imagenet_mean.binaryproto"')
    (tmp_path / "train_val.prototxt").write_text(text)
    image = _gradient(25, 21)
    out = _preprocessor(None, transform_from=tmp_path / "train_val.prototxt").transform(image)
    whole = cv2.resize(image, (12, 10)).transpose(2, 0, 1).astype(np.float32) - mean[0]
    assert np.array_equal(out, center(whole.transpose(1, 2, 0), 9, 9).transpose(2, 0, 1) * np.float32(0.5))
    (tmp_path / "imagenet_mean.binaryproto").unlink()
    with pytest.raises(InputError, match="its mean_file 'data/ilsvrc12/imagenet_mean.binaryproto' is not found"):
        _preprocessor(None, transform_from=tmp_path / "train_val.prototxt")
    # an explicit mean makes the missing file irrelevant
    assert _preprocessor(None, transform_from=tmp_path / "train_val.prototxt", mean="0").preset.mean == (0.0,)


def test_transform_from_a_real_legacy_prototxt_predicts_what_caffe_predicted() -> None:
    """Caffe's own run of prediction_example.prototxt (V1 IMAGE_DATA, new_height/new_width 32, a mean_file
    under Caffe's tree) predicted dog, cat, truck = 5, 3, 9."""
    folder = shared_path("realmodels", "cifar10_quick")
    images = [folder / f"{name}.png" for name in ("dog10", "cat10", "truck10")]
    predictions = predict(folder / "cifar10_quick.prototxt", folder / "cifar10_quick_v1_iter_5000.caffemodel",
                          images, top=1, transform_from=folder / "prediction_example.prototxt", device="cpu")
    assert [p.top[0].index for p in predictions] == [5, 3, 9]


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    (("--mean-file", "{tmp}/absent.binaryproto"), "--mean-file {tmp}/absent.binaryproto: no such mean file"),
    (("--mean-file", "{tmp}/garbage.binaryproto"), "{tmp}/garbage.binaryproto: not a valid BlobProto"),
    (("--mean", "104;117;123"), "--mean '104;117;123': expected numbers such as 104,117,123"),
    (("--mean", "a,b,c"), "--mean 'a,b,c': expected numbers"),
    (("--resize", "0"), "--resize '0': expected a positive size, N or HxW"),
    (("--resize", "256x"), "--resize '256x': expected a positive size"),
    (("--crop", "-3"), "--crop '-3': expected a positive size"),
    (("--scale", "0"), "--scale '0': expected a positive number"),
    (("--mean", "1", "--mean-file", "{tmp}/garbage.binaryproto"), "give --mean or --mean-file, not both"),
    (("--transform-from", "{tmp}/none.prototxt"), "--transform-from {tmp}/none.prototxt: no such prototxt file"),
    (("--preset", "caffenet"), "unknown preset 'caffenet'; known: bvlc, mobilenet, nsfw, senet, vgg"),
])
def test_bad_preprocessing_options_are_one_line_errors(classifier: dict, tmp_path: Path, options: tuple[str, ...],
                                                       message: str) -> None:
    (tmp_path / "garbage.binaryproto").write_bytes(b"\xff\xff\xff not a blob")
    options = tuple(option.format(tmp=tmp_path) for option in options)
    for command in (["verify", classifier["prototxt"], classifier["weights"], "--images", classifier["images"],
                     "--labels", classifier["root"] / "labels.txt", "--workers", 0],
                    ["predict", classifier["prototxt"], classifier["weights"], classifier["images"] / "img00.png"]):
        code, _, err = run(*command, "--device", "cpu", "--resize", 256, *options)
        assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert message.format(tmp=tmp_path) in err, err


# --- compare at the declared batch size ----------------------------------------------------------------------


def test_compare_runs_the_declared_batch(classifier: dict, tmp_path: Path) -> None:
    prototxt = tmp_path / "batch2.prototxt"
    prototxt.write_text(CLASSIFIER.replace("dim: 1 dim: 3 dim: 227", "dim: 2 dim: 3 dim: 227"))
    code, out, err = run("compare", prototxt, classifier["weights"], "--json", tmp_path / "c.json")
    assert code == 0, out + err
    layers = json.loads((tmp_path / "c.json").read_text())["layers"]
    assert [layer["shape"][0] for layer in layers] == [2] * len(layers) and len(layers) == 5
    code, out, err = run("compare", prototxt, classifier["weights"], "--input", classifier["images"] / "img01.png",
                         "--preset", "bvlc", "--json", tmp_path / "i.json")
    assert code == 0, out + err
    assert {layer["shape"][0] for layer in json.loads((tmp_path / "i.json").read_text())["layers"]} == {2}
    code, _, _ = run("compare", prototxt, classifier["weights"], "--input-shape", "3,3,227,227", "--json",
                     tmp_path / "s.json")
    assert code == 0 and json.loads((tmp_path / "s.json").read_text())["layers"][0]["shape"][0] == 3


# --- open_nsfw with its own preprocessing --------------------------------------------------------------------


def test_predict_on_open_nsfw_gives_opencvs_probabilities() -> None:
    folder = shared_path("realmodels", "open_nsfw")
    photos = sorted(shared_path("realmodels", "imagenet-val-100").glob("*.JPEG"))[:6]
    prototxt, weights = folder / "deploy.prototxt", folder / "resnet_50_1by2_nsfw.caffemodel"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # open_nsfw's CaffeOnSpark data-layer fields
        predictions = predict(prototxt, weights, photos, top=2, preset_name="nsfw", device="cpu")
    ours = np.zeros((len(photos), 2))
    for row, prediction in zip(ours, predictions):
        for score in prediction.top:
            row[score.index] = score.probability
    preprocess = Preprocessor(get_preset("nsfw"), input_size=(224, 224))
    blob = np.stack([preprocess(path) for path in photos])
    reference = opencv_probabilities(prototxt, weights, blob)
    assert np.abs(ours - reference).max() <= 1e-4
    assert np.allclose(ours.sum(axis=1), 1.0, atol=1e-5) and (ours[:, 1] < 0.5).all()  # ordinary photographs
    code, out, _ = run("predict", prototxt, weights, photos[0], "--preset", "nsfw", "--top", 2, "--device", "cpu")
    assert code == 0 and out.splitlines()[0] == str(photos[0]) and len(out.splitlines()) == 3
