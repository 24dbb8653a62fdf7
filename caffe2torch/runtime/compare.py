"""Layer-by-layer comparison of a converted net against a reference Caffe runtime.

Both sides run the same input; every layer's output is compared, in the net's order, so the first layer
whose output diverges is where a conversion goes wrong (later layers only inherit the error).  A layer
diverges when its largest absolute difference exceeds ``tolerance`` times the largest magnitude of the
reference's output: a relative measure, because blobs range from SE gates in 0..1 to logits in the tens,
and float32 rounding grows with them.  The default 1e-3 is several times what rounding reaches in the
deepest SENet (about 2e-4 relative at its last stage), and far below any semantic error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffe2torch.errors import InputError

DEFAULT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class LayerDifference:
    """One layer's output on both sides.  ``max_rel`` is ``max_abs`` over the reference's largest
    magnitude; both are infinite where the two disagree on shape or on where the NaNs are."""

    layer: str
    type: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    diverges: bool
    note: str | None = None


@dataclass
class LayerComparison:
    """Every layer's output, ours against a reference runtime's, in the net's order."""

    reference: str
    tolerance: float
    input: str  # where the input came from: an image path or the random seed
    layers: list[LayerDifference] = field(default_factory=list)

    @property
    def first_divergence(self) -> LayerDifference | None:
        return next((layer for layer in self.layers if layer.diverges), None)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; infinite differences become null."""
        first = self.first_divergence
        return {
            "reference": self.reference,
            "tolerance": self.tolerance,
            "input": self.input,
            "first_divergence": first.layer if first is not None else None,
            "layers": [{**asdict(layer), "shape": list(layer.shape),
                        "max_abs": _finite_or_none(layer.max_abs), "max_rel": _finite_or_none(layer.max_rel)}
                       for layer in self.layers],
        }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def difference(layer: str, layer_type: str, ours: np.ndarray, reference: np.ndarray,
               tolerance: float) -> LayerDifference:
    """Compare one layer's outputs (see the module docstring for when a layer diverges)."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if ours.shape != reference.shape:
        return LayerDifference(layer, layer_type, ours.shape, math.inf, math.inf, True,
                               f"shape {list(ours.shape)}, the reference's {list(reference.shape)}")
    if not np.array_equal(np.isnan(ours), np.isnan(reference)):
        return LayerDifference(layer, layer_type, ours.shape, math.inf, math.inf, True, "NaN on one side only")
    both = ~np.isnan(ours)
    if not both.any():
        return LayerDifference(layer, layer_type, ours.shape, 0.0, 0.0, False)
    with np.errstate(invalid="ignore"):  # inf - inf where both sides overflowed alike
        gaps = np.abs(ours[both] - reference[both])
    gaps[ours[both] == reference[both]] = 0.0
    max_abs = float(gaps.max())
    scale = float(np.abs(reference[both]).max())
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    return LayerDifference(layer, layer_type, ours.shape, max_abs, max_rel, not max_rel <= tolerance)


def compare_layers(prototxt: Any, weights: Any, *, image: str | Path | None = None, reference: str = "opencv",
                   tolerance: float = DEFAULT_TOLERANCE, preset_name: str | None = None,
                   input_shape: tuple[int, ...] | None = None, seed: int = 0) -> LayerComparison:
    """Run ``prototxt`` with ``weights`` in our converter and in ``reference`` on the same input and
    compare every layer's output.

    The input is ``image`` preprocessed with the preset (``preset_name``, else the zoo model's), or a
    seeded random input of the net's input shape (a random picture run through the preset when there is
    one).  The batch is the net's declared one (``input_shape``'s first dimension when given): a layer that
    mixes the images of a batch shows only then; an image is repeated to fill it, random inputs differ.
    """
    import torch

    import caffe2torch
    from caffe2torch.converter.deploy import deploy_form
    from caffe2torch.nets import open_net
    from caffe2torch.runtime import reference as references
    from caffe2torch.runtime.device import failures_named

    if not tolerance > 0:
        raise InputError(f"the tolerance must be positive, not {tolerance}")
    run_reference = references.runtime(reference)  # a missing runtime fails before any work
    opened = open_net(prototxt)
    deploy = deploy_form(opened.net, input_shape)  # the layers to compare, before the work of converting
    if deploy.problem is not None:
        raise InputError(deploy.problem)
    preset = _preset(opened.zoo_entry, preset_name)
    inputs, described = _inputs(deploy.input_shapes, image, preset, seed)
    names = [name for name, _ in deploy.layers]
    model = caffe2torch.load(opened, weights, outputs=names, input_shape={n: a.shape for n, a in inputs.items()})
    with torch.no_grad(), failures_named(model):
        ours = model(*(torch.from_numpy(inputs[name]) for name in model.input_names))
    theirs = run_reference(model, weights, inputs, names)
    comparison = LayerComparison(reference, tolerance, described)
    for name, layer_type in deploy.layers:
        mine = ours[name]
        if isinstance(mine, tuple):  # a layer with several tops: the references give its first
            mine = mine[0]
        comparison.layers.append(difference(name, layer_type, mine.numpy(), theirs[name], tolerance))
    return comparison


