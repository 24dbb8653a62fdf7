"""The net as a small graph IR: Caffe's phase rules applied, training-only layers dropped, in-place tops
turned into distinct values, and the deploy inputs found."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Sequence

from caffe2torch.errors import ConversionError

Shape = tuple[int, ...]

# Layers that only feed or judge training: a deploy graph has no use for them.
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "Python"}
TRAINING_ONLY_TYPES = {
    "Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
    "InfogainLoss", "ContrastiveLoss", "MultinomialLogisticLoss", "HDF5Output",
}
TEST_PHASE = 1  # caffe.Phase.TEST
MAX_AXES = 32  # Caffe's kMaxBlobAxes
MAX_DIM = 2**31 - 1  # Caffe holds each dimension in an int


def shape_problem(shape: Shape) -> str | None:
    """What makes ``shape`` unusable as a blob (Caffe's Blob::Reshape limits), or None."""
    if len(shape) > MAX_AXES:
        return f"a blob has at most {MAX_AXES} axes"
    if any(d < 1 for d in shape):
        return "every dimension must be positive"
    if any(d > MAX_DIM for d in shape):
        return f"a dimension exceeds {MAX_DIM}"
    return None


@dataclass
class Layer:
    """One layer in the graph; ``bottoms``/``tops`` are value ids (a blob name plus a version)."""

    name: str
    type: str
    message: Any  # caffe_pb2.LayerParameter
    bottoms: list[str]
    tops: list[str]
    top_blobs: list[str]


@dataclass
class NetGraph:
    name: str
    inputs: list[tuple[str, Shape]]  # (value id, shape)
    layers: list[Layer]
    outputs: list[str]  # value ids of the net's output blobs
    blob_of: dict[str, str]  # value id -> Caffe blob name
    final_value: dict[str, str]  # Caffe blob name -> value id of its last version
    notes: list[str] = field(default_factory=list)


def _rule_matches(rule: Any, phase: int, level: int, stages: set[str]) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer: Any, phase: int = TEST_PHASE, level: int = 0, stages: Sequence[str] = ()) -> bool:
    """Caffe's Net::FilterNet for one layer: include rules win, else no exclude rule may match."""
    stage_set = set(stages)
    if layer.include:
        return any(_rule_matches(rule, phase, level, stage_set) for rule in layer.include)
    return not any(_rule_matches(rule, phase, level, stage_set) for rule in layer.exclude)


def _data_layer_shape(layer: Any) -> Shape | None:
    """The shape a training data layer would feed, when its parameters tell it."""
    crop = layer.transform_param.crop_size if layer.HasField("transform_param") else 0
    if layer.type == "MemoryData":
        p = layer.memory_data_param
        return (p.batch_size, p.channels, p.height, p.width)
    if layer.type == "ImageData":
        p = layer.image_data_param
        height, width = (crop, crop) if crop else (p.new_height, p.new_width)
        if height and width:
            return (p.batch_size or 1, 3 if p.is_color else 1, height, width)
    if layer.type == "DummyData" and layer.dummy_data_param.shape:
        return tuple(layer.dummy_data_param.shape[0].dim)
    return None


