"""Run a Caffe net in OpenCV's ``dnn`` module: a Caffe runtime written independently of ours, to check
conversions against, blob by blob.

OpenCV reads the prototxt and the caffemodel with its own parser and computes every layer with its own
kernels, so an agreement is evidence, not a tautology.  What it takes to make OpenCV compute what Caffe
computes (OpenCV 4.x; the 5.x series dropped the Caffe importer):

* **Axpy.**  OpenCV's importer rewrites the SENet release's ``Axpy`` layer into a Scale and an Eltwise
  that compute ``a * bottom[2] + bottom[1]`` instead of the release's ``a * bottom[1] + bottom[2]``
  (``axpy_layer.cpp``), and it does so before looking at layers registered with ``cv2.dnn_registerLayer``,
  so registering a correct ``Axpy`` changes nothing.  We hand OpenCV the Axpy layers under the type name
  :data:`AXPY_TYPE`, backed by a Python layer computing ``a * x + y`` in float32.  It is exact: one
  float32 multiply and one add per element, as Caffe and torch do, and it works for any batch size.
  waifu2x-caffe's ``AxpyFast``, which OpenCV lacks and which computes the same (bottoms a, x, y; ``a`` the
  SE gate, N x C or N x C x 1 x 1), is handed over under the same name.
* **Fork layers.**  OpenCV 4.x lacks some layers of the Caffe forks and computes others otherwise than
  the fork that defines them (each checked on a small net, OpenCV 4.14): it has no ``Upsample`` (the
  YOLOv3 ports), ``BN`` (yjxiong/caffe's, and hszhao/PSPNet's, which shares the type name but not the
  semantics: a layer giving one of PSPNet's own fields is computed as PSPNet's), ``HoleConvolution``
  (PSPNet, DeepLab v1) or ``CropCenter`` (waifu2x-caffe); it reads
  yonghenglh6's ``ConvolutionDepthwise`` as a Convolution with the given ``num_output`` and ``group``
  (wrong, or an error, unless both are the channel count; the fork ignores them); its ``ReLU6`` ignores
  eric612's ``relu6_param.negative_slope``; its ``ShuffleChannel`` refuses 2-D and 3-D inputs (the
  fork's top is 4-D whatever its bottom); its ``Interp`` ignores ``pad_beg``/``pad_end`` and
  ``shrink_factor`` (a 0 x 0 output alone, the whole input zoomed with ``zoom_factor``), ignores the
  fork's order of size rules and refuses a second bottom; its ``Reorg`` ignores ``reverse``.  Each of
  these types is handed over under the name :func:`standin_type` gives it (``Caffe2TorchUpsample``),
  backed by a Python layer of :data:`STAND_INS`: numpy code written from the fork's C++ forward pass, not
  our torch modules, so that the reference stays independent.  A renamed layer's parameters reach its
  stand-in as prototxt text in ``python_param.param_str`` (see
  :meth:`caffe2torch.converter.deploy.DeployForm.prototxt`), because OpenCV's own reading of fields its
  schema lacks keeps only the last value of a repeated field (CropCenter's ``crop_size``) and drops minus
  signs (Interp's pads).  eric612's ``DepthwiseConvolution``, which on the CPU is Caffe's Convolution
  with its parameters as given, is handed over as OpenCV's own ``Convolution``, and so is
  ``HoleConvolution``, rewritten as the dilated convolution it is (:func:`_opencv_deploy`).
  ``DetectionOutput``'s ``clip``, OpenCV's own field (1000 in its schema and ours), reaches OpenCV's
  DetectionOutput as written.  The stand-ins are registered only while our call runs (OpenCV's layer
  registry is process-wide: see :func:`standins_registered`).
* **Fusion.**  With fusion on, OpenCV folds BatchNorm, Scale and activations into the preceding
  convolution.  Asking for the output of a folded layer then returns garbage (the BatchNorm output of a
  fused conv + BatchNorm comes back as NaN), and the net computes with folded weights, not layer by layer
  as Caffe does.  We turn fusion off (``enableFusion(False)``): every layer runs on its own and each
  layer's output can be read.
* **Winograd.**  OpenCV's 3x3 convolutions use Winograd by default, whose transforms add rounding of their
  own (8e-4 on SENet-154's logits with the golden tests' weights, twice the whole difference between us
  and OpenCV without it); we turn it off (``enableWinograd(False)``) and use the plain OpenCV CPU backend.
* **Names.**  OpenCV names each output after the layer that made it, except a Convolution's, which it
  names after the convolution's top blob (so ``conv`` with top ``x`` can only be asked for as ``x``).
  The net is handed over with every blob written once and each layer's first top named after the layer
  (see :mod:`caffe2torch.converter.deploy`): both namings then agree, and no output is computed in place
  over another.  Only a layer's first output can be read reliably: ``forward`` can ask for no other, and
  the others of ``forwardAndRetrieve`` are not protected from layers that later reuse their memory.
* **Deploy form.**  OpenCV runs only deploy nets, so the net is handed over in the deploy form the
  converter makes (:class:`caffe2torch.converter.deploy.DeployForm`): the TEST phase as the converter sees
  it, excluded and training-only layers dropped, data layers replaced by an ``Input`` layer of the given
  arrays' shapes.
* **Weights.**  OpenCV reads binary caffemodels (current or legacy V1 form) itself; HDF5 weights or
  weights given as arrays are first written to a temporary binary caffemodel.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caffe2torch.errors import ConversionError, InputError

if TYPE_CHECKING:  # the converter imports torch, which the command line's option parsing must not pay for
    from caffe2torch.converter.deploy import DeployForm

REFERENCES = ("opencv", "pycaffe")  # the runtimes this module can run a net in


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise InputError("the OpenCV reference needs OpenCV 4.x: pip install 'opencv-python-headless<5'") from None
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise InputError(f"OpenCV {cv2.__version__} has no Caffe importer (it was dropped in 5.x); "
                         "install 'opencv-python-headless<5'")
    return cv2


# --- Stand-ins: OpenCV Python layers for the layer types OpenCV lacks or computes otherwise (see the module
# docstring).  OpenCV calls each with (params, blobs), then getMemoryShapes(input shapes) and forward(input
# arrays), which hands the outputs of the stand-in's compute back; the inputs are float32 arrays and each output
# is computed in float32, in the fork's order of steps.

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}\[\]<>:,;]|[^\s{}\[\]<>:,;"\']+')


def parse_parameters(text: str) -> dict[str, list[Any]]:
    """Prototxt text (a stand-in's ``param_str``) as a dict of each field's values in order: numbers,
    strings, ``True``/``False``, enum names as strings, and messages as dicts of the same kind."""
    tokens = _TOKEN.findall(text)
    position = 0

    def take() -> str:
        nonlocal position
        if position >= len(tokens):
            raise ValueError(f"stand-in parameters end early: {text!r}")
        position += 1
        return tokens[position - 1]

    def scalar(token: str) -> Any:
        if token[:1] in ("'", '"'):
            return ast.literal_eval(token)
        if token in ("true", "false"):
            return token == "true"
        for kind in (int, float):
            try:
                return kind(token)
            except ValueError:
                pass
        return token  # an enum value's name

    def fields(end: str | None) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        while (position < len(tokens)) if end is None else (tokens[position:position + 1] != [end]):
            values = found.setdefault(take(), [])
            token = take()
            if token == ":":
                token = take()
            if token in ("{", "<"):
                values.append(fields("}" if token == "{" else ">"))
                take()
            elif token == "[":
                while (token := take()) != "]":
                    if token != ",":
                        values.append(scalar(token))
            else:
                values.append(scalar(token))
            if tokens[position:position + 1] in ([","], [";"]):
                take()
        return found

    return fields(None)


class _StandIn:
    """A stand-in reading its layer's parameter message ``message`` (``upsample_param``) from ``param_str``."""

    message = ""

    def __init__(self, params: dict, blobs: list) -> None:
        parameters = parse_parameters(str(params.get("param_str", "")))
        messages = parameters.get(self.message, [])
        self.fields: dict[str, list[Any]] = messages[-1] if messages else {}
        self.blobs = [np.asarray(blob, np.float32) for blob in blobs]

    def forward(self, inputs: list[np.ndarray]) -> list[Any]:
        """OpenCV's call: :meth:`compute`'s outputs, each as a ``cv2.Mat`` whose axes are all axes (OpenCV
        reads a plain 3-D array as a 2-D image of channels, whose size is then not the layer's output's)."""
        mat = getattr(_cv2(), "Mat", None)
        outputs = self.compute(inputs)
        return outputs if mat is None else [mat(np.ascontiguousarray(top), wrap_channels=False) for top in outputs]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The layer's outputs, float32 arrays, from its inputs."""
        raise NotImplementedError

    def given(self, name: str) -> bool:
        return bool(self.fields.get(name))

    def value(self, name: str, default: Any) -> Any:
        """The field's value (the last one given, as protobuf reads a singular field), else ``default``."""
        values = self.fields.get(name)
        return values[-1] if values else default

    def pair(self, name: str, default: int) -> tuple[int, int]:
        """Caffe's convolution geometry: ``name`` once for both axes or once per axis, ``name_h``/``name_w``
        over it."""
        values = [int(v) for v in self.fields.get(name, [])] or [default]
        height, width = (values[0], values[0]) if len(values) == 1 else values[:2]
        return int(self.value(f"{name}_h", height)), int(self.value(f"{name}_w", width))


class OpenCVAxpy(_StandIn):
    """The SENet release's Axpy: ``a * x + y`` with bottoms (a, x, y), ``a`` of shape N x C (x 1 x 1)
    scaling each channel of ``x``."""

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802 (OpenCV's name)
        if len(inputs) != 3:
            raise ValueError(f"Axpy needs three bottoms (a, x, y), got {len(inputs)}")
        a, x, y = (list(shape) for shape in inputs)
        if x != y or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
            raise ValueError(f"Axpy bottoms do not fit: a {a}, x {x}, y {y}")
        return [x]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a, x, y = inputs
        return [a.reshape(a.shape[0], a.shape[1], *([1] * (x.ndim - 2))) * x + y]


class OpenCVUpsample(_StandIn):
    """The YOLOv3 ports' ``Upsample`` (upsample_layer.cpp): ``out[h][w] = in[h / scale][w / scale]``, each
    pixel repeated scale x scale.  The same rule per axis for ``scale_h``/``scale_w``; for an explicit
    ``upsample_h`` x ``upsample_w`` output, ``out[h][w] = in[h * H / upsample_h][w * W / upsample_w]``
    (integer division), which is the scale rule where the output is a whole multiple of the input."""

    message = "upsample_param"

    def __init__(self, params: dict, blobs: list) -> None:
        super().__init__(params, blobs)
        if self.given("upsample_h") or self.given("upsample_w"):
            self.size: tuple[int, int] | None = (int(self.value("upsample_h", 0)), int(self.value("upsample_w", 0)))
        else:
            self.size = None
            scale = int(self.value("scale", 1))
            self.scale = (int(self.value("scale_h", scale)), int(self.value("scale_w", scale)))

    def _output_size(self, height: int, width: int) -> tuple[int, int]:
        return self.size if self.size is not None else (height * self.scale[0], width * self.scale[1])

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802
        if len(inputs) != 1:
            raise ValueError("an Upsample with a second bottom is SegNet's max-unpooling, which has no stand-in")
        n, c, h, w = inputs[0]
        return [[n, c, *self._output_size(h, w)]]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        height, width = x.shape[2:]
        out_h, out_w = self._output_size(height, width)
        rows, columns = np.arange(out_h) * height // out_h, np.arange(out_w) * width // out_w
        return [np.ascontiguousarray(x[:, :, rows][:, :, :, columns])]


class OpenCVConvolutionDepthwise(_StandIn):
    """yonghenglh6's ``ConvolutionDepthwise`` (conv_dw_layer.cpp): one kh x kw filter per input channel
    (weights C x 1 x kh x kw, bias C when ``bias_term``), whatever ``num_output`` and ``group`` say, over
    the zero-padded input with convolution_param's stride, pad and dilation; summed tap by tap in float32."""

    message = "convolution_param"

    def __init__(self, params: dict, blobs: list) -> None:
        super().__init__(params, blobs)
        self.weight = self.blobs[0]
        if self.weight.ndim != 4 or self.weight.shape[1] != 1:
            raise ValueError(f"ConvolutionDepthwise weights must be C x 1 x kh x kw, got {list(self.weight.shape)}")
        self.bias = self.blobs[1].reshape(-1) if len(self.blobs) > 1 else None
        self.kernel = self.weight.shape[2:]
        self.pad, self.stride, self.dilation = self.pair("pad", 0), self.pair("stride", 1), self.pair("dilation", 1)

    def _output_size(self, size: int, axis: int) -> int:
        extent = self.dilation[axis] * (self.kernel[axis] - 1) + 1
        return (size + 2 * self.pad[axis] - extent) // self.stride[axis] + 1

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802
        n, c, h, w = inputs[0]
        if c != self.weight.shape[0]:
            raise ValueError(f"{self.weight.shape[0]} filters for {c} channels")
        return [[n, c, self._output_size(h, 0), self._output_size(w, 1)]]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        (ph, pw), (sh, sw), (dh, dw) = self.pad, self.stride, self.dilation
        padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        out_h, out_w = self._output_size(x.shape[2], 0), self._output_size(x.shape[3], 1)
        out = np.zeros((x.shape[0], x.shape[1], out_h, out_w), np.float32)
        for ky in range(self.kernel[0]):
            for kx in range(self.kernel[1]):
                window = padded[:, :, ky * dh: ky * dh + sh * (out_h - 1) + 1: sh,
                                kx * dw: kx * dw + sw * (out_w - 1) + 1: sw]
                out += self.weight[None, :, 0, ky, kx, None, None] * window
        if self.bias is not None:
            out += self.bias[None, :, None, None]
        return [out]


# PSPNet's BNParameter fields that yjxiong/caffe's has not (hszhao/PSPNet's caffe.proto): a BN layer giving one of
# them is PSPNet's; momentum, eps, frozen and engine are in both, so a layer giving only those is read as yjxiong's.
PSPNET_BN_FIELDS = ("scale_filler", "shift_filler", "var_eps", "moving_average", "decay", "axis")


class OpenCVBN(_StandIn):
    """The ``BN`` layer of two forks, at test time (bn_layer.cpp); the fork is told by the fields ``bn_param``
    gives: one of :data:`PSPNET_BN_FIELDS` makes it hszhao/PSPNet's, anything else yjxiong/caffe's.

    yjxiong's: blobs slope, bias, mean, variance (1 x C x 1 x 1 or 1 x C), used as stored; ``x - mean``, times
    ``(variance + eps)^-0.5``, times the slope, plus the bias, each step in float32 (``eps``, default 1e-5).

    PSPNet's (the CAFFE engine's Forward_cpu): the input seen as its legacy 4-D shape, split at ``axis`` (1 or 2)
    into outer x channels x inner.  With ``moving_average`` the stored mean and variance (blobs 2 and 3) are used;
    without it (the fork's default) the batch's own: per (outer, channel) the sum over inner times 1 / inner,
    then per channel the sum over outer times 1 / outer (the fork's two gemv calls), the variance the same of
    ``(x - mean)^2``.  Then ``x - mean``, divided by ``(variance + var_eps)^0.5`` (``var_eps``, default 1e-10;
    ``eps`` is never read), times the scale, plus the shift, each step in float32.  Without moving_average the
    fork reads only blobs 0 and 1, so two blobs will do."""

    message = "bn_param"

    def __init__(self, params: dict, blobs: list) -> None:
        super().__init__(params, blobs)
        self.pspnet = any(self.given(name) for name in PSPNET_BN_FIELDS)
        if self.pspnet:
            self.moving_average = bool(self.value("moving_average", False))
            self.axis = int(self.value("axis", 1))
            if self.axis not in (1, 2):
                raise ValueError(f"PSPNet's BN axis must be 1 or 2, got {self.axis}")
            self.eps = np.float32(self.value("var_eps", 1e-10))
            if len(self.blobs) != 4 and (self.moving_average or len(self.blobs) != 2):
                needed = "4 blobs (scale, shift, mean, variance)" if self.moving_average else "2 or 4 blobs"
                raise ValueError(f"PSPNet's BN needs {needed}, got {len(self.blobs)}")
        else:
            if len(self.blobs) != 4:
                raise ValueError(f"BN needs 4 blobs (slope, bias, mean, variance), got {len(self.blobs)}")
            self.eps = np.float32(self.value("eps", 1e-5))
        self.slope, self.bias = (blob.reshape(-1) for blob in self.blobs[:2])
        self.mean, self.variance = ((blob.reshape(-1) for blob in self.blobs[2:]) if len(self.blobs) == 4
                                    else (None, None))

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802
        shape = list(inputs[0])
        if self.pspnet:
            if not 2 <= len(shape) <= 4:
                raise ValueError(f"PSPNet's BN reads a 2-D to 4-D input, got shape {shape}")
            channels = (shape + [1] * (4 - len(shape)))[self.axis]
            if self.slope.size != channels:
                raise ValueError(f"PSPNet's BN has {self.slope.size} scales for {channels} channels at axis "
                                 f"{self.axis}")
        return [shape]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        if self.pspnet:
            return [self._pspnet(x)]
        view = (1, -1) + (1,) * (x.ndim - 2)
        inverse_std = np.power(self.variance + self.eps, np.float32(-0.5), dtype=np.float32)
        top = x - self.mean.reshape(view)
        top = top * inverse_std.reshape(view)
        top = top * self.slope.reshape(view)
        return [top + self.bias.reshape(view)]

    def _pspnet(self, x: np.ndarray) -> np.ndarray:
        f32 = np.float32
        legacy = (*x.shape, *([1] * (4 - x.ndim)))
        outer, inner = int(np.prod(legacy[:self.axis])), int(np.prod(legacy[self.axis + 1:]))
        bottom = x.reshape(outer, legacy[self.axis], inner)

        def statistic(values: np.ndarray) -> np.ndarray:  # spatial_statistic_, then batch_statistic_
            spatial = values.sum(axis=2, dtype=f32) * (f32(1) / f32(inner))
            return (spatial.sum(axis=0, dtype=f32) * (f32(1) / f32(outer))).astype(f32)

        mean = self.mean if self.moving_average else statistic(bottom)
        top = (bottom - mean[None, :, None]).astype(f32)
        variance = self.variance if self.moving_average else statistic(top * top)
        std = np.power((variance + self.eps).astype(f32), f32(0.5), dtype=f32)
        top = top / std[None, :, None]
        top = top * self.slope[None, :, None]
        top = top + self.bias[None, :, None]
        return top.astype(f32).reshape(x.shape)


class OpenCVCropCenter(_StandIn):
    """waifu2x-caffe's ``CropCenter`` (crop_center_layer.cpp): ``crop_size[i]`` elements cut from both ends
    of axis ``i``, one ``crop_size`` per input axis."""

    message = "crop_center_param"

    def __init__(self, params: dict, blobs: list) -> None:
        super().__init__(params, blobs)
        self.crop = [int(size) for size in self.fields.get("crop_size", [])]

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802
        shape = list(inputs[0])
        if len(self.crop) != len(shape):
            raise ValueError(f"CropCenter needs one crop_size per input axis: {self.crop} for shape {shape}")
        return [[size - 2 * crop for size, crop in zip(shape, self.crop)]]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        return [np.ascontiguousarray(x[tuple(slice(crop, size - crop) for size, crop in zip(x.shape, self.crop))])]


class OpenCVReLU6(_StandIn):
    """The MobileNet forks' ``ReLU6``: ``min(max(x, 0), 6)``; eric612's adds ``relu6_param.negative_slope``
    times ``min(x, 0)`` inside the ``min``."""

    message = "relu6_param"

    def __init__(self, params: dict, blobs: list) -> None:
        super().__init__(params, blobs)
        self.slope = np.float32(self.value("negative_slope", 0.0))

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802
        return [inputs[0]]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        positive = np.maximum(x, np.float32(0))
        if self.slope != 0:
            positive = positive + self.slope * np.minimum(x, np.float32(0))
        return [np.minimum(positive, np.float32(6))]


class OpenCVShuffleChannel(_StandIn):
    """ShuffleNet's ``ShuffleChannel`` (shuffle_channel_layer.cpp): per sample, the channel planes read as a
    ``group`` x ``C / group`` grid, the plane at (i, j) going to (j, i); the top is 4-D (num, channels,
    height, width) whatever the bottom's axes."""

    message = "shuffle_channel_param"

    def __init__(self, params: dict, blobs: list) -> None:
        super().__init__(params, blobs)
        self.group = int(self.value("group", 1))

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802
        shape = list(inputs[0])
        if self.group < 1 or shape[1] % self.group:
            raise ValueError(f"group {self.group} does not divide the {shape[1]} channels")
        return [shape + [1] * (4 - len(shape))]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        columns = x.shape[1] // self.group
        source = [i * columns + j for j in range(columns) for i in range(self.group)]  # of output j * group + i
        return [np.ascontiguousarray(x[:, source]).reshape(*x.shape, *([1] * (4 - x.ndim)))]


class OpenCVInterp(_StandIn):
    """DeepLab v2's ``Interp`` (interp_layer.cpp, caffe_cpu_interp2): the input cropped by ``-pad_beg`` and
    ``-pad_end`` (never positive), resized bilinearly with aligned corners to a size chosen in the fork's
    order: ``shrink_factor`` alone, ``zoom_factor`` alone, ``height`` and ``width``, both factors (shrink
    first), else the second bottom's height and width.  Every step in float32, as the C++ computes it."""

    message = "interp_param"

    def __init__(self, params: dict, blobs: list) -> None:
        super().__init__(params, blobs)
        self.pad_beg, self.pad_end = int(self.value("pad_beg", 0)), int(self.value("pad_end", 0))
        if self.pad_beg > 0 or self.pad_end > 0:
            raise ValueError(f"Interp pads must not be positive, got {self.pad_beg} and {self.pad_end}")

    def _output_size(self, inputs: list[list[int]]) -> tuple[int, int]:
        height, width = (size + self.pad_beg + self.pad_end for size in inputs[0][2:])
        shrink, zoom = int(self.value("shrink_factor", 1)), int(self.value("zoom_factor", 1))

        def shrunk(size: int) -> int:
            return (size - 1) // shrink + 1

        def zoomed(size: int) -> int:
            return size + (size - 1) * (zoom - 1)

        has_shrink, has_zoom = self.given("shrink_factor"), self.given("zoom_factor")
        if has_shrink and not has_zoom:
            return shrunk(height), shrunk(width)
        if has_zoom and not has_shrink:
            return zoomed(height), zoomed(width)
        if self.given("height") and self.given("width"):
            return int(self.value("height", 0)), int(self.value("width", 0))
        if has_shrink and has_zoom:
            return zoomed(shrunk(height)), zoomed(shrunk(width))
        if len(inputs) == 2:
            return inputs[1][2], inputs[1][3]
        raise ValueError("Interp's output size is unspecified")

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802
        return [[*inputs[0][:2], *self._output_size([list(shape) for shape in inputs])]]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        out_h, out_w = self._output_size([list(array.shape) for array in inputs])
        first = -self.pad_beg
        in_h, in_w = x.shape[2] + self.pad_beg + self.pad_end, x.shape[3] + self.pad_beg + self.pad_end
        x = x[:, :, first:first + in_h, first:first + in_w]
        if (in_h, in_w) == (out_h, out_w):
            return [np.ascontiguousarray(x)]  # the fork's plain copy
        f32 = np.float32

        def taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            ratio = f32(f32(size_in - 1) / f32(size_out - 1)) if size_out > 1 else f32(0)
            source = ratio * np.arange(size_out, dtype=np.float32)
            low = source.astype(np.int64)  # non-negative: truncation is the C++ cast
            step = (low < size_in - 1).astype(np.int64)
            far = (source - low.astype(np.float32)).astype(np.float32)
            return low, low + step, (f32(1) - far).astype(np.float32), far

        h0, h1, h0_weight, h1_weight = taps(in_h, out_h)
        w0, w1, w0_weight, w1_weight = taps(in_w, out_w)
        rows0, rows1 = x[:, :, h0], x[:, :, h1]
        h0_weight, h1_weight = h0_weight[:, None], h1_weight[:, None]
        top = (h0_weight * (w0_weight * rows0[..., w0] + w1_weight * rows0[..., w1])
               + h1_weight * (w0_weight * rows1[..., w0] + w1_weight * rows1[..., w1]))
        return [top.astype(np.float32)]


class OpenCVReorg(_StandIn):
    """The YOLOv2 ports' ``Reorg``: darknet's ``reorg_cpu`` on the bottom's own dimensions (W, H, C,
    stride), gathering (``forward`` = 0) for the usual layer and scattering (``forward`` = 1) with
    ``reverse``; the output is C * s^2 x H / s x W / s, or C / s^2 x H * s x W * s reversed."""

    message = "reorg_param"

    def __init__(self, params: dict, blobs: list) -> None:
        super().__init__(params, blobs)
        self.stride, self.reverse = int(self.value("stride", 0)), bool(self.value("reverse", False))
        if self.stride < 1:
            raise ValueError("Reorg needs a positive stride")

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802
        n, c, h, w = inputs[0]
        s = self.stride
        return [[n, c // (s * s), h * s, w * s] if self.reverse else [n, c * s * s, h // s, w // s]]

    def compute(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        n, c, h, w = x.shape
        s = self.stride
        out_c = c // (s * s)
        b, k, j, i = np.indices(x.shape)
        c2, offset = k % out_c, k // out_c
        w2, h2 = i * s + offset % s, j * s + offset // s
        in_index = (i + w * (j + h * (k + c * b))).reshape(-1)
        out_index = (w2 + w * s * (h2 + h * s * (c2 + out_c * b))).reshape(-1)
        flat, top = x.reshape(-1), np.empty(x.size, np.float32)
        if self.reverse:
            top[out_index] = flat[in_index]
        else:
            top[in_index] = flat[out_index]
        return [top.reshape(self.getMemoryShapes([list(x.shape)])[0])]


# The Python layer standing in for each layer type OpenCV lacks or computes otherwise (the module docstring).
STAND_INS: dict[str, type] = {
    "Axpy": OpenCVAxpy, "Upsample": OpenCVUpsample, "ConvolutionDepthwise": OpenCVConvolutionDepthwise,
    "BN": OpenCVBN, "CropCenter": OpenCVCropCenter, "ReLU6": OpenCVReLU6, "ShuffleChannel": OpenCVShuffleChannel,
    "Interp": OpenCVInterp, "Reorg": OpenCVReorg,
}


def standin_type(layer_type: str) -> str:
    """The type name OpenCV sees for the layers of ``layer_type`` that a stand-in computes."""
    return f"Caffe2Torch{layer_type}"


AXPY_TYPE = standin_type("Axpy")  # the type name OpenCV sees for the release's Axpy layers
# The types the deploy prototxt names otherwise for OpenCV: each stand-in's; waifu2x-caffe's AxpyFast, the release's
# Axpy under another name (a * x + y), as the Axpy stand-in; eric612's DepthwiseConvolution, Caffe's Convolution
# with the given parameters, as OpenCV's own Convolution.
OPENCV_LAYER_TYPES = {**{layer_type: standin_type(layer_type) for layer_type in STAND_INS},
                      "AxpyFast": AXPY_TYPE, "DepthwiseConvolution": "Convolution"}


@contextmanager
def standins_registered() -> Iterator[None]:
    """OpenCV's layer registry is process-wide: the stand-ins are in it only while a reference net runs."""
    cv2 = _cv2()
    registered = []
    try:
        for layer_type, layer in STAND_INS.items():
            cv2.dnn_registerLayer(standin_type(layer_type), layer)
            registered.append(standin_type(layer_type))
        yield
    finally:
        for name in registered:
            cv2.dnn_unregisterLayer(name)


def _opencv_deploy(deploy: DeployForm) -> DeployForm:
    """The deploy form OpenCV is handed: each ``HoleConvolution`` (hszhao/PSPNet, DeepLab v1; OpenCV has none)
    rewritten as the Convolution it is (hole_conv_layer.cpp), its ``dilation`` the ``hole`` (both axes) or
    ``hole_h`` and ``hole_w``, its hole fields cleared and the rest of convolution_param kept.

    Renaming the type (``layer_types`` of :meth:`DeployForm.prototxt`) would not do: OpenCV's Convolution reads
    ``dilation``, not ``hole``, and a Python stand-in given the layer's convolution_param with a field OpenCV's
    schema lacks (``hole``) never returns from OpenCV 4.14's forward pass.  Only the layer's type and parameters
    change: its name, so the weights it is given, stay."""
    net = deploy._net
    if not any(layer.type == "HoleConvolution" for layer in net.layer):
        return deploy
    rewritten = type(net)()
    rewritten.CopyFrom(net)
    for layer in rewritten.layer:
        if layer.type != "HoleConvolution":
            continue
        param = layer.convolution_param
        pair = param.HasField("hole_h") or param.HasField("hole_w")
        if pair and (param.HasField("hole") or not (param.HasField("hole_h") and param.HasField("hole_w"))):
            raise InputError(f"HoleConvolution {layer.name!r}: give hole, or hole_h and hole_w (both)")
        if not pair and not param.HasField("hole"):
            raise InputError(f"HoleConvolution {layer.name!r} gives no hole")
        dilation = [param.hole_h, param.hole_w] if pair else [param.hole]
        for name in ("hole", "hole_h", "hole_w", "dilation"):
            param.ClearField(name)
        param.dilation.extend(dilation)
        layer.type = "Convolution"
    return dataclasses.replace(deploy, _net=rewritten)


def _input_arrays(names: Sequence[str], inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise InputError(f"the net has {len(names)} inputs ({', '.join(names)}); give a dict of arrays")
        inputs = {names[0]: inputs}
    missing = [name for name in names if name not in inputs]
    if missing:
        raise InputError(f"no array given for the net input(s) {', '.join(missing)}")
    return {name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in names}


@contextmanager
def _binary_caffemodel(deploy: DeployForm, weights: Any) -> Iterator[str]:
    """A binary caffemodel path OpenCV can read: the file itself when it is one, else a temporary copy."""
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"{path}: no such weights file")
        from caffe2torch.caffe_proto.weights import is_hdf5, read_weights

        if not is_hdf5(path):
            yield str(path)
            return
        weights = read_weights(path)
    with tempfile.TemporaryDirectory(prefix="caffe2torch-reference-") as directory:
        path = Path(directory) / "weights.caffemodel"
        deploy.write_caffemodel(weights, path)
        yield str(path)


def opencv_forward(net: Any, caffemodel: Any, inputs: Mapping[str, np.ndarray] | np.ndarray,
                   outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Run the net in OpenCV's dnn and return the requested blobs, each computed layer by layer.

    ``net``: a model converted by caffe2torch (its deploy form is run), or a prototxt path, a zoo name or a
    NetParameter.  ``caffemodel``: a binary or HDF5 weights path, or a mapping of layer name to blobs.
    ``inputs``: the array of the net's single input, or a dict per input blob (any batch size).
    ``outputs``: layer names (the layer's output) or blob names (the blob's last value), as for
    :func:`caffe2torch.load`.
    """
    cv2 = _cv2()
    deploy, arrays = _prepare(net, inputs)
    wanted = {name: deploy.output(name) for name in outputs}
    for name, where in wanted.items():
        if where.index != 0:
            raise InputError(f"{name!r} is output {where.index} of layer {where.layer!r}; OpenCV's dnn can read "
                             "only a layer's first output reliably")
    # A first top is named after its layer, which is the name OpenCV gives the layer's output.
    layer_outputs = sorted({where.blob for where in wanted.values() if where.layer is not None})
    text = _opencv_deploy(deploy).prototxt({name: array.shape for name, array in arrays.items()},
                                           layer_types=OPENCV_LAYER_TYPES)
    with tempfile.TemporaryDirectory(prefix="caffe2torch-reference-") as directory:
        prototxt_path = Path(directory) / "deploy.prototxt"
        prototxt_path.write_text(text, encoding="utf-8")
        with _binary_caffemodel(deploy, caffemodel) as model_path, standins_registered():
            try:
                cv_net = cv2.dnn.readNetFromCaffe(str(prototxt_path), model_path)
                cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
                cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
                cv_net.enableFusion(False)
                cv_net.enableWinograd(False)
                for name, array in arrays.items():
                    cv_net.setInput(array, name)
                results = cv_net.forward(layer_outputs) if layer_outputs else []
            except cv2.error as error:
                raise ConversionError(f"OpenCV's dnn cannot run the net: {_opencv_message(error)}") from None
    by_blob = {name: np.array(result, dtype=np.float32) for name, result in zip(layer_outputs, results)}
    by_blob.update((name, array.copy()) for name, array in arrays.items())
    return {name: by_blob[where.blob] for name, where in wanted.items()}


def pycaffe_forward(net: Any, caffemodel: Any, inputs: Mapping[str, np.ndarray] | np.ndarray,
                    outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """The same as :func:`opencv_forward`, computed by Caffe itself through pycaffe (``import caffe``).

    The deploy form writes every blob once, so after one forward pass each layer's output is still in its
    own blob.  SENet nets need a Caffe built with the release's Axpy layer.
    """
    caffe = _pycaffe()
    deploy, arrays = _prepare(net, inputs)
    wanted = {name: deploy.output(name) for name in outputs}
    text = deploy.prototxt({name: array.shape for name, array in arrays.items()})
    with tempfile.TemporaryDirectory(prefix="caffe2torch-reference-") as directory:
        prototxt_path = Path(directory) / "deploy.prototxt"
        prototxt_path.write_text(text, encoding="utf-8")
        with _binary_caffemodel(deploy, caffemodel) as model_path:
            caffe.set_mode_cpu()
            caffe_net = caffe.Net(str(prototxt_path), model_path, caffe.TEST)
            for name, array in arrays.items():
                caffe_net.blobs[name].reshape(*array.shape)
                caffe_net.blobs[name].data[...] = array
            caffe_net.reshape()
            caffe_net.forward()
            return {name: np.array(caffe_net.blobs[where.blob].data, dtype=np.float32)
                    for name, where in wanted.items()}


def runtime(name: str) -> Any:
    """The forward function of reference runtime ``name`` (one of :data:`REFERENCES`), checked to be
    installed."""
    if name == "opencv":
        _cv2()
        return opencv_forward
    if name == "pycaffe":
        _pycaffe()
        return pycaffe_forward
    raise InputError(f"unknown reference runtime {name!r}; choose one of {', '.join(REFERENCES)}")


def _pycaffe() -> Any:
    try:
        import caffe
    except ImportError as error:
        raise InputError(f"the pycaffe reference needs Caffe's Python module, which cannot be imported "
                         f"({error}); install Caffe with its Python bindings or use --reference opencv") from None
    return caffe


def _prepare(net: Any, inputs: Mapping[str, np.ndarray] | np.ndarray) -> tuple[DeployForm, dict[str, np.ndarray]]:
    """The net's deploy form and the inputs as float32 by input name.  A converted model brings its deploy
    form; a net description is given one for the inputs' shapes (a data layer's come only from them)."""
    from caffe2torch.converter.deploy import DeployForm, deploy_form
    from caffe2torch.nets import open_net

    deploy = getattr(net, "deploy", None)
    if not isinstance(deploy, DeployForm):
        shapes = ({name: np.shape(array) for name, array in inputs.items()} if isinstance(inputs, Mapping)
                  else np.shape(inputs))
        deploy = deploy_form(open_net(net).net, shapes)
    return deploy, _input_arrays(deploy.input_names, inputs)


def _opencv_message(error: Exception) -> str:
    """OpenCV's one useful line: the text after 'error: (-code:Kind)'."""
    text = " ".join(str(error).split())
    marker = text.find(") ", text.find("error: ("))
    return text[marker + 2:] if marker >= 0 and "error: (" in text else text
