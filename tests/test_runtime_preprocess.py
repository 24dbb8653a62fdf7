"""Preprocessing: Caffe's data path, checked against plain OpenCV and numpy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from caffe2torch.errors import InputError
from caffe2torch.runtime.preprocess import Preprocessor, center_crop, crop_offset, decode_image, resize_image, \
    resized_size
from caffe2torch.runtime.presets import PRESETS, Preset, get_preset
from tests.conftest import shared_path


def plain_opencv_senet_protocol(path: Path) -> np.ndarray:
    """The SENet evaluation protocol written out with cv2 calls and numpy slicing only."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    if height <= width:
        new_width, new_height = width * 256 // height, 256
    else:
        new_width, new_height = 256, height * 256 // width
    image = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    top, left = (new_height - 224) // 2, (new_width - 224) // 2
    crop = image[top:top + 224, left:left + 224, :]
    mean = np.array([104, 117, 123], dtype=np.float32)
    return np.transpose(crop.astype(np.float32) - mean, (2, 0, 1))


def test_senet_preprocessing_equals_plain_opencv_on_100_real_images() -> None:
    folder = shared_path("realmodels", "imagenet-val-100")
    paths = sorted(folder.glob("*.JPEG"))
    assert len(paths) == 100
    preprocess = Preprocessor(PRESETS["senet"], input_size=(224, 224))
    for path in paths:
        ours = preprocess(path)
        assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
        assert np.array_equal(ours, plain_opencv_senet_protocol(path)), path.name


@pytest.mark.parametrize("size, expected", [
    ((368, 496), (256, 345)),  # 496 * 256 / 368 = 345.04: truncated
    ((496, 368), (345, 256)),
    ((300, 300), (256, 256)),
    ((3, 1000), (256, 85333)),
    ((511, 512), (256, 256)),  # 512 * 256 / 511 = 256.5: truncated to 256
])
def test_shorter_side_resize_truncates_the_longer_side(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert resized_size(*size, 256) == expected


def test_fixed_and_no_resize() -> None:
    assert resized_size(100, 200, (256, 256)) == (256, 256)
    assert resized_size(100, 200, None) == (100, 200)


def test_crop_offset_is_caffes_integer_division() -> None:
    assert crop_offset(257, 300, (224, 224)) == (16, 38)  # odd margin: the extra row stays at the bottom
    image = np.arange(5 * 6).reshape(5, 6, 1)
    assert center_crop(image, (2, 3))[:, :, 0].tolist() == [[7, 8, 9], [13, 14, 15]]
    with pytest.raises(InputError, match="cannot crop 224x224 from an image of 200x300"):
        crop_offset(200, 300, (224, 224))


def _gradient_image(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 7 % 256, cols * 5 % 256, (rows + cols) * 3 % 256], axis=2).astype(np.uint8)


