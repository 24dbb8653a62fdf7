"""How a model's inputs were prepared when it was trained and evaluated, kept as data beside the model.

Like timm's pretrained configurations: the runtime reads a :class:`Preset` and never hard-codes a
protocol, so a new model family needs a new entry here, not new code in the data path.
"""

from __future__ import annotations

from dataclasses import dataclass

from caffe2torch.errors import InputError

CHANNEL_ORDERS = ("BGR", "RGB")
# Names accepted by caffe2torch.runtime.preprocess.resize_image.
INTERPOLATIONS = ("linear", "area", "cubic", "nearest", "lanczos", "pil-linear")


@dataclass(frozen=True)
class Preset:
    """One preprocessing protocol.

    ``mean`` is per channel in ``channel_order`` (Caffe's ``mean_value``); ``mean_file`` a ``.binaryproto``
    mean image (Caffe's ``mean_file``); at most one of them.  ``scale`` multiplies ``pixel - mean``, as
    Caffe's ``transform_param.scale`` does.  ``resize`` is the shorter side (an int), a fixed
    ``(height, width)`` (Caffe's ``new_height``/``new_width``), or ``None`` to keep the decoded size.
    ``crop_size`` is the center crop used when the net does not declare its input size (a net that does
    is cropped to that size).  ``label_order`` names the order of the net's outputs (see
    :mod:`caffe2torch.runtime.labels`), ``None`` when unknown.
    """

    name: str
    channel_order: str = "BGR"
    mean: tuple[float, ...] | None = None
    mean_file: str | None = None
    scale: float = 1.0
    resize: int | tuple[int, int] | None = 256
    crop_size: int | None = 224
    interpolation: str = "linear"
    label_order: str | None = None

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise InputError(f"preset {self.name!r}: channel order {self.channel_order!r} is not one of "
                             f"{', '.join(CHANNEL_ORDERS)}")
        if self.mean is not None and self.mean_file is not None:
            raise InputError(f"preset {self.name!r}: give mean values or a mean file, not both (Caffe "
                             "refuses both too)")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"preset {self.name!r}: interpolation {self.interpolation!r} is not one of "
                             f"{', '.join(INTERPOLATIONS)}")
        if not self.scale > 0:
            raise InputError(f"preset {self.name!r}: scale must be positive, not {self.scale}")
        sizes = [self.resize] if isinstance(self.resize, int) else list(self.resize or ())
        if any(size <= 0 for size in sizes) or (self.crop_size is not None and self.crop_size <= 0):
            raise InputError(f"preset {self.name!r}: resize and crop sizes must be positive")


PRESETS: dict[str, Preset] = {
    # The SENet release (hujie-frank/SENet): BGR 0..255 minus the per-channel mean, no division; single
    # 224 center crop of the image resized to shorter side 256 (Table 1); outputs in ILSVRC2017_val.txt order.
    "senet": Preset(name="senet", channel_order="BGR", mean=(104.0, 117.0, 123.0), scale=1.0, resize=256,
                    crop_size=224, interpolation="linear", label_order="senet"),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an :class:`InputError` naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
