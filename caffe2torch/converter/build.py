"""Build a ``torch.fx.GraphModule`` from the graph IR: one submodule per Caffe layer, in prototxt order."""

from __future__ import annotations

import contextlib
import copy
import keyword
import operator
import re
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import fx, nn

from caffe2torch.converter.graph import NetGraph, Shape
from caffe2torch.converter.registry import LayerContext, get_converter
from caffe2torch.errors import ConversionError


class CaffeNet(fx.GraphModule):
    """The converted net.  ``caffe_names`` maps each submodule to its Caffe layer name; the other
    attributes describe the net's inputs, outputs and blobs."""

    CAFFE_ATTRIBUTES = ("caffe_names", "input_names", "input_shapes", "output_shapes", "blob_shapes",
                        "net_name", "notes")

    def __deepcopy__(self, memo: dict) -> "CaffeNet":
        # GraphModule's deepcopy rebuilds the module from its graph and forgets other attributes.
        copied = super().__deepcopy__(memo)
        for name in self.CAFFE_ATTRIBUTES:
            if hasattr(self, name):
                setattr(copied, name, copy.deepcopy(getattr(self, name), memo))
        return copied


def identifier(name: str, taken: set[str]) -> str:
    """A Python identifier made from a Caffe name: only [A-Za-z0-9_], never a keyword or a Module attribute.

    Names from a model file reach generated code only in this form (or as repr'd strings), so a hostile
    layer name cannot inject code.
    """
    ident = re.sub(r"\W", "_", name, flags=re.ASCII) or "_"
    if ident[0].isdigit():
        ident = "_" + ident
    if keyword.iskeyword(ident) or hasattr(fx.GraphModule, ident):
        ident += "_"
    base, n = ident, 1
    while ident in taken:
        n += 1
        ident = f"{base}_{n}"
    taken.add(ident)
    return ident


@contextlib.contextmanager
def on_meta(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with every parameter and buffer swapped for a meta tensor of the same shape, for running
    it without computing anything (cheaper than torch.func.functional_call, whose import costs seconds)."""
    saved = []
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for key, tensor in store.items():
                if tensor is not None:
                    saved.append((store, key, tensor))
                    store[key] = torch.empty_like(tensor, device="meta")
    try:
        yield module
    finally:
        for store, key, tensor in saved:
            store[key] = tensor


def _infer_shapes(module: nn.Module, input_shapes: Sequence[Shape]) -> list[Shape]:
    """Output shapes of ``module`` found by running it on meta tensors (no data is computed)."""
    inputs = tuple(torch.empty(shape, device="meta") for shape in input_shapes)
    with on_meta(module), torch.no_grad():
        result = module(*inputs)
    results = result if isinstance(result, tuple) else (result,)
    return [tuple(r.shape) for r in results]


def build_module(graph: NetGraph, weights: Mapping[str, Sequence[np.ndarray]] | None,
                 *, outputs: Sequence[str] | None = None, random_init: bool = False) -> CaffeNet:
    root = nn.Module()
    fx_graph = fx.Graph()
    taken: set[str] = set()
    caffe_names: dict[str, str] = {}
    env: dict[str, fx.Node] = {}
    shapes: dict[str, Shape] = {}

    for value, shape in graph.inputs:
        env[value] = fx_graph.placeholder(identifier(graph.blob_of[value], taken))
        shapes[value] = shape

    layer_output: dict[str, fx.Node] = {}
    blob_shapes: dict[str, list[Shape]] = {}
    for layer in graph.layers:
        blobs = None
        if weights is not None and layer.name in weights:
            blobs = [np.asarray(b) for b in weights[layer.name]]
        ctx = LayerContext(layer.message, [shapes[b] for b in layer.bottoms], len(layer.tops), blobs,
                           random_init=random_init or weights is None)
        module = get_converter(layer.type, layer.name)(ctx)
        if weights is not None:
            ctx.check_all_blobs_used()
        if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
            raise AssertionError(f"converter of {layer.type} left tensors on the meta device")
        if ctx.used_blobs:
            blob_shapes[layer.name] = list(ctx.used_blobs)
        try:
            top_shapes = _infer_shapes(module, ctx.input_shapes)
        except ConversionError:
            raise
        except Exception as error:  # torch's own message says which dimension disagrees
            shown = ", ".join(str(list(s)) for s in ctx.input_shapes)
            raise ConversionError(f"layer {layer.name!r} ({layer.type}): cannot run on inputs of shape "
                                  f"{shown}: {str(error).splitlines()[0]}") from None
        if len(top_shapes) != len(layer.tops):
            raise ConversionError(f"layer {layer.name!r} ({layer.type}) makes {len(top_shapes)} output(s) "
                                  f"but has {len(layer.tops)} top(s)")
        if not layer.tops:
            continue  # Silence and friends: nothing downstream can see them
        ident = identifier(layer.name, taken)
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
    return model


def _select(name: str, graph: NetGraph, env: dict[str, fx.Node], layer_output: dict[str, fx.Node]) -> fx.Node:
    """A layer name means that layer's output; a blob name, the blob's last value."""
    if name in layer_output:
        return layer_output[name]
    if name in graph.final_value and graph.final_value[name] in env:
        return env[graph.final_value[name]]
    raise ConversionError(f"outputs: {name!r} is neither a layer nor a blob of the net")
