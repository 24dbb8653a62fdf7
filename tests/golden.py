"""Test support for golden comparisons: seeded Caffe weights that exercise Caffe's rules, and images.

Random weights are no test of a converter: with random BatchNorm statistics the activations blow up or
die out exponentially through a deep residual net, and with moving-average factors of 1 and variances
far above eps a converter that ignores either still passes.  :func:`seeded_weights` therefore

* draws every layer's blobs from its own generator, seeded from the layer name (adding a layer does not
  change the others), He-scaled for convolutions and inner products, Scale weights near 1, small biases;
* takes each BatchNorm's statistics from a calibration pass: a forward pre-hook sets the module's mean
  and variance from its actual input before it runs, and modules run in forward order, so each one is
  calibrated on calibrated predecessors and the activations stay near unit scale through 150 layers;
* makes eps matter: in one channel per BatchNorm the producing convolution's filter is scaled so that the
  channel's variance is below eps (the channel keeps a sane size only if eps is added as Caffe adds it);
* stores the statistics with a moving-average factor far from 1 (``[mean * f, var * f, [f]]``, f from
  0.3 to 1000, per layer), as Caffe's solver leaves them.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from caffe2torch.converter import convert, expected_blob_shapes
from caffe2torch.converter.layers.batch_norm import BatchNorm

SENET_MEAN_BGR = (104.0, 117.0, 123.0)
LINEAR_TYPES = ("Convolution", "InnerProduct", "Deconvolution")


def layer_rng(layer_name: str, seed: int) -> np.random.Generator:
    """The generator of one layer: the same name and seed always give the same blobs."""
    return np.random.default_rng([seed, zlib.crc32(layer_name.encode())])


def smooth_images(count: int, size: int = 224, *, seed: int = 0, mean: Sequence[float] = SENET_MEAN_BGR) -> np.ndarray:
    """``count`` image-like BGR inputs (N x 3 x size x size, float32): 0..255 pictures made of blurred
    blobs and edges plus a little pixel noise, minus ``mean`` as the SENet preset does.  Real images are
    spatially correlated; white noise would give convolutions unrealistically small outputs."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 7, 7)).astype(np.float32))
        picture = nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
        picture += torch.from_numpy(rng.normal(0, 12, (3, size, size)).astype(np.float32))
        images.append(picture.clamp(0, 255).round().numpy())
    return (np.stack(images) - np.asarray(mean, np.float32).reshape(1, -1, 1, 1)).astype(np.float32)


def _initial_blobs(layer_type: str, layer_name: str, shapes: Sequence[tuple[int, ...]], seed: int) -> list[np.ndarray]:
    rng = layer_rng(layer_name, seed)
    if layer_type == "BatchNorm":  # placeholders: the calibration pass sets them
        return [np.zeros(shapes[0], np.float32), np.ones(shapes[1], np.float32), np.ones(shapes[2], np.float32)]
    blobs = []
    for index, shape in enumerate(shapes):
        if layer_type == "Scale" and index == 0:
            blob = rng.uniform(0.8, 1.2, shape)
        elif index == 0 and len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            blob = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        else:
            blob = rng.normal(0.0, 0.05, shape)
        blobs.append(blob.astype(np.float32))
    return blobs


def _producers(model: Any, net: Any) -> dict[str, str]:
    """BatchNorm submodule -> the Caffe name of the Convolution / InnerProduct whose output only it reads
    (whose blobs hold one output channel per row)."""
    transposed = {layer.name for layer in net.layer
                  if layer.type == "InnerProduct" and layer.inner_product_param.transpose}
    result = {}
    modules = dict(model.named_modules())
    for node in model.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], BatchNorm):
            continue
        source = node.args[0]
        if (source.op == "call_module" and len(source.users) == 1
                and isinstance(modules[source.target], (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
                and model.caffe_names[source.target] not in transposed):
            result[node.target] = model.caffe_names[source.target]
    return result


def seeded_weights(net: Any, calibration: np.ndarray, *, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Blobs for every layer of ``net`` (a NetParameter), BatchNorms calibrated on ``calibration`` (one
    input batch); see the module docstring for what they exercise."""
    layer_types = {layer.name: layer.type for layer in net.layer}
    shapes = expected_blob_shapes(net, input_shape=calibration.shape)
    blobs = {name: _initial_blobs(layer_types[name], name, layer_shapes, seed) for name, layer_shapes in shapes.items()}
    model = convert(net, blobs, input_shape=calibration.shape)
    producers = _producers(model, net)

    def calibrate(module: BatchNorm, args: tuple[torch.Tensor, ...], ident: str) -> tuple[torch.Tensor]:
        x = args[0]
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        name = model.caffe_names[ident]
        if ident in producers and bool((var > 0).any()):
            rng = layer_rng(name + "/eps", seed)
            channel = int(rng.choice(np.flatnonzero(var.numpy() > 1e-6 * float(var.max()))))
            target = module.eps * rng.uniform(0.1, 0.9)
            factor = math.sqrt(target / float(var[channel]))
            for blob in blobs[producers[ident]]:
                blob[channel] *= factor  # the filter and the bias of that output channel
            view = (1, -1) + (1,) * (x.dim() - 2)
            channel_scale = torch.ones(x.shape[1]).index_fill_(0, torch.tensor(channel), factor)
            x = x * channel_scale.view(view)
            mean, var = mean * channel_scale, var * channel_scale**2
        module.mean, module.var = mean.clone(), var.clone()
        f = float(10 ** layer_rng(name + "/factor", seed).uniform(math.log10(0.3), 3.0))
        blobs[name] = [(module.mean.numpy() * f).astype(np.float32), (module.var.numpy() * f).astype(np.float32),
                       np.array([f], np.float32)]
        return (x,)

    handles = [module.register_forward_pre_hook(lambda m, a, ident=ident: calibrate(m, a, ident))
               for ident, module in model.named_children() if isinstance(module, BatchNorm)]
    try:
        with torch.no_grad():
            model(torch.from_numpy(calibration))
    finally:
        for handle in handles:
            handle.remove()
    return blobs


def max_abs_diff(ours: Mapping[str, Any], reference: Mapping[str, np.ndarray], name: str) -> float:
    """The largest absolute difference of blob ``name`` (shapes must agree)."""
    mine = np.asarray(ours[name].detach() if isinstance(ours[name], torch.Tensor) else ours[name])
    theirs = reference[name]
    assert mine.shape == theirs.shape, f"{name}: shape {mine.shape} vs the reference's {theirs.shape}"
    return float(np.abs(mine.astype(np.float64) - theirs).max())
