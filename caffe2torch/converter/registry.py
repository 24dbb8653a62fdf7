"""The registry of layer converters: one function per Caffe layer type, extensible by users.

A converter receives a :class:`LayerContext` (the layer's message, its input shapes, its blobs) and
returns a ``torch.nn.Module`` whose ``forward`` takes the layer's bottoms in order and returns one tensor,
or a tuple of tensors when the layer has several tops.  Register your own type the same way the
built-in ``Axpy`` is registered::

    from caffe2torch.converter import register

    @register("MyScale", bottoms=1, tops=1)
    def my_scale(ctx):
        return MyScaleModule(ctx.blob(0, (ctx.input_shapes[0][1],)))

A fork layer's parameters are read with ``ctx.param("my_scale_param")``: typed when the fork's caffe.proto
is given (``--caffe-proto``), else as the prototxt spells them.

The converter learns the module's output shapes from its ``output_shapes(self, input_shapes)`` method, a list
of shapes from the list of input shapes (every built-in module has one: see caffe2torch.converter.shapes); a
module without one is run once on meta tensors instead, which costs seconds of torch's imports the first
time in a process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import re
import sys
import types
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from caffe2torch.errors import ConversionError, InputError
from caffe2torch.limits import charge
from caffe2torch.mapped import copy_into

Shape = tuple[int, ...]
Converter = Callable[["LayerContext"], nn.Module]
Count = int | tuple[int, int | None]  # exactly n, or (at least, at most); at most None: no upper bound

_CONVERTERS: dict[str, Converter] = {}
_COUNTS: dict[str, tuple[Count | None, Count | None]] = {}  # type -> (bottoms, tops) its converter handles


def register(*layer_types: str, bottoms: Count | None = None, tops: Count | None = None,
             replace: bool = False) -> Callable[[Converter], Converter]:
    """Register ``fn`` as the converter of the given Caffe layer type(s).

    ``bottoms`` and ``tops`` declare how many the converter handles: ``n`` exactly, or ``(at_least,
    at_most)`` with ``at_most`` None for no limit.  A layer outside them is refused, naming it, before
    the converter runs, so a converter may index its inputs freely.  Left out: any number.
    """

    def decorate(fn: Converter) -> Converter:
        for layer_type in layer_types:
            if layer_type in _CONVERTERS and not replace and _CONVERTERS[layer_type] is not fn:
                raise ValueError(f"a converter for Caffe type {layer_type!r} is already registered "
                                 f"(pass replace=True to override it)")
            _CONVERTERS[layer_type] = fn
            _COUNTS[layer_type] = (bottoms, tops)
        return fn

    return decorate


def check_counts(layer_type: str, layer_name: str, num_bottoms: int, num_tops: int) -> None:
    """Refuse a layer with more or fewer bottoms or tops than its converter declared."""
    bottoms, tops = _COUNTS.get(layer_type, (None, None))
    for what, count, found in (("bottom", bottoms, num_bottoms), ("top", tops, num_tops)):
        if count is None:
            continue
        low, high = (count, count) if isinstance(count, int) else count
        if found < low or (high is not None and found > high):
            wanted = f"exactly {low}" if low == high else f"at least {low}" if high is None else f"{low} to {high}"
            raise ConversionError(f"layer {layer_name!r} ({layer_type}): needs {wanted} {what}(s), got {found}")


def get_converter(layer_type: str, layer_name: str) -> Converter:
    from caffe2torch.converter import layers  # noqa: F401  (registers the built-in converters)

    try:
        return _CONVERTERS[layer_type]
    except KeyError:
        if layer_type == "Python":
            return _python_layer
        raise ConversionError(
            f"layer {layer_name!r}: no converter for Caffe type {layer_type!r}; register one with "
            f"@caffe2torch.converter.register({layer_type!r}) (on the command line, in a file given with "
            f"--plugin; see the README, 'Custom layers')") from None


def python_layer_type(module: str, layer: str) -> str:
    """The registry key of one kind of Caffe ``Python`` layer: ``"Python:<module>.<layer>"``.

    Every Python layer has the Caffe type ``Python``; what it computes is the class ``python_param.layer`` of
    the module ``python_param.module``, so converters are registered per class under this key (a converter
    registered for plain ``"Python"`` would take them all)."""
    return f"Python:{module}.{layer}"


def _python_layer(ctx: LayerContext) -> nn.Module:
    """Hands a ``Python`` layer to the converter registered for its class, counting its bottoms and tops
    against what that converter declared."""
    p = ctx.layer.python_param
    key = python_layer_type(p.module, p.layer)
    converter = _CONVERTERS.get(key)
    if converter is None:
        raise ConversionError(
            f"layer {ctx.name!r} is a Python layer (python_param module {p.module!r}, layer {p.layer!r}): "
            f"Caffe runs that class's Python code, which is not in the model files; register a converter for "
            f"it with @caffe2torch.converter.register({key!r}) (on the command line, in a file given with "
            f"--plugin; see the README, 'Custom layers')")
    check_counts(key, ctx.name, len(ctx.input_shapes), ctx.num_tops)
    return converter(ctx)


def registered_types() -> list[str]:
    from caffe2torch.converter import layers  # noqa: F401

    return sorted(_CONVERTERS)


@contextlib.contextmanager
def registered(layer_type: str, fn: Converter, *, bottoms: Count | None = None,
               tops: Count | None = None) -> Iterator[Converter]:
    """``fn`` converts ``layer_type`` inside the ``with`` block only: on exit the converter registered
    before (a built-in one, say), or none, is back.  For trying a converter, or replacing one in a
    test, without changing the registry for everyone after."""
    from caffe2torch.converter import layers  # noqa: F401  (built-ins first: they must not replace fn)

    previous = (_CONVERTERS.get(layer_type), _COUNTS.get(layer_type))
    register(layer_type, bottoms=bottoms, tops=tops, replace=True)(fn)
    try:
        yield fn
    finally:
        converter, counts = previous
        if converter is None:
            _CONVERTERS.pop(layer_type, None)
            _COUNTS.pop(layer_type, None)
        else:
            _CONVERTERS[layer_type] = converter
            _COUNTS[layer_type] = counts


@contextlib.contextmanager
def scoped_registry() -> Iterator[None]:
    """Whatever is registered inside the ``with`` block (by plugins, say) is forgotten on exit, and the
    converters replaced there come back."""
    from caffe2torch.converter import layers  # noqa: F401

    saved = (dict(_CONVERTERS), dict(_COUNTS))
    try:
        yield
    finally:
        for table, contents in zip((_CONVERTERS, _COUNTS), saved):
            table.clear()
            table.update(contents)


@dataclass
class LayerContext:
    """What a converter may look at: the layer, its input shapes and its learned blobs."""

    layer: Any  # caffe_pb2.LayerParameter
    input_shapes: list[Shape]
    num_tops: int
    blobs: list[np.ndarray] | None  # None: the weights file has no blobs for this layer
    random_init: bool = False
    used_blobs: list[Shape] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def type(self) -> str:
        return self.layer.type

    def param(self, name: str) -> Any:
        """The layer's parameter field ``name`` (``"upsample_param"``), however the net's schema knows it:
        typed by the user's fork caffe.proto (--caffe-proto) or the built-in schema, else the untyped
        :class:`~caffe2torch.caffe_proto.schema.UntypedMessage` of what the prototxt gave (empty when unset).
        Prefer it to ``ctx.layer.<name>`` for fork fields, which a user's schema may number differently."""
        from caffe2torch.caffe_proto.schema import layer_param

        return layer_param(self.layer, name)

    def error(self, message: str) -> ConversionError:
        return ConversionError(f"layer {self.name!r} ({self.type}): {message}")

    def blob(self, index: int, shape: Shape, init: str = "weight") -> torch.Tensor:
        """Blob ``index`` as a float32 tensor of ``shape``, checked strictly against the weights file.

        Caffe's legacy 4-D shapes (num, channels, height, width) are accepted where the blob's shape padded
        with leading ones to four axes matches, as Caffe's ``Blob::ShapeEquals`` does.  Without weights the
        blob is initialised (``init``: ``weight``, ``zeros`` or ``ones``) when random initialisation was
        asked for, and is an error otherwise.
        """
        shape = tuple(int(d) for d in shape)
        if index != len(self.used_blobs):
            raise AssertionError("converters must request blobs in order")
        if any(d < 1 for d in shape):
            raise self.error(f"blob {index} would have shape {list(shape)}: every dimension must be positive")
        self.used_blobs.append(shape)
        what = f"layer {self.name!r} ({self.type}): blob {index} of shape {list(shape)}"
        if self.blobs is None:
            if not self.random_init:
                raise self.error("the weights have no blobs for this layer "
                                 "(pass random_init=True / --random-init to initialise it randomly)")
            charge(4 * math.prod(shape), what)
            return _initial_blob(self.name, index, shape, init)
        if index >= len(self.blobs):
            raise self.error(f"blob {index} is missing: the weights hold {len(self.blobs)} blob(s), "
                             f"expected shape {list(shape)}")
        found = self.blobs[index]
        if found.dtype.kind not in "biuf":  # complex, strings, objects: nothing float32 can hold
            raise self.error(f"blob {index} holds {found.dtype} values, not real numbers")
        if tuple(found.shape) != shape:
            legacy = (1,) * (4 - len(shape)) + shape if len(shape) <= 4 else None
            if found.ndim != 4 or tuple(found.shape) != legacy:
                raise self.error(f"blob {index} has shape {list(found.shape)}, expected {list(shape)}")
        charge(4 * math.prod(shape), what)  # the float32 copy below, the only one
        # Straight into the tensor's own memory, converted to float32 on the way; a view of a memory-mapped
        # caffemodel (as read_weights gives them) is read from the file, so that none of the file's pages stay
        # resident beside the copy while the file is mapped.
        tensor = torch.empty(shape, dtype=torch.float32)
        copy_into(tensor.numpy(), found)
        return tensor

    def check_all_blobs_used(self) -> None:
        if self.blobs is not None and len(self.blobs) != len(self.used_blobs):
            raise self.error(f"the weights hold {len(self.blobs)} blob(s), the layer uses "
                             f"{len(self.used_blobs)} (shapes {[list(s) for s in self.used_blobs]})")