def build_graph(net: Any, input_shape: Shape | dict[str, Shape] | None = None) -> NetGraph:
    """Turn a NetParameter (current ``layer`` form) into the IR for the TEST phase."""
    if net.layers and not net.layer:
        raise ConversionError("the net uses the legacy V1 'layers' form; read it with read_prototxt, "
                              "which upgrades it")
    overrides = _input_overrides(input_shape)
    version: dict[str, int] = {}
    blob_of: dict[str, str] = {}
    final: dict[str, str] = {}

    def new_value(blob: str) -> str:
        n = version.get(blob, -1) + 1
        version[blob] = n
        value = blob if n == 0 else f"{blob}@{n}"
        blob_of[value] = blob
        final[blob] = value
        return value

    inputs: list[tuple[str, Shape]] = []
    layers: list[Layer] = []
    notes: list[str] = []
    producer: dict[str, str] = {}  # value -> layer that made it (for error messages)
    dropped_tops: set[str] = set()

    def add_input(blob: str, shape: Shape | None, origin: str) -> None:
        shape = overrides.pop("" if not inputs and "" in overrides else blob, shape)
        if shape is None:
            raise ConversionError(f"input {blob!r} (from {origin}) has no known shape; "
                                  f"give one with input_shape= / --input-shape")
        try:  # from the net, or from the caller's input_shape
            shape = tuple(operator.index(d) for d in shape)
        except TypeError:
            raise ConversionError(f"input {blob!r} (from {origin}): shape {shape!r} is not a list of "
                                  f"integers") from None
        problem = shape_problem(shape)
        if problem:
            raise ConversionError(f"input {blob!r} (from {origin}) has shape {list(shape)}: {problem}")
        inputs.append((new_value(blob), shape))

    for index, message in enumerate(net.layer):
        if not layer_included(message):
            notes.append(f"layer {message.name!r} ({message.type}) excluded from the TEST phase")
            continue
        if message.type == "Input":
            shapes = list(message.input_param.shape)
            if len(shapes) > 1 and len(shapes) != len(message.top):
                raise ConversionError(f"Input layer {message.name!r} gives {len(shapes)} shapes for "
                                      f"{len(message.top)} tops: give one shape for all or one per top")
            for i, top in enumerate(message.top):
                dims = shapes[i if len(shapes) > 1 else 0].dim if shapes else None
                add_input(top, tuple(dims) if dims is not None else None, f"Input layer {message.name!r}")
            continue
        # A Python layer with bottoms computes (its converter is registered as "Python:<module>.<layer>");
        # without bottoms it feeds data, as the other data layers do.
        if message.type in DATA_TYPES and not (message.type == "Python" and message.bottom):
            notes.append(f"data layer {message.name!r} ({message.type}) replaced by the net input "
                         f"{message.top[0]!r}" if message.top else f"data layer {message.name!r} dropped")
            if message.top:
                add_input(message.top[0], _data_layer_shape(message), f"data layer {message.name!r}")
                dropped_tops.update(message.top[1:])
            continue
        if message.type in TRAINING_ONLY_TYPES:
            notes.append(f"training-only layer {message.name!r} ({message.type}) dropped")
            continue
        bottoms = []
        for blob in message.bottom:
            if blob not in final:
                hint = ""
                if blob in dropped_tops:
                    hint = " (it comes from a dropped data layer, e.g. a label)"
                elif any(blob in later.top for later in net.layer[index:]):  # only here: once per failure
                    hint = " (only a later layer produces it: the net has a cycle or is out of order)"
                raise ConversionError(f"layer {message.name!r} ({message.type}): bottom blob {blob!r} is not "
                                      f"produced by any earlier layer{hint}")
            bottoms.append(final[blob])
        tops = [new_value(blob) for blob in message.top]
        for value in tops:
            producer[value] = message.name
        layers.append(Layer(message.name, message.type, message, bottoms, tops, list(message.top)))

    if overrides:
        raise ConversionError(f"input_shape names {sorted(overrides)}, which are not inputs of the net")
    if not inputs:
        raise ConversionError("the net has no input: it needs an Input layer, 'input:' fields or a data layer")
    consumed = {value for layer in layers for value in layer.bottoms}
    outputs = [value for layer in layers for value in layer.tops if value not in consumed]
    return NetGraph(net.name, inputs, layers, outputs, blob_of, final, notes)


def _input_overrides(input_shape: Shape | dict[str, Shape] | None) -> dict[str, Shape | None]:
    """``input_shape`` may be one shape (for the first input) or a dict per input blob."""
    if input_shape is None:
        return {}
    if isinstance(input_shape, dict):
        return dict(input_shape)
    return {"": input_shape}
