"""Build a ``torch.fx.GraphModule`` from the graph IR: one submodule per Caffe layer, in prototxt order."""

from __future__ import annotations

import builtins
import copy
import functools
import keyword
import operator
import re
import types
from typing import Any, Mapping, Sequence

import numpy as np
from torch import fx, nn

from caffe2torch.converter import shapes
from caffe2torch.converter.graph import Layer, NetGraph, Shape, shape_problem
from caffe2torch.converter.registry import LayerContext, check_counts, get_converter
from caffe2torch.errors import Caffe2TorchError, ConversionError


class DescribedGraph(fx.GraphModule):
    """A GraphModule whose attributes describing the net (``DESCRIPTION``) survive deep copies:
    GraphModule's own deepcopy rebuilds the module from its graph and forgets other attributes."""

    DESCRIPTION: tuple[str, ...] = ()

    def __deepcopy__(self, memo: dict) -> "DescribedGraph":
        copied = super().__deepcopy__(memo)
        for name in self.DESCRIPTION:
            if hasattr(self, name):
                setattr(copied, name, copy.deepcopy(getattr(self, name), memo))
        return copied


class CaffeNet(DescribedGraph):
    """The converted net.  ``caffe_names`` maps each submodule to its Caffe layer name; the other
    attributes describe the net's inputs, outputs and blobs."""

    DESCRIPTION = ("caffe_names", "input_names", "input_shapes", "output_shapes", "blob_shapes",
                        "net_name", "notes", "output_types", "deploy", "zoo_model", "preset", "label_order",
                        "preprocessing_hints")

    # Where the net came from, which caffe2torch.load records (see caffe2torch.nets): the zoo model it is, that
    # model's preset and label order, and the hints of the prototxt's comments.  None when not known.
    zoo_model: str | None = None
    preset: str | None = None
    label_order: str | None = None
    preprocessing_hints: dict[str, Any] | None = None


# Module-level names of the exported model.py (export.generate_code writes them) besides the copied layer
# definitions: a net input named like one would shadow it in the generated forward.
MODEL_PY_NAMES = ("annotations", "torch", "nn", "F", "math", "os", "Net", "load", "NET_NAME", "CAFFE_NAMES",
                  "INPUTS", "INPUT_SHAPES")


@functools.cache
def reserved_names() -> frozenset[str]:
    """Names a submodule or forward argument must not take: Python keywords and builtins, ``self``, every
    attribute of a CaffeNet (class or instance: ``training``, ``_modules``, ``caffe_names``...), and every
    module-level name of an exported model.py, the names of the caffe2torch.modules files it copies included
    (the converter functions, which it does not copy, stay free: a layer may be called ``relu``)."""
    from caffe2torch import modules

    library_files = [module for module in vars(modules).values() if isinstance(module, types.ModuleType)]
    copied = {name for module in library_files for name in vars(module) if not name.startswith("__")}
    return frozenset({*keyword.kwlist, *dir(builtins), "self", *dir(CaffeNet(nn.Module(), fx.Graph())),
                      *CaffeNet.DESCRIPTION, *MODEL_PY_NAMES, *copied})


class Identifiers:
    """Unique Python identifiers made from Caffe names: only [A-Za-z0-9_], never a reserved name.

    Names from a model file reach generated code only in this form (or as repr'd strings), so a hostile
    layer name cannot inject code; the Caffe name stays in ``caffe_names``.  Never two leading
    underscores: ``self.__x`` inside the exported ``class Net`` would be name-mangled, and its state dict
    would not load.  Linear in the number of names, however many share one: each base remembers the last
    suffix it handed out.
    """

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self._last_suffix: dict[str, int] = {}

    def __call__(self, name: str) -> str:
        ident = re.sub(r"\W", "_", name, flags=re.ASCII) or "_"
        if ident[0].isdigit():
            ident = "_" + ident
        ident = re.sub(r"^__+", "_", ident)
        reserved = reserved_names()
        while ident in reserved:
            ident += "_"
        base, n = ident, self._last_suffix.get(ident, 1)
        separator = "" if base.endswith("_") else "_"
        while ident in self.taken or ident in reserved:
            n += 1
            ident = f"{base}{separator}{n}"
        self._last_suffix[base] = n
        self.taken.add(ident)
        return ident


def _infer_shapes(module: nn.Module, input_shapes: Sequence[Shape]) -> list[Shape]:
    """Output shapes of ``module`` by its rule (see .shapes: integer arithmetic, as Caffe's Reshape; no tensor
    is made).  Only a user's module without a rule is run on meta tensors, whose first op in a process costs
    seconds of imports."""
    return shapes.output_shapes(module, input_shapes)


def _layer_error(layer: Layer, message: str) -> ConversionError:
    return ConversionError(f"layer {layer.name!r} ({layer.type}): {message}")