def _initial_blob(layer_name: str, index: int, shape: Shape, init: str) -> torch.Tensor:
    """A deterministic initial blob: the same layer name always gets the same values.  Scaled in place:
    the caller charged the memory budget for one tensor of ``shape``."""
    if init == "zeros":
        return torch.zeros(shape)
    if init == "ones":
        return torch.ones(shape)
    generator = torch.Generator().manual_seed(zlib.crc32(f"{layer_name}/{index}".encode()))
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return torch.randn(shape, generator=generator).mul_((2.0 / max(fan_in, 1)) ** 0.5)


def load_plugin(plugin: str | os.PathLike) -> types.ModuleType:
    """Import a user's converters: a Python file (``my_layers.py``) or an importable module (``my_pkg.layers``),
    whose ``@register`` calls run as it is imported.

    A file is imported once per process however often it is named (a second import would register its
    converters twice).  A missing plugin, or one that fails while it is imported, is an InputError naming it
    (the cause chained), and leaves the registry as it was.
    """
    text = os.fspath(plugin)
    is_file = text.endswith(".py") or os.sep in text or "/" in text
    converters, counts = dict(_CONVERTERS), dict(_COUNTS)
    try:
        return _load_plugin_file(Path(text)) if is_file else importlib.import_module(text)
    except Exception as error:
        for registry, before in ((_CONVERTERS, converters), (_COUNTS, counts)):
            registry.clear()
            registry.update(before)
        if isinstance(error, InputError):
            raise
        if isinstance(error, ModuleNotFoundError) and not is_file and error.name is not None and (
                text == error.name or text.startswith(error.name + ".")):
            raise InputError(f"plugin {text!r}: no such file or importable module") from None
        raise InputError(f"plugin {text!r} failed to import: {type(error).__name__}: {error}") from error


def _load_plugin_file(path: Path) -> types.ModuleType:
    """The module of a plugin file, under a private name per file: never the name of an importable module
    that it could shadow."""
    if not path.is_file():
        raise InputError(f"plugin {str(path)!r}: no such file")
    resolved = path.resolve()
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_caffe2torch_plugin_{zlib.crc32(str(resolved).encode()):08x}_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise InputError(f"plugin {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # while it runs too: inspect and dataclasses look classes' modules up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
