"""The net in the form a reference Caffe runtime (OpenCV's dnn, pycaffe) runs it, made from the graph IR.

The form is the TEST-phase net as the converter sees it: excluded and training-only layers dropped, data
layers replaced by one ``Input`` layer of the given shapes, phase rules and blobs cleared, and every blob
written once (static single assignment): a layer's first top is named after the layer, its others
``layer:i``.  So nothing is computed in place, each layer's output stays readable after a forward pass, and
OpenCV's naming of outputs (after the layer, except a Convolution's, named after its top) cannot go astray.

The converter builds it because it already knows these facts; a runtime asks :class:`DeployForm` for the
prototxt text and for the blob a name means, and never handles protobuf messages itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caffe2torch.converter.graph import NetGraph, Shape, build_graph
from caffe2torch.errors import InputError


@dataclass(frozen=True)
class DeployBlob:
    """Where a requested output lives in the deploy net: ``blob``, top ``index`` of ``layer`` (None for a
    net input)."""

    blob: str
    layer: str | None
    index: int


@dataclass(frozen=True)
class DeployForm:
    """A net's deploy form (see the module docstring): the prototxt text for any input shapes, the
    layers in order, and the blob each layer or blob name means."""

    input_shapes: dict[str, Shape]  # net input blob -> the shape the net was built for
    layers: tuple[tuple[str, str], ...]  # (name, type) of each layer with outputs, in order
    outputs: dict[str, DeployBlob]  # a layer's name: its first top; a blob's name: its last value
    topless_layers: frozenset[str]  # layers that write nothing: no output to ask them for
    problem: str | None  # why no reference runtime can run this net, if one cannot
    _net: Any = field(repr=False)  # caffe_pb2.NetParameter: the deploy layers, without the Input layer
    _input_layer: str = "input"  # the Input layer's name: "input", unless a layer of the net has it

    @property
    def input_names(self) -> list[str]:
        return list(self.input_shapes)

    def output(self, name: str) -> DeployBlob:
        """The blob a requested name means: a layer's first top, or a blob's last value."""
        if name in self.topless_layers:
            raise InputError(f"layer {name!r} has no output")
        if name not in self.outputs:
            raise InputError(f"{name!r} is neither a layer nor a blob of the net")
        return self.outputs[name]

    def prototxt(self, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 layer_types: Mapping[str, str] | None = None) -> str:
        """The deploy net as prototxt text for ``input_shapes`` (by input name; default: the shapes the
        net was built for), with each layer type in ``layer_types`` written as the type it maps to (a
        runtime's stand-in for a layer it gets wrong).

        A layer so renamed also carries its parameter fields (those named ``*_param``, fields no schema
        here knows as the prototxt wrote them) as prototxt text in ``python_param.param_str``, the field
        through which Caffe hands a Python layer its parameters: a runtime may read the fields it does not
        know lossily (OpenCV keeps only the last value of a repeated one and drops minus signs), but it
        passes a string on as it is."""
        from google.protobuf import text_format

        from caffe2torch.caffe_proto import caffe_pb2

        if self.problem is not None:
            raise InputError(self.problem)
        shapes = {**self.input_shapes, **(input_shapes or {})}
        net = caffe_pb2.NetParameter(name=self._net.name)
        inputs = net.layer.add(name=self._input_layer, type="Input")
        for name in self.input_shapes:
            inputs.top.append(name)
            inputs.input_param.shape.add(dim=shapes[name])
        net.layer.extend(self._net.layer)
        kept_texts = []
        for layer in net.layer[1:]:
            kept_texts.append([field.text for field in layer.caffe2torch_kept_field])
            if layer.type in (layer_types or {}):
                layer.type = layer_types[layer.type]
                parameters = _parameter_text(layer, kept_texts[-1])
                if parameters:
                    layer.python_param.param_str = parameters
            layer.ClearField("caffe2torch_kept_field")
            layer.ClearField("caffe2torch_fork_layer")
        if not any(kept_texts):
            return text_format.MessageToString(net)
        # Fields no schema here knows go back as the prototxt wrote them, for a runtime whose schema knows them.
        layers = net.layer[:]
        del net.layer[:]
        text = text_format.MessageToString(net)
        for layer, kept in zip(layers, [[], *kept_texts]):
            body = text_format.MessageToString(layer, indent=2) + "".join(f"  {kept_text}\n" for kept_text in kept)
            text += f"layer {{\n{body}}}\n"
        return text

    def write_caffemodel(self, weights: Mapping[str, Sequence[Any]], path: str | Path) -> None:
        """A binary caffemodel of ``weights`` for this net's layers (weights of other layers are left out)."""
        from caffe2torch.caffe_proto.weights import write_caffemodel

        known = {layer.name for layer in self._net.layer}
        write_caffemodel(self._net, {name: blobs for name, blobs in weights.items() if name in known}, path)


def _parameter_text(layer: Any, kept_texts: Sequence[str]) -> str:
    """A layer's parameter fields as one line of prototxt text: the ``*_param`` fields its message holds
    (not ``python_param``), then the kept fields' texts."""
    from google.protobuf import text_format

    from caffe2torch.caffe_proto import caffe_pb2

    parameters = caffe_pb2.LayerParameter()
    for descriptor, value in layer.ListFields():
        if descriptor.name.endswith("_param") and descriptor.name != "python_param":
            getattr(parameters, descriptor.name).CopyFrom(value)
    texts = [text_format.MessageToString(parameters, as_one_line=True), *(text.strip() for text in kept_texts)]
    return " ".join(text for text in texts if text)


def deploy_form(net: Any, input_shape: Shape | dict[str, Shape] | None = None) -> DeployForm:
    """The deploy form of a NetParameter; ``input_shape`` as for :func:`caffe2torch.converter.convert`."""
    return deploy_form_of(build_graph(net, input_shape))


def deploy_form_of(graph: NetGraph) -> DeployForm:
    """The deploy form of a graph IR (see the module docstring)."""
    from caffe2torch.caffe_proto import caffe_pb2

    blob = {value: graph.blob_of[value] for value, _ in graph.inputs}
    taken = set(blob.values())
    problem = None
    for layer in graph.layers:
        if layer.name in taken and problem is None:
            problem = (f"layer {layer.name!r} has the name of another layer or of a net input; a reference "
                       "runtime could not tell their outputs apart")
        taken.add(layer.name)
    input_layer, suffix = "input", 1
    while input_layer in taken:  # a layer of the net may be called "input" already
        suffix += 1
        input_layer = f"input_{suffix}"

    net = caffe_pb2.NetParameter(name=graph.name)
    writer: dict[str, tuple[str, int]] = {}
    for layer in graph.layers:
        copy = net.layer.add()
        copy.CopyFrom(layer.message)
        for field in ("include", "exclude", "blobs", "bottom", "top"):
            copy.ClearField(field)
        copy.bottom.extend(blob[value] for value in layer.bottoms)
        for index, value in enumerate(layer.tops):
            blob[value] = layer.name if index == 0 else f"{layer.name}:{index}"
            writer[value] = (layer.name, index)
            copy.top.append(blob[value])

    def located(value: str) -> DeployBlob:
        layer, index = writer.get(value, (None, 0))
        return DeployBlob(blob[value], layer, index)

    outputs: dict[str, DeployBlob] = {}
    topless: set[str] = set()
    for layer in graph.layers:  # a layer's name wins over a blob's; the first of two same-named layers
        if layer.name not in outputs and layer.name not in topless:
            if layer.tops:
                outputs[layer.name] = located(layer.tops[0])
            else:
                topless.add(layer.name)
    for name, value in graph.final_value.items():
        if name not in outputs and name not in topless:
            outputs[name] = located(value)
    return DeployForm(
        input_shapes={graph.blob_of[value]: tuple(shape) for value, shape in graph.inputs},
        layers=tuple((layer.name, layer.type) for layer in graph.layers if layer.tops),
        outputs=outputs, topless_layers=frozenset(topless), problem=problem, _net=net, _input_layer=input_layer)