def _convert_layer(layer: Layer, input_shapes: list[Shape], weights: Mapping[str, Sequence[np.ndarray]] | None,
                   random_init: bool) -> tuple[nn.Module, list[Shape], LayerContext]:
    """The layer's module, its output shapes and the context it was converted in.  Whatever goes wrong is
    an error naming the layer: a converter or torch failing on a malformed net must not surface as an
    IndexError or a RuntimeError."""
    check_counts(layer.type, layer.name, len(layer.bottoms), len(layer.tops))
    convert = get_converter(layer.type, layer.name)
    ctx = LayerContext(layer.message, input_shapes, len(layer.tops), None, random_init=random_init)
    try:
        if weights is not None and layer.name in weights:
            ctx.blobs = [np.asarray(blob) for blob in weights[layer.name]]
        module = convert(ctx)
        if weights is not None:
            ctx.check_all_blobs_used()
    except Caffe2TorchError:
        raise
    except Exception as error:
        raise _layer_error(layer, f"cannot be converted: {_describe(error)}") from error
    if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
        raise AssertionError(f"converter of {layer.type} left tensors on the meta device")
    try:
        top_shapes = _infer_shapes(module, ctx.input_shapes)
    except (Caffe2TorchError, shapes.MissingShapeRule):
        raise
    except Exception as error:  # a rule's ValueError says what is wrong; torch's own message which dimension
        shown = ", ".join(str(list(s)) for s in ctx.input_shapes)
        ruled = type(error) is ValueError and shapes.shape_rule(module) is not None
        reason = str(error) if ruled else _describe(error)
        raise _layer_error(layer, f"cannot run on inputs of shape {shown}: {reason}") from error
    if len(top_shapes) != len(layer.tops):
        raise _layer_error(layer, f"makes {len(top_shapes)} output(s) but has {len(layer.tops)} top(s)")
    for top, shape in zip(layer.top_blobs, top_shapes):
        problem = shape_problem(shape)
        if problem:
            raise _layer_error(layer, f"top {top!r} would have shape {list(shape)}: {problem}")
    return module, top_shapes, ctx


def _describe(error: Exception) -> str:
    """The first line of an unexpected error, with its type when that says more than the message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def build_module(graph: NetGraph, weights: Mapping[str, Sequence[np.ndarray]] | None,
                 *, outputs: Sequence[str] | None = None, random_init: bool = False) -> CaffeNet:
    root = nn.Module()
    fx_graph = fx.Graph()
    identifier = Identifiers()
    caffe_names: dict[str, str] = {}
    env: dict[str, fx.Node] = {}
    shapes: dict[str, Shape] = {}

    for value, shape in graph.inputs:
        env[value] = fx_graph.placeholder(identifier(graph.blob_of[value]))
        shapes[value] = shape

    layer_output: dict[str, fx.Node] = {}
    blob_shapes: dict[str, list[Shape]] = {}
    for layer in graph.layers:
        module, top_shapes, ctx = _convert_layer(layer, [shapes[b] for b in layer.bottoms], weights,
                                                 random_init=random_init or weights is None)
        if ctx.used_blobs:
            blob_shapes[layer.name] = list(ctx.used_blobs)
        if not layer.tops:
            continue  # Silence and friends: nothing downstream can see them
        ident = identifier(layer.name)
        root.add_module(ident, module)
        caffe_names[ident] = layer.name
        node = fx_graph.call_module(ident, tuple(env[b] for b in layer.bottoms))
        layer_output[layer.name] = node
        if len(layer.tops) == 1:
            env[layer.tops[0]] = node
        else:
            for i, value in enumerate(layer.tops):
                env[value] = fx_graph.call_function(operator.getitem, (node, i))
        for value, shape in zip(layer.tops, top_shapes):
            shapes[value] = shape

    if outputs:
        result: Any = {name: _select(name, graph, env, layer_output) for name in outputs}
    else:
        if not graph.outputs:
            raise ConversionError("the net has no output blob (every blob is consumed)")
        named = {graph.blob_of[v]: env[v] for v in graph.outputs}
        result = next(iter(named.values())) if len(named) == 1 else named
    fx_graph.output(result)
    model = CaffeNet(root, fx_graph, class_name="CaffeNet")
    model.caffe_names = caffe_names
    model.input_names = [graph.blob_of[v] for v, _ in graph.inputs]
    model.input_shapes = [shape for _, shape in graph.inputs]
    model.output_shapes = {graph.blob_of[v]: shapes[v] for v in graph.outputs}
    model.blob_shapes = blob_shapes
    model.net_name = graph.name
    model.notes = list(graph.notes)
    model.output_types = _output_types(graph, outputs)
    return model


def _select(name: str, graph: NetGraph, env: dict[str, fx.Node], layer_output: dict[str, fx.Node]) -> fx.Node:
    """A layer name means that layer's output; a blob name, the blob's last value."""
    if name in layer_output:
        return layer_output[name]
    if name in graph.final_value and graph.final_value[name] in env:
        return env[graph.final_value[name]]
    raise ConversionError(f"outputs: {name!r} is neither a layer nor a blob of the net")


def _output_types(graph: NetGraph, outputs: Sequence[str] | None) -> dict[str, str | None]:
    """The Caffe type of the layer writing each output (None for a net input), names resolved as _select
    does: how the runtime tells a net ending in Softmax, whose outputs are probabilities, from one ending
    in logits."""
    writer = {value: layer.type for layer in graph.layers for value in layer.tops}
    if not outputs:
        return {graph.blob_of[value]: writer[value] for value in graph.outputs}
    layer_type = {layer.name: layer.type for layer in graph.layers if layer.tops}
    return {name: layer_type[name] if name in layer_type else writer.get(graph.final_value[name]) for name in outputs}