def test_interpolations_are_distinct_filters() -> None:
    image = _gradient_image(97, 131)
    results = {name: resize_image(image, (40, 54), name)
               for name in ("linear", "area", "cubic", "nearest", "lanczos", "pil-linear")}
    assert all(r.shape == (40, 54, 3) and r.dtype == np.uint8 for r in results.values())
    assert np.array_equal(results["linear"], cv2.resize(image, (54, 40), interpolation=cv2.INTER_LINEAR))
    names = list(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.array_equal(results[a], results[b]), (a, b)


def test_opencv_bilinear_samples_while_antialiased_filters_average() -> None:
    """The difference that makes Caffe's resize matter: shrinking by 3, OpenCV's bilinear reads the pixel
    at each sample point (3i + 1) and misses the bright columns at 3i; area and PIL-style filters do not."""
    columns = np.zeros((6, 12, 3), np.uint8)
    columns[:, ::3] = 201
    assert np.all(resize_image(columns, (6, 4), "linear") == 0)
    assert np.all(resize_image(columns, (6, 4), "area") == 67)
    assert np.all(resize_image(columns, (6, 4), "pil-linear")[:, 1:3] == 67)  # interior: 201 / 3


def test_rgb_order_scale_and_mean_values(tmp_path: Path) -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    preset = Preset(name="rgb", channel_order="RGB", mean=(1.0, 2.0, 3.0), scale=0.5, resize=None, crop_size=4)
    out = Preprocessor(preset).transform(image)
    assert out.shape == (3, 4, 4)
    assert out[:, 0, 0].tolist() == [(30 - 1) * 0.5, (20 - 2) * 0.5, (10 - 3) * 0.5]


def test_net_input_size_wins_over_the_preset_crop() -> None:
    preprocess = Preprocessor(PRESETS["senet"], input_size=(227, 227))
    assert preprocess.transform(_gradient_image(300, 400)).shape == (3, 227, 227)


def test_grey_input_for_single_channel_nets(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    cv2.imwrite(str(path), _gradient_image(28, 28))
    preset = Preset(name="grey", mean=None, scale=0.00390625, resize=None, crop_size=None)
    out = Preprocessor(preset, input_size=(28, 28), channels=1)(path)
    expected = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) * np.float32(0.00390625)
    assert out.shape == (1, 28, 28) and np.array_equal(out[0], expected)


def _write_mean(path: Path, mean: np.ndarray) -> None:
    from caffe2torch.caffe_proto import caffe_pb2

    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(mean.shape)
    blob.data.extend(mean.ravel().tolist())
    path.write_bytes(blob.SerializeToString())


def test_mean_image_is_read_at_the_crop_offset(tmp_path: Path) -> None:
    mean = np.arange(3 * 9 * 11, dtype=np.float32).reshape(1, 3, 9, 11)
    _write_mean(tmp_path / "mean.binaryproto", mean)
    preset = Preset(name="meanfile", mean_file=str(tmp_path / "mean.binaryproto"), resize=(9, 11), crop_size=None)
    image = _gradient_image(9, 11)
    out = Preprocessor(preset, input_size=(4, 6)).transform(image)
    # offsets (9 - 4) // 2 = 2 and (11 - 6) // 2 = 2, the same window of the image and of the mean
    expected = image[2:6, 2:8].transpose(2, 0, 1).astype(np.float32) - mean[0, :, 2:6, 2:8]
    assert np.array_equal(out, expected)


def test_real_cifar10_mean_image() -> None:
    folder = shared_path("realmodels", "cifar10_quick")
    preset = Preset(name="cifar", mean_file=str(folder / "mean.binaryproto"), resize=None, crop_size=None)
    out = Preprocessor(preset, input_size=(32, 32))(folder / "cat10.png")
    from caffe2torch.caffe_proto import read_blob

    image = cv2.imread(str(folder / "cat10.png"), cv2.IMREAD_COLOR)
    expected = image.transpose(2, 0, 1).astype(np.float32) - read_blob(folder / "mean.binaryproto").reshape(3, 32, 32)
    assert np.array_equal(out, expected)


def test_mean_image_too_small_for_the_crop(tmp_path: Path) -> None:
    _write_mean(tmp_path / "mean.binaryproto", np.zeros((1, 3, 8, 8), np.float32))
    preset = Preset(name="small", mean_file=str(tmp_path / "mean.binaryproto"))
    with pytest.raises(InputError, match="cannot crop 224x224 from an image of 8x8"):
        Preprocessor(preset, input_size=(224, 224))


def test_unreadable_images_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such image file"):
        decode_image(tmp_path / "absent.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(InputError, match="broken.jpg: cannot decode"):
        decode_image(tmp_path / "broken.jpg")


def test_presets() -> None:
    senet = get_preset("senet")
    assert (senet.channel_order, senet.mean, senet.scale, senet.resize, senet.crop_size, senet.interpolation,
            senet.label_order) == ("BGR", (104.0, 117.0, 123.0), 1.0, 256, 224, "linear", "senet")
    with pytest.raises(InputError, match="unknown preset 'nope'; known: bvlc, mobilenet, nsfw, senet, vgg"):
        get_preset("nope")
    with pytest.raises(InputError, match="not both"):
        Preset(name="both", mean=(1.0,), mean_file="m.binaryproto")
    with pytest.raises(InputError, match="channel order"):
        Preset(name="bad", channel_order="BRG")