def _preset(zoo_entry: Any, preset_name: str | None) -> Any:
    """The named preset, else the preset of the zoo model the net is, else None."""
    from caffe2torch.runtime.presets import get_preset

    if preset_name is None and zoo_entry is not None:
        preset_name = zoo_entry.preset
    return get_preset(preset_name) if preset_name is not None else None


def _inputs(input_shapes: dict[str, tuple[int, ...]], image: str | Path | None, preset: Any,
            seed: int) -> tuple[dict[str, np.ndarray], str]:
    """One input batch per net input, of its declared shape, and a description of where it came from."""
    from caffe2torch.runtime.preprocess import Preprocessor
    from caffe2torch.runtime.presets import PRESETS

    shapes = {name: (max(1, shape[0]), *shape[1:]) if shape else shape for name, shape in input_shapes.items()}
    if image is not None:
        if len(shapes) != 1:
            raise InputError(f"--input gives one image, but the net has {len(shapes)} inputs")
        if preset is None:
            raise InputError("cannot tell how to preprocess the image for this net: name a preset "
                             f"(--preset {'|'.join(sorted(PRESETS))})")
        (name, shape), = shapes.items()
        if len(shape) != 4:
            raise InputError(f"the net's input {name!r} has shape {list(shape)}, not N x C x H x W: not an image")
        array = Preprocessor(preset, input_size=shape[2:], channels=shape[1])(image)
        return {name: np.repeat(array[None], shape[0], axis=0)}, str(image)
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in shapes.items():
        if preset is not None and len(shape) == 4 and shape[1] in (1, 3):
            preprocess = Preprocessor(preset, input_size=shape[2:], channels=shape[1])
            arrays[name] = np.stack([preprocess.transform(_random_picture(rng, shape[2], shape[3], shape[1]))
                                     for _ in range(shape[0])])
        else:
            arrays[name] = rng.standard_normal(shape, dtype=np.float32)
    how = f"a random picture through preset {preset.name!r}" if preset is not None else "standard normal values"
    return arrays, f"random input (seed {seed}: {how})"


def _random_picture(rng: np.random.Generator, height: int, width: int, channels: int) -> np.ndarray:
    """An H x W x C uint8 picture of smooth random shapes plus a little grain.

    Like a photograph, and unlike white noise, it is mostly low frequencies: white noise drives a net's
    activations far beyond anything it was trained or calibrated on, where saturating layers (a Sigmoid
    fed values in the thousands) turn tiny relative rounding differences into large ones.
    """
    import torch

    coarse = torch.from_numpy(rng.uniform(0, 255, (1, channels, 8, 8)).astype(np.float32))
    picture = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
    picture += torch.from_numpy(rng.normal(0, 8, picture.shape).astype(np.float32))
    return picture.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def write_report(comparison: LayerComparison, path: str | Path, *, force: bool = False) -> Path:
    """Write the comparison as JSON (atomically; an existing file only with ``force``)."""
    from caffe2torch.files import write_json

    return write_json(path, comparison.to_json(), force=force)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def format_table(comparison: LayerComparison) -> list[str]:
    """The comparison as lines of text: one per layer, then the verdict."""
    width = max([len(layer.layer) for layer in comparison.layers] + [5])
    lines = [f"{'layer':<{width}}  {'type':<12}  {'shape':<16}  {'max abs':>9}  {'max rel':>9}"]
    for layer in comparison.layers:
        mark = "  <- diverges" if layer.diverges else ""
        note = f"  ({layer.note})" if layer.note else ""
        lines.append(f"{layer.layer:<{width}}  {layer.type:<12}  {_shape_text(layer.shape):<16}  "
                     f"{layer.max_abs:9.2e}  {layer.max_rel:9.2e}{mark}{note}")
    first = comparison.first_divergence
    if first is None:
        lines.append(f"all {len(comparison.layers)} layers agree with {comparison.reference} within "
                     f"{comparison.tolerance:g} (relative to each output's largest magnitude)")
    else:
        count = sum(layer.diverges for layer in comparison.layers)
        lines.append(f"first divergence: layer {first.layer!r} ({first.type}), max abs {first.max_abs:.3g}, "
                     f"max rel {first.max_rel:.3g} > {comparison.tolerance:g}; "
                     f"{count} of {len(comparison.layers)} layers diverge")
    return lines

