"""The torchvision convention: the same decoded pixels give the same scores, classes reordered to synset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from caffe2torch.conventions import TORCHVISION_MEAN, TORCHVISION_STD, apply_convention
from caffe2torch.converter import convert
from caffe2torch.errors import InputError
from caffe2torch.runtime.labels import label_map
from caffe2torch.runtime.preprocess import center_crop, decode_image, resize_image, resized_size
from caffe2torch.testing import seeded_weights, smooth_images
from caffe2torch.zoo import MODELS

SENET_MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


@pytest.fixture(scope="module")
def se_resnet50():
    net = MODELS["se_resnet50"].build()
    return convert(net, seeded_weights(net, smooth_images(2, seed=3)))


def _decoded_crops(paths: list[Path]) -> np.ndarray:
    """BGR uint8 crops, N x 224 x 224 x 3, as Caffe's data path makes them (256 shorter side, center 224)."""
    crops = []
    for path in paths:
        image = decode_image(path)
        crops.append(center_crop(resize_image(image, resized_size(*image.shape[:2], 256)), (224, 224)))
    return np.stack(crops)


def _both_inputs(crops: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(Caffe input: BGR minus the release mean; torchvision input: RGB in [0, 1] normalised)."""
    bgr = torch.from_numpy(crops.astype(np.float32)).permute(0, 3, 1, 2)
    caffe = bgr - torch.from_numpy(SENET_MEAN_BGR).view(1, 3, 1, 1)
    rgb = bgr.flip(1) / 255
    normalised = (rgb - torch.tensor(TORCHVISION_MEAN).view(1, 3, 1, 1)) / torch.tensor(TORCHVISION_STD).view(1, 3, 1, 1)
    return caffe, normalised


def _images(realmodels: Path, count: int) -> list[Path]:
    paths = sorted((realmodels / "imagenet-val-100").glob("*.JPEG"))
    assert len(paths) == 100
    return paths[:count]


@pytest.mark.parametrize("count", [8, pytest.param(100, marks=pytest.mark.slow)])
def test_the_input_stage_gives_caffes_pixels_and_the_rows_are_reordered(se_resnet50, realmodels: Path,
                                                                       count: int) -> None:
    """Stage by stage on real photographs: the input stage turns rgb_norm(img) into bgr_minus_mean(img) up
    to float32 rounding (2 ulps of 255), and the output is the Caffe net's, rows in synset order, exactly."""
    converted, meta = apply_convention(se_resnet50, "torchvision", preset="senet", label_order="senet")
    assert meta["label_order"] == "synset" and meta["preprocessing"]["channel_order"] == "RGB"
    to_senet = torch.from_numpy(label_map("synset", "senet"))
    paths = _images(realmodels, count)
    for start in range(0, count, 20):
        caffe, normalised = _both_inputs(_decoded_crops(paths[start:start + 20]))
        pixels = converted.convention_input(normalised)
        assert (pixels - caffe).abs().max().item() <= 3e-5
        with torch.no_grad():
            assert torch.equal(converted(normalised), se_resnet50(pixels)[:, to_senet])


@pytest.mark.parametrize("count", [8, pytest.param(100, marks=pytest.mark.slow)])
def test_torchvision_convention_on_a_real_trained_net(realmodels: Path, count: int) -> None:
    """open_nsfw (real weights, the same BGR minus (104, 117, 123) preprocessing as the SENet preset):
    torchvision-convention(rgb_norm(img)) equals caffe(bgr_minus_mean(img)) within 1e-4."""
    from caffe2torch.caffe_proto import read_prototxt

    root = realmodels / "open_nsfw"
    model = convert(read_prototxt(root / "deploy.prototxt"), _weights(root / "resnet_50_1by2_nsfw.caffemodel"))
    converted, meta = apply_convention(model, "torchvision", preset="senet")
    assert meta["label_order"] is None  # two classes in the net's own order: nothing to reorder
    paths = _images(realmodels, count)
    for start in range(0, count, 20):
        caffe, normalised = _both_inputs(_decoded_crops(paths[start:start + 20]))
        with torch.no_grad():
            expected, got = model(caffe), converted(normalised)
        assert expected[:, 1].std() > 1e-3  # the photographs get different scores: a real comparison
        assert (got - expected).abs().max().item() <= 1e-4


def _weights(path: Path):
    import warnings

    from caffe2torch.caffe_proto import read_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # open_nsfw's CaffeOnSpark data-layer fields
        return read_weights(path)


def test_the_input_stage_is_the_inverse_of_torchvision_normalisation(se_resnet50) -> None:
    """Negative control: dropping the channel reversal breaks the equality the tests above check."""
    converted, _ = apply_convention(se_resnet50, "torchvision", preset="senet", label_order="senet")
    stage = converted.convention_input
    crops = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    caffe, normalised = _both_inputs(crops)
    assert (stage(normalised) - caffe).abs().max().item() < 1e-3
    stage.reverse_channels = False
    assert (stage(normalised) - caffe).abs().max().item() > 1


def test_caffe_convention_keeps_the_model() -> None:
    net = MODELS["se_resnet50"].build()
    model = convert(net, None, random_init=True)
    same, meta = apply_convention(model, "caffe", preset="senet", label_order="senet")
    assert same is model and meta["preprocessing"]["mean"] == (104.0, 117.0, 123.0)


def test_torchvision_convention_needs_a_known_preprocessing() -> None:
    from caffe2torch.caffe_proto import parse_prototxt

    net = parse_prototxt('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 '
                         'dim: 4 } } } layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    model = convert(net, None, random_init=True)
    with pytest.raises(InputError, match="preset"):
        apply_convention(model, "torchvision")
    with pytest.raises(InputError, match="unknown convention"):
        apply_convention(model, "keras")
