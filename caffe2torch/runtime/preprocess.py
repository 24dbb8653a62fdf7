"""Image preprocessing that matches Caffe's own data path, step by step.

Caffe reads images in ``io.cpp`` (``ReadImageToCVMat``): ``cv::imread(path, CV_LOAD_IMAGE_COLOR)`` gives an
8-bit BGR image (grey images are expanded to three channels, an alpha channel is dropped), and a resize is
``cv::resize`` with its default ``INTER_LINEAR`` on those 8-bit pixels.  We call the same OpenCV functions,
because two bilinear resizers do not agree: OpenCV's 8-bit path uses fixed-point weights and, when
shrinking, samples only the two nearest pixels per axis (no antialiasing), while PIL's and torchvision's
antialiased filters average over the whole footprint.  Those differences move ImageNet top-1 by tenths of a
point, the size of what a reproduction check must resolve.  Other filters are offered for experiments
(``area``, ``cubic``, ``nearest``, ``lanczos``, and ``pil-linear``, PIL's antialiased bilinear filter as
torch implements it, computed in float and rounded back to 8 bits).

Then Caffe's ``DataTransformer`` (TEST phase): a center crop at offset ``(H - crop) / 2`` in integer
division (so an odd margin leaves the extra pixel at the bottom/right), HWC -> CHW, and in float32
``(pixel - mean) * scale``, with the mean either per channel or a mean image read at the crop's offset.

The "resize the shorter side to S" step of the ImageNet protocol is not a Caffe tool (``convert_imageset``
resizes to a fixed size); we compute the longer side as ``long * S // short`` (truncating, as torchvision
does) and resize with ``cv::resize``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from caffe2torch.errors import InputError
from caffe2torch.runtime.presets import Preset

Size = tuple[int, int]  # (height, width)


def _cv2():
    """OpenCV, imported when an image is first touched so that ``import caffe2torch`` stays light."""
    try:
        import cv2
    except ImportError:
        raise InputError("reading images needs OpenCV: pip install 'opencv-python-headless<5'") from None
    return cv2


def decode_image(path: str | Path, *, color: bool = True) -> np.ndarray:
    """An image file as Caffe reads it: ``cv::imread`` with ``IMREAD_COLOR`` (H x W x 3, uint8, BGR),
    or ``IMREAD_GRAYSCALE`` (H x W x 1) for single-channel nets (Caffe's ``is_color: false``)."""
    cv2 = _cv2()
    if not Path(path).is_file():
        raise InputError(f"{path}: no such image file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise InputError(f"{path}: cannot decode the image (not a format OpenCV reads, or truncated)")
    return image if color else image[:, :, None]


def resized_size(height: int, width: int, resize: int | Size | None) -> Size:
    """The size an image of ``height`` x ``width`` is resized to: shorter side ``resize`` with the longer
    side scaled by integer truncation, a fixed ``(height, width)``, or unchanged for ``None``."""
    if resize is None:
        return height, width
    if not isinstance(resize, int):
        return int(resize[0]), int(resize[1])
    if height <= width:
        return resize, width * resize // height
    return height * resize // width, resize


def resize_image(image: np.ndarray, size: Size, interpolation: str = "linear") -> np.ndarray:
    """``image`` (H x W x C, uint8) resized to ``size`` = (height, width)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    if interpolation == "pil-linear":
        return _resize_antialiased(image, size)
    cv2 = _cv2()
    flags = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC,
             "nearest": cv2.INTER_NEAREST, "lanczos": cv2.INTER_LANCZOS4}
    if interpolation not in flags:
        raise InputError(f"unknown interpolation {interpolation!r}; known: {', '.join([*flags, 'pil-linear'])}")
    resized = cv2.resize(image, (width, height), interpolation=flags[interpolation])
    return resized.reshape(height, width, image.shape[2])  # cv2 drops a trailing channel axis of 1


def _resize_antialiased(image: np.ndarray, size: Size) -> np.ndarray:
    """PIL-style bilinear: a triangle filter widened by the shrink factor, rounded to uint8."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    resized = F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def crop_offset(height: int, width: int, crop: Size) -> Size:
    """Caffe's TEST-phase crop offset: ``((H - crop_h) / 2, (W - crop_w) / 2)`` in integer division."""
    crop_height, crop_width = crop
    if crop_height > height or crop_width > width:
        raise InputError(f"cannot crop {crop_height}x{crop_width} from an image of {height}x{width}")
    return (height - crop_height) // 2, (width - crop_width) // 2


def center_crop(array: np.ndarray, crop: Size, *, channels_first: bool = False) -> np.ndarray:
    """The centered ``crop`` window of an H x W x C (or C x H x W) array, at Caffe's offset."""
    height, width = array.shape[1:3] if channels_first else array.shape[:2]
    top, left = crop_offset(height, width, crop)
    rows, cols = slice(top, top + crop[0]), slice(left, left + crop[1])
    return array[:, rows, cols] if channels_first else array[rows, cols]


def as_size(size: int | Size) -> Size:
    """A crop or resize given as one number (a square) or as ``(height, width)``."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class Preprocessor:
    """Turns image files into the float32 C x H x W arrays a net was evaluated on, per a :class:`Preset`.

    ``input_size`` is the net's declared (height, width): the crop, unless the preset's crop is fixed
    (``crop_fixed``); without it the preset's ``crop_size`` is used, and with neither the resized image is
    passed whole.  ``channels`` is the net's input channel count (1 reads images as grey, like Caffe's
    ``is_color: false``).  Calls only read its fields, so loader threads share one.

    A mean image is subtracted as Caffe's ``DataTransformer`` does: from an image of the mean's own size
    (images are resized to it), at the crop's offset.  Cropping the mean at that offset once, here, and
    subtracting it from each cropped image is the same arithmetic.
    """

    def __init__(self, preset: Preset, input_size: Size | None = None, channels: int = 3) -> None:
        if channels not in (1, 3):
            raise InputError(f"preprocessing makes 1- or 3-channel images; the net takes {channels} channels")
        self.preset = preset
        self.channels = channels
        if preset.crop_size is not None and (preset.crop_fixed or input_size is None):
            self.crop: Size | None = as_size(preset.crop_size)
        elif input_size is not None:
            self.crop = (int(input_size[0]), int(input_size[1]))
        else:
            self.crop = None
        self.resize: int | Size | None = preset.resize
        self.mean = self._mean_array()

    def _mean_array(self) -> np.ndarray | None:
        """The mean as float32, shaped to broadcast against a C x H x W image (or a whole C x H x W image)."""
        preset = self.preset
        if preset.mean is not None:
            if len(preset.mean) not in (1, self.channels):
                raise InputError(f"{len(preset.mean)} mean values for a {self.channels}-channel input (preset "
                                 f"{preset.name!r}; --mean takes one per channel, or one for all)")
            return np.asarray(preset.mean, dtype=np.float32).reshape(-1, 1, 1)
        if preset.mean_file is None:
            return None
        from caffe2torch.caffe_proto import read_blob

        if not Path(preset.mean_file).is_file():
            raise InputError(f"{preset.mean_file}: no such mean file")
        mean = np.asarray(read_blob(preset.mean_file), dtype=np.float32)
        if mean.ndim == 4 and mean.shape[0] == 1:
            mean = mean[0]
        if mean.ndim != 3 or mean.shape[0] != self.channels:
            raise InputError(f"{preset.mean_file}: mean image of shape {list(mean.shape)} does not fit a "
                             f"{self.channels}-channel input")
        height, width = mean.shape[1:]
        if self.crop is not None:
            # Caffe reads the mean at the crop's own offset in an image of the mean's size.
            mean = center_crop(mean, self.crop, channels_first=True)
        if self.resize is None:
            self.resize = (height, width)
        elif isinstance(self.resize, int) or as_size(self.resize) != (height, width):
            given = (f"shorter side {self.resize}" if isinstance(self.resize, int)
                     else f"{self.resize[0]}x{self.resize[1]}")
            raise InputError(f"{preset.mean_file}: a {height}x{width} mean image is subtracted from images "
                             f"resized to exactly {height}x{width} (as Caffe requires), not to {given}: "
                             f"resize to {height}x{width} or leave the resize to the mean image")
        return np.ascontiguousarray(mean)

    def input_region(self, height: int, width: int) -> tuple[float, float, float, float]:
        """Where the net's input lies in an image of ``height`` x ``width``: ``(x0, y0, x1, y1)`` in the
        image's pixels, so that coordinates a net gives relative to its input (SSD's boxes) can be put back
        on the image: the whole image unless a crop cut part of it (after the resize)."""
        resized_height, resized_width = resized_size(height, width, self.resize)
        crop = self.crop or (resized_height, resized_width)
        top, left = crop_offset(resized_height, resized_width, crop)
        x_scale, y_scale = width / resized_width, height / resized_height
        return (left * x_scale, top * y_scale, (left + crop[1]) * x_scale, (top + crop[0]) * y_scale)

    def __call__(self, path: str | Path) -> np.ndarray:
        return self.transform(decode_image(path, color=self.channels == 3))

    def transform(self, image: np.ndarray) -> np.ndarray:
        """A decoded H x W x C uint8 image (BGR) -> the net's float32 C x H x W input."""
        preset = self.preset
        image = resize_image(image, resized_size(*image.shape[:2], self.resize), preset.interpolation)
        if self.crop is not None:
            image = center_crop(image, self.crop)
        if preset.channel_order == "RGB" and image.shape[2] == 3:
            image = image[:, :, ::-1]
        chw = image.transpose(2, 0, 1).astype(np.float32)
        if self.mean is not None:
            if self.mean.shape[1:] not in ((1, 1), chw.shape[1:]):
                raise InputError(f"mean image of {self.mean.shape[1]}x{self.mean.shape[2]} does not match "
                                 f"the {chw.shape[1]}x{chw.shape[2]} input (Caffe requires equal sizes)")
            chw -= self.mean
        if preset.scale != 1.0:
            chw *= np.float32(preset.scale)
        return chw
