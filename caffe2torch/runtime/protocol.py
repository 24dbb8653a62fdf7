"""Which preprocessing a net gets, from what the user says: a preset, the training prototxt, explicit steps.

Three sources, each overriding the one before field by field:

1. a named preset (``--preset``), else the preset of the zoo model the net is;
2. ``--transform-from train_val.prototxt``: the ``transform_param`` of its TEST-phase data layer
   (``crop_size``, ``mean_value`` / ``mean_file``, ``scale``; ``mirror`` is a training augmentation and is
   ignored) and, for an ``ImageData`` layer, its ``new_height``/``new_width`` resize;
3. the explicit options ``--resize``, ``--crop``, ``--mean`` / ``--mean-file``, ``--scale``,
   ``--channel-order``, ``--interpolation``.

Setting a mean value clears an inherited mean image and the other way round.  A mean image fixes the
resize to its own size unless ``--resize`` says otherwise (Caffe subtracts it from images of its size).
Without a preset, the fields no source gives are Caffe's defaults: BGR, no mean, scale 1, no resize, the
net's input size as the crop.  With no source at all the net's preprocessing is unknown (``None``).

Values may be given parsed (``256``, ``(256, 256)``, ``(104, 117, 123)``) or as the command line's text
(``"256x256"``, ``"104,117,123"``); bad values are :class:`InputError` lines naming the option.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

from caffe2torch.errors import InputError
from caffe2torch.runtime.presets import CHANNEL_ORDERS, INTERPOLATIONS, PRESETS, Preset, get_preset

Size = tuple[int, int]
SizeLike = Union[int, Sequence[int], str]
MeanLike = Union[float, Sequence[float], str]

# The fields a protocol is made of, as the options that set them (interpolation alone is a tweak of a
# known protocol, not a protocol).
PROTOCOL_OPTIONS = ("--resize N|HxW", "--crop N|HxW", "--mean B,G,R", "--mean-file F.binaryproto", "--scale S",
                    "--channel-order bgr|rgb")


def unknown_preprocessing_message() -> str:
    """The one-line error for a net whose preprocessing nothing tells, listing every way to tell it."""
    return ("cannot tell how this net's images were preprocessed: name the model (--model), a preset "
            f"(--preset {'|'.join(sorted(PRESETS))}), the training prototxt whose TEST-phase data layer says "
            f"(--transform-from train_val.prototxt), or the steps ({', '.join(PROTOCOL_OPTIONS)})")


@dataclass(frozen=True)
class PreprocessOptions:
    """What the user said about preprocessing; ``None`` is "not said".  See the module docstring."""

    preset: str | None = None
    transform_from: str | Path | None = None
    resize: SizeLike | None = None
    crop: SizeLike | None = None
    mean: MeanLike | None = None
    mean_file: str | Path | None = None
    scale: float | str | None = None
    channel_order: str | None = None
    interpolation: str | None = None


def parse_size(option: str, value: SizeLike) -> int | Size:
    """``256`` / ``"256"`` (one number) or ``(227, 227)`` / ``"227x227"`` (height x width), positive."""
    text = value if isinstance(value, str) else None
    try:
        if isinstance(value, str):
            parts = value.strip().lower().split("x")
            numbers = [int(part) for part in parts]
        elif isinstance(value, int) and not isinstance(value, bool):
            numbers = [value]
        else:
            numbers = [int(v) for v in value]
            if any(n != v for n, v in zip(numbers, value)):
                raise ValueError
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (1, 2) or any(n <= 0 for n in numbers):
        shown = text if text is not None else value
        raise InputError(f"{option} {shown!r}: expected a positive size, N or HxW (such as 256 or 256x256)")
    return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


def parse_mean(value: MeanLike) -> tuple[float, ...]:
    """``"104,117,123"`` / ``(104, 117, 123)``: per channel in the net's order; one value for every channel."""
    try:
        if isinstance(value, str):
            numbers = tuple(float(part) for part in value.replace(" ", "").split(","))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers = (float(value),)
        else:
            numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if not numbers or not all(math.isfinite(n) for n in numbers):
        raise InputError(f"--mean {value!r}: expected numbers such as 104,117,123 (one per channel in the "
                         "net's channel order, or one for every channel)")
    return numbers


def parse_scale(value: float | str) -> float:
    """A positive finite factor (Caffe's ``transform_param.scale``)."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(f"--scale {value!r}: expected a positive number such as 0.017")
    return scale


def parse_channel_order(value: str) -> str:
    """``bgr`` or ``rgb``, in any case."""
    order = str(value).upper()
    if order not in CHANNEL_ORDERS:
        raise InputError(f"--channel-order {value!r}: expected one of {', '.join(o.lower() for o in CHANNEL_ORDERS)}")
    return order


def parse_interpolation(value: str) -> str:
    if value not in INTERPOLATIONS:
        raise InputError(f"--interpolation {value!r}: expected one of {', '.join(INTERPOLATIONS)}")
    return value


def _mean_file(option: str, path: str | Path) -> str:
    if not Path(path).is_file():
        raise InputError(f"{option} {path}: no such mean file")
    return str(path)


@dataclass(frozen=True)
class TransformParam:
    """What a training prototxt's TEST-phase data layer says about preprocessing (``None``: nothing)."""

    layer: str
    crop: int | None
    mean: tuple[float, ...] | None
    mean_file: str | None  # as written in the prototxt
    scale: float
    resize: Size | None


