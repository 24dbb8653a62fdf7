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

    ``mean`` is per channel in ``channel_order`` (Caffe's ``mean_value``; one value serves every channel);
    ``mean_file`` a ``.binaryproto`` mean image (Caffe's ``mean_file``); at most one of them.  ``scale``
    multiplies ``pixel - mean``, as Caffe's ``transform_param.scale`` does.  ``resize`` is the shorter side
    (an int), a fixed ``(height, width)`` (Caffe's ``new_height``/``new_width``, ``convert_imageset
    --resize_height/--resize_width``), or ``None`` to keep the decoded size, except with a mean image,
    where ``None`` means the mean image's size (Caffe subtracts a mean image from images of its own size).
    ``crop_size`` (an int or ``(height, width)``) is the center crop used when the net does not declare its
    input size (a net that does is cropped to that size), or always when ``crop_fixed`` (an explicit
    ``--crop``, a training prototxt's ``crop_size``).  ``label_order`` names the order of the net's outputs
    (see :mod:`caffe2torch.runtime.labels`), ``None`` when unknown.
    """

    name: str
    channel_order: str = "BGR"
    mean: tuple[float, ...] | None = None
    mean_file: str | None = None
    scale: float = 1.0
    resize: int | tuple[int, int] | None = 256
    crop_size: int | tuple[int, int] | None = 224
    interpolation: str = "linear"
    label_order: str | None = None
    crop_fixed: bool = False

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
        sizes = [size for value in (self.resize, self.crop_size)
                 for size in ([value] if isinstance(value, int) else list(value or ()))]
        if any(size <= 0 for size in sizes):
            raise InputError(f"preset {self.name!r}: resize and crop sizes must be positive")
        if self.crop_fixed and self.crop_size is None:
            raise InputError(f"preset {self.name!r}: a fixed crop needs a crop size")


PRESETS: dict[str, Preset] = {
    # The SENet release (hujie-frank/SENet): BGR 0..255 minus the per-channel mean, no division; single
    # 224 center crop of the image resized to shorter side 256 (Table 1); outputs in ILSVRC2017_val.txt order.
    "senet": Preset(name="senet", channel_order="BGR", mean=(104.0, 117.0, 123.0), scale=1.0, resize=256,
                    crop_size=224, interpolation="linear", label_order="senet"),
    # BVLC reference CaffeNet / AlexNet / GoogLeNet: images warped to 256x256 (convert_imageset
    # --resize_height=256 --resize_width=256), TEST-phase center crop 227 (CaffeNet, AlexNet; a net that
    # declares 224, like GoogLeNet, is cropped to that), BGR.  The mean is GoogLeNet's train_val
    # mean_value 104/117/123, which is also ilsvrc_2012_mean.npy averaged per channel and rounded
    # (CaffeNet/AlexNet subtract the mean image: add --mean-file imagenet_mean.binaryproto).
    "bvlc": Preset(name="bvlc", channel_order="BGR", mean=(104.0, 117.0, 123.0), scale=1.0, resize=(256, 256),
                   crop_size=227, interpolation="linear", label_order="synset"),
    # VGG-16/19 (the ILSVRC-2014 Caffe release): shorter side 256, center crop 224, BGR minus the per-channel
    # ImageNet mean of the VGG model zoo page.
    "vgg": Preset(name="vgg", channel_order="BGR", mean=(103.939, 116.779, 123.68), scale=1.0, resize=256,
                  crop_size=224, interpolation="linear", label_order="synset"),
    # MobileNet-Caffe (shicai): accuracies measured with a single 224 center crop of images of "256xN"
    # (shorter side 256); BGR minus (103.94, 116.78, 123.68), times 0.017 (the README's notes).
    "mobilenet": Preset(name="mobilenet", channel_order="BGR", mean=(103.94, 116.78, 123.68), scale=0.017,
                        resize=256, crop_size=224, interpolation="linear", label_order="synset"),
    # Yahoo's open_nsfw (classify_nsfw.py): PIL bilinear resize to 256x256, center crop 224, BGR 0..255
    # minus 104/117/123.  The script also re-encodes the resized image as JPEG before reading it back;
    # that lossy step is not reproduced.  Two outputs: SFW, NSFW.
    "nsfw": Preset(name="nsfw", channel_order="BGR", mean=(104.0, 117.0, 123.0), scale=1.0, resize=(256, 256),
                   crop_size=224, interpolation="pil-linear", label_order=None),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an :class:`InputError` naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
