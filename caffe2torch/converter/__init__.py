"""Convert a Caffe net to an equivalent ``torch.fx.GraphModule``.

The pieces: :mod:`.graph` (the IR: phase rules, inputs, in-place tops), :mod:`.registry` (one converter per
Caffe layer type, :func:`register` for your own), :mod:`.layers` (Caffe's semantics, one module per layer
family) and :mod:`.build` (the fx graph).  It takes net descriptions (NetParameters) only: turning a path or
a zoo name into one, and knowing which zoo model it is, is :mod:`caffe2torch.nets`'s work.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from caffe2torch.converter.build import CaffeNet, build_module
from caffe2torch.converter.deploy import DeployForm, deploy_form, deploy_form_of
from caffe2torch.converter.graph import NetGraph, build_graph
from caffe2torch.converter.registry import LayerContext, register, registered, registered_types
from caffe2torch.limits import memory_budget

__all__ = ["convert", "register", "registered", "registered_types", "LayerContext", "CaffeNet", "NetGraph",
           "build_graph", "resolve_weights", "expected_blob_shapes", "DeployForm", "deploy_form"]

Shape = tuple[int, ...]
Weights = Mapping[str, Sequence[np.ndarray]]


def resolve_weights(weights: str | os.PathLike | Weights | None) -> Weights | None:
    """Weights as a mapping of layer name to blobs: a ``.caffemodel`` / ``.caffemodel.h5`` path is read."""
    if weights is None or isinstance(weights, Mapping):
        return weights
    from caffe2torch.caffe_proto import read_weights

    return read_weights(weights)


def convert(net: Any, weights: str | os.PathLike | Weights | None = None, *,
            outputs: Sequence[str] | None = None, input_shape: Shape | dict[str, Shape] | None = None,
            random_init: bool = False) -> CaffeNet:
    """Convert a NetParameter, with weights given as a weights file path or a mapping of layer name to
    blobs, to an equivalent ``torch.fx.GraphModule`` in eval mode.

    ``outputs`` names layers (their output) or blobs (their last value) to return as a dict instead of the
    net's output.  The model carries its ``deploy`` form, for reference runtimes (see .deploy).  Reading
    the weights and every parameter is charged to one memory budget (see caffe2torch.limits) before it is
    allocated, so a net that declares terabytes is refused, naming the layer, instead of exhausting memory.
    """
    with memory_budget():
        graph = build_graph(net, input_shape)
        module = build_module(graph, resolve_weights(weights), outputs=outputs, random_init=random_init)
    module.deploy = deploy_form_of(graph)
    return module.eval()


def expected_blob_shapes(net: Any, input_shape: Shape | dict[str, Shape] | None = None) -> dict[str, list[Shape]]:
    """The blobs each layer of ``net`` needs, as shapes: what a caffemodel for it must hold."""
    return convert(net, None, input_shape=input_shape, random_init=True).blob_shapes
