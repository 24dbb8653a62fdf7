"""Weights of a converted SENet release net as a state dict of timm's hand-ported ``legacy_*`` models.

timm's ports (after Cadene's) take RGB in [0, 1] normalised by the ImageNet mean/std and give classes in
sorted-synset order; the release nets take BGR 0..255 minus (104, 117, 123) and give the SENet order. The
input transform is folded into the first convolution (its weights scaled per input channel) and the
constant it adds into the following BatchNorm's running mean; the classifier's rows are permuted.

What remains different: the first convolution zero-pads its input. In Caffe's space a padded pixel is
0, i.e. the mean colour; folded into timm's space, 0 is a different colour (the ImageNet mean, about
(124, 116, 104) in RGB, against the release's mean (123, 117, 104)), so the outputs of the first
convolution differ in the ``padding``-wide border of the image. ``tests/test_to_timm.py`` measures it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from caffe2torch.conventions import TORCHVISION_LABEL_ORDER, TORCHVISION_MEAN, TORCHVISION_STD, resolve_preset
from caffe2torch.errors import InputError
from caffe2torch.runtime.labels import label_map
from caffe2torch.runtime.presets import get_preset

# zoo name -> timm model name (SE-BN-Inception has no timm port)
TIMM_NAMES = {
    "se_resnet50": "legacy_seresnet50",
    "se_resnet101": "legacy_seresnet101",
    "se_resnet152": "legacy_seresnet152",
    "se_resnext50": "legacy_seresnext50_32x4d",
    "se_resnext101": "legacy_seresnext101_32x4d",
    "senet154": "legacy_senet154",
}
_TIMM_BN_EPS = 1e-5
_BLOCK_LAYER = re.compile(r"conv(\d+)_(\d+)(_[^/]+)")
_BLOCK_PARTS = {  # Caffe layer suffix -> (timm convolution, timm BatchNorm or None)
    "_1x1_reduce": ("conv1", "bn1"),
    "_3x3": ("conv2", "bn2"),
    "_1x1_increase": ("conv3", "bn3"),
    "_1x1_proj": ("downsample.0", "downsample.1"),
    "_1x1_down": ("se_module.fc1", None),
    "_1x1_up": ("se_module.fc2", None),
}


def timm_state_dict(model: Any, zoo_model: str | None = None, *,
                    label_order: str | None = None) -> tuple[str, dict[str, torch.Tensor]]:
    """(timm model name, state dict) for a converted release net; ``load_state_dict(strict=True)`` takes it."""
    zoo_model = zoo_model or getattr(model, "zoo_model", None)
    if zoo_model not in TIMM_NAMES:
        raise InputError(f"--to timm is for the release nets timm has ({', '.join(TIMM_NAMES)}); "
                         f"this net is {zoo_model or 'not a zoo net'}")
    preset = resolve_preset(model, None) or get_preset("senet")  # every release net was trained with it
    layers = {caffe: getattr(model, ident) for ident, caffe in model.caffe_names.items()}
    state: dict[str, torch.Tensor] = {}

    def conv_bn(caffe: str, conv: str, bn: str | None) -> None:
        state[f"{conv}.weight"] = _float64(layers[caffe].weight)
        if getattr(layers[caffe], "bias", None) is not None:
            state[f"{conv}.bias"] = _float64(layers[caffe].bias)
        if bn is not None:
            state.update(_batch_norm(layers[f"{caffe}/bn"], layers[f"{caffe}/bn/scale"], bn))

    if "conv1/7x7_s2" in layers:
        conv_bn("conv1/7x7_s2", "layer0.conv1", "layer0.bn1")
    else:
        for index, caffe in enumerate(("conv1_1/3x3_s2", "conv1_2/3x3", "conv1_3/3x3"), start=1):
            conv_bn(caffe, f"layer0.conv{index}", f"layer0.bn{index}")
    _fold_input(state, preset)
    for caffe in layers:
        match = _BLOCK_LAYER.fullmatch(caffe)  # conv<stage + 1>_<block + 1><part>, e.g. conv3_2_1x1_reduce
        if match is None or match[3] not in _BLOCK_PARTS:
            continue
        stage, block = int(match[1]) - 1, int(match[2]) - 1
        conv, bn = _BLOCK_PARTS[match[3]]
        conv_bn(caffe, f"layer{stage}.{block}.{conv}", f"layer{stage}.{block}.{bn}" if bn else None)
    classifier = layers["classifier"]
    order = label_order or getattr(model, "label_order", None) or "senet"
    to_net = label_map(TORCHVISION_LABEL_ORDER, order)
    rows = torch.from_numpy(np.asarray(to_net)) if to_net is not None else torch.arange(classifier.weight.shape[0])
    state["last_linear.weight"] = _float64(classifier.weight)[rows]
    state["last_linear.bias"] = _float64(classifier.bias)[rows]
    return TIMM_NAMES[zoo_model], {key: value.float() if value.is_floating_point() else value
                                   for key, value in state.items()}


def _float64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(torch.float64)


def _batch_norm(norm: Any, scale: Any, prefix: str) -> dict[str, torch.Tensor]:
    """Caffe's BatchNorm (statistics) and Scale (gamma, beta) as one torch BatchNorm2d."""
    if abs(norm.eps - _TIMM_BN_EPS) > 1e-9:
        raise InputError(f"{prefix}: Caffe eps {norm.eps} differs from timm's {_TIMM_BN_EPS}")
    return {
        f"{prefix}.weight": _float64(scale.weight),
        f"{prefix}.bias": _float64(scale.bias),
        f"{prefix}.running_mean": _float64(norm.mean),
        f"{prefix}.running_var": _float64(norm.var),
        f"{prefix}.num_batches_tracked": torch.tensor(0, dtype=torch.int64),
    }


def _fold_input(state: dict[str, torch.Tensor], preset: Any) -> None:
    """Fold timm's input (RGB, (x - mean) / std of [0, 1]) into layer0.conv1 and layer0.bn1.

    Caffe pixel c' = 255 * (std_c * x_c + mean_c) - caffe_mean_c' with c' the net's channel for RGB c: the
    scale goes into conv1's weights, and conv1 applied to the constant part is subtracted from bn1's mean
    (conv1 has no bias), in float64.
    """
    weight = state["layer0.conv1.weight"]
    reverse = preset.channel_order == "BGR"
    net_channel = [2, 1, 0] if reverse else [0, 1, 2]  # the net's channel of R, G, B
    std = torch.tensor(TORCHVISION_STD, dtype=torch.float64) * preset.scale
    caffe_mean = torch.tensor(preset.mean, dtype=torch.float64)[net_channel]
    offset = (255.0 * torch.tensor(TORCHVISION_MEAN, dtype=torch.float64) - caffe_mean) * preset.scale
    rgb_weight = weight[:, net_channel]
    state["layer0.conv1.weight"] = rgb_weight * (255.0 * std).view(1, 3, 1, 1)
    constant = (rgb_weight * offset.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
    state["layer0.bn1.running_mean"] = state["layer0.bn1.running_mean"] - constant