def _test_phase_data_layers(net: Any) -> list[Any]:
    """The layers Caffe keeps in the TEST phase that carry a ``transform_param``."""
    from caffe2torch.converter.graph import layer_included

    return [layer for layer in net.layer if layer.HasField("transform_param") and layer_included(layer)]


def read_transform_param(path: str | Path) -> TransformParam:
    """The preprocessing of the TEST-phase data layer of the training prototxt ``path``."""
    from caffe2torch.caffe_proto import read_prototxt

    if not Path(path).is_file():
        raise InputError(f"--transform-from {path}: no such prototxt file")
    found = []
    for layer in _test_phase_data_layers(read_prototxt(path)):
        param = layer.transform_param
        if param.mean_value and param.HasField("mean_file"):
            raise InputError(f"{path}: layer {layer.name!r} gives both mean_value and mean_file (Caffe refuses "
                             "both too)")
        resize = None
        if layer.type == "ImageData" and layer.image_data_param.new_height and layer.image_data_param.new_width:
            resize = (int(layer.image_data_param.new_height), int(layer.image_data_param.new_width))
        found.append(TransformParam(
            layer=layer.name, crop=int(param.crop_size) or None,
            mean=tuple(float(v) for v in param.mean_value) or None,
            mean_file=param.mean_file if param.HasField("mean_file") else None,
            scale=float(param.scale), resize=resize))
    if not found:
        raise InputError(f"{path}: no data layer with a transform_param in the TEST phase (one with "
                         "include { phase: TEST }, or with no include/exclude rule)")
    if any(dataclasses.replace(other, layer=found[0].layer) != found[0] for other in found[1:]):
        raise InputError(f"{path}: the TEST-phase data layers {', '.join(repr(t.layer) for t in found)} "
                         "preprocess differently; give the steps as options instead")
    return found[0]


def _locate_mean_file(written: str, prototxt: Path) -> str:
    """A prototxt's ``mean_file``: as written (Caffe's paths are relative to where Caffe ran), else
    relative to the prototxt's folder, else the same file name in that folder (downloaded models keep the
    mean beside the prototxt while the path still names Caffe's tree)."""
    for candidate in (Path(written), prototxt.parent / written, prototxt.parent / Path(written).name):
        if candidate.is_file():
            return str(candidate)
    raise InputError(f"--transform-from {prototxt}: its mean_file {written!r} is not found (as written, nor "
                     "in the prototxt's folder); give it with --mean-file")


def _transform_fields(path: str | Path, explicit: dict[str, Any]) -> dict[str, Any]:
    """The preset fields ``--transform-from`` sets; the mean file is only looked for when no explicit
    mean replaces it."""
    param = read_transform_param(path)
    fields: dict[str, Any] = {"scale": param.scale}
    if param.crop is not None:
        fields.update(crop_size=param.crop, crop_fixed=True)
    if param.resize is not None:
        fields["resize"] = param.resize
    if param.mean is not None:
        fields["mean"] = param.mean
    elif param.mean_file is not None and "mean" not in explicit and "mean_file" not in explicit:
        fields["mean_file"] = _locate_mean_file(param.mean_file, Path(path))
    return fields


def _explicit_fields(options: PreprocessOptions) -> dict[str, Any]:
    """The preset fields the explicit options set, parsed and checked."""
    if options.mean is not None and options.mean_file is not None:
        raise InputError("give --mean or --mean-file, not both (Caffe refuses both too)")
    fields: dict[str, Any] = {}
    if options.resize is not None:
        fields["resize"] = parse_size("--resize", options.resize)
    if options.crop is not None:
        fields.update(crop_size=parse_size("--crop", options.crop), crop_fixed=True)
    if options.mean is not None:
        fields["mean"] = parse_mean(options.mean)
    if options.mean_file is not None:
        fields["mean_file"] = _mean_file("--mean-file", options.mean_file)
    if options.scale is not None:
        fields["scale"] = parse_scale(options.scale)
    if options.channel_order is not None:
        fields["channel_order"] = parse_channel_order(options.channel_order)
    return fields


# Caffe's own defaults, for what neither a preset nor an option says.
CAFFE_DEFAULTS = Preset(name="custom", channel_order="BGR", mean=None, scale=1.0, resize=None, crop_size=None)


def resolve_preprocessing(options: PreprocessOptions | None, default_preset: str | None = None) -> Preset | None:
    """The preprocessing ``options`` describe over the preset ``options.preset`` or ``default_preset``
    (a zoo model's); ``None`` when nothing describes one.  See the module docstring for the order."""
    options = options or PreprocessOptions()
    explicit = _explicit_fields(options)
    interpolation = parse_interpolation(options.interpolation) if options.interpolation is not None else None
    name = options.preset or default_preset
    base = get_preset(name) if name is not None else None
    layers = [explicit]
    if options.transform_from is not None:
        layers.insert(0, _transform_fields(options.transform_from, explicit))
    if base is None and not any(layers):
        return None
    fields: dict[str, Any] = {}
    resize_given = False
    for layer in layers:
        if "mean" in layer:
            fields["mean_file"] = None
        if "mean_file" in layer:
            fields["mean"] = None
        resize_given = resize_given or "resize" in layer
        fields.update(layer)
    if fields.get("mean_file") and not resize_given:
        fields["resize"] = None  # the mean image's size: see Preprocessor
    if interpolation is not None:
        fields["interpolation"] = interpolation
    return dataclasses.replace(base or CAFFE_DEFAULTS, **fields)
