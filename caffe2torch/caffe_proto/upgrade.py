"""Bring old nets to the current `layer { type: "..." }` form, step for step as Caffe does.

Caffe (src/caffe/util/upgrade_proto.cpp, UpgradeNetAsNeeded) upgrades every net it reads, text or
binary, in this order; we apply the same steps so that an old file means here what it meant there:

1. V0 -> V1: `layers { layer { type: "conv" ... } }` becomes `layers { type: CONVOLUTION
   convolution_param { ... } }`; "padding" layers are first folded into the pad of the
   convolution/pooling layer that reads them.
2. Data transformation: `scale`, `mean_file`, `crop_size`, `mirror` of V1 DATA, IMAGE_DATA and
   WINDOW_DATA layers move into `transform_param`.
3. V1 -> current: enum types become type strings, `blobs_lr`/`weight_decay`/`param` names become
   `param { lr_mult decay_mult name }`, every parameter message moves across.
4. Net inputs: `input` with `input_shape` or `input_dim` becomes an "Input" layer named "input" at
   the front of the net.
5. BatchNorm layers that declare three `param`s get lr_mult and decay_mult 0 (their blobs are
   statistics, not learned).

Where Caffe aborts (LOG(FATAL)/CHECK) we raise CaffeFormatError; where it logs an error and goes
on ("not fully compatible") we warn with CaffeFormatWarning and go on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.errors import CaffeFormatError

V1Type = caffe_pb2.V1LayerParameter


class CaffeFormatWarning(UserWarning):
    """A model file was read, but part of it was dropped or could not be taken over."""


# UpgradeV0LayerType: V0 type strings -> V1 enum.
_V0_TYPES = {
    "accuracy": V1Type.ACCURACY,
    "bnll": V1Type.BNLL,
    "concat": V1Type.CONCAT,
    "conv": V1Type.CONVOLUTION,
    "data": V1Type.DATA,
    "dropout": V1Type.DROPOUT,
    "euclidean_loss": V1Type.EUCLIDEAN_LOSS,
    "flatten": V1Type.FLATTEN,
    "hdf5_data": V1Type.HDF5_DATA,
    "hdf5_output": V1Type.HDF5_OUTPUT,
    "im2col": V1Type.IM2COL,
    "images": V1Type.IMAGE_DATA,
    "infogain_loss": V1Type.INFOGAIN_LOSS,
    "innerproduct": V1Type.INNER_PRODUCT,
    "lrn": V1Type.LRN,
    "multinomial_logistic_loss": V1Type.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": V1Type.POOLING,
    "relu": V1Type.RELU,
    "sigmoid": V1Type.SIGMOID,
    "softmax": V1Type.SOFTMAX,
    "softmax_loss": V1Type.SOFTMAX_LOSS,
    "split": V1Type.SPLIT,
    "tanh": V1Type.TANH,
    "window_data": V1Type.WINDOW_DATA,
}

# UpgradeV1LayerType: V1 enum -> current type string.
_V1_TYPES = {
    V1Type.NONE: "",
    V1Type.ABSVAL: "AbsVal",
    V1Type.ACCURACY: "Accuracy",
    V1Type.ARGMAX: "ArgMax",
    V1Type.BNLL: "BNLL",
    V1Type.CONCAT: "Concat",
    V1Type.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1Type.CONVOLUTION: "Convolution",
    V1Type.DECONVOLUTION: "Deconvolution",
    V1Type.DATA: "Data",
    V1Type.DROPOUT: "Dropout",
    V1Type.DUMMY_DATA: "DummyData",
    V1Type.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1Type.ELTWISE: "Eltwise",
    V1Type.EXP: "Exp",
    V1Type.FLATTEN: "Flatten",
    V1Type.HDF5_DATA: "HDF5Data",
    V1Type.HDF5_OUTPUT: "HDF5Output",
    V1Type.HINGE_LOSS: "HingeLoss",
    V1Type.IM2COL: "Im2col",
    V1Type.IMAGE_DATA: "ImageData",
    V1Type.INFOGAIN_LOSS: "InfogainLoss",
    V1Type.INNER_PRODUCT: "InnerProduct",
    V1Type.LRN: "LRN",
    V1Type.MEMORY_DATA: "MemoryData",
    V1Type.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1Type.MVN: "MVN",
    V1Type.POOLING: "Pooling",
    V1Type.POWER: "Power",
    V1Type.RELU: "ReLU",
    V1Type.SIGMOID: "Sigmoid",
    V1Type.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1Type.SILENCE: "Silence",
    V1Type.SOFTMAX: "Softmax",
    V1Type.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1Type.SPLIT: "Split",
    V1Type.SLICE: "Slice",
    V1Type.TANH: "TanH",
    V1Type.WINDOW_DATA: "WindowData",
    V1Type.THRESHOLD: "Threshold",
}

# Every `*_param` message of a V1 layer has a same-named field in LayerParameter; UpgradeV1LayerParameter
# copies each one across.
_V1_PARAMETER_MESSAGES = tuple(
    field.name
    for field in V1Type.DESCRIPTOR.fields
    if field.name.endswith("_param") and field.message_type is not None
)

# V1 data layers whose deprecated preprocessing fields move into transform_param.
_DATA_LAYER_PARAMS = {
    V1Type.DATA: "data_param",
    V1Type.IMAGE_DATA: "image_data_param",
    V1Type.WINDOW_DATA: "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def upgrade_net(net: caffe_pb2.NetParameter, *, source: str = "net") -> caffe_pb2.NetParameter:
    """The net in current form (a new message; `net` is left as it is).

    `source` names the file in errors and warnings.
    """
    bad_string = _non_utf8_string(net, "")
    if bad_string is not None:
        raise CaffeFormatError(f"{source}: string field {bad_string} is not valid UTF-8")
    upgraded = caffe_pb2.NetParameter()
    upgraded.CopyFrom(net)
    if any(layer.HasField("layer") for layer in upgraded.layers):
        upgraded = _upgrade_v0_net(upgraded, source)
    if _needs_data_upgrade(upgraded):
        _upgrade_data_transformation(upgraded)
    if len(upgraded.layers) > 0:
        upgraded = _upgrade_v1_net(upgraded, source)
    if len(upgraded.input) > 0:
        _upgrade_net_input(upgraded, source)
    _upgrade_batch_norm(upgraded)
    return upgraded


@dataclass(frozen=True)
class UnknownField:
    """One occurrence of a field that a file holds and our schema lacks (a Caffe fork's, usually)."""

    field: str  # as shown: '"norm_param"' (text) or '145' (binary, which has only numbers)
    message: str  # the message type holding it, e.g. "NormalizeParameter"
    layer_type: str
    layer_name: str
    location: str = ""  # "line:col" in a prototxt; binary files give none
    kept: bool = False  # kept in the layer for its converter (a text field of the layer itself)


def warn_unknown_fields(source: str, occurrences: list[UnknownField], stacklevel: int = 2) -> None:
    """Summarise unknown fields: one CaffeFormatWarning per (layer type, message, field), not per layer.

    A fork's model repeats its fields in every layer of a type (a face detector gives some seventy
    per-layer warnings); a summary says the same in a few lines. Fields found in exactly the same
    layers share one warning.
    """
    layers_by_field: dict[tuple[str, str, str], list[str]] = {}
    first_location: dict[tuple[str, str, str], str] = {}
    kept_fields: set[tuple[str, str, str]] = set()
    for occurrence in occurrences:
        key = (occurrence.layer_type, occurrence.message, occurrence.field)
        if occurrence.kept:
            kept_fields.add(key)
        names = layers_by_field.setdefault(key, [])
        if occurrence.layer_name not in names:
            names.append(occurrence.layer_name)
        first_location.setdefault(key, occurrence.location)
    merged: dict[tuple[str, str, tuple[str, ...], bool], list[str]] = {}
    for (layer_type, message, field), names in layers_by_field.items():
        kept = (layer_type, message, field) in kept_fields
        merged.setdefault((layer_type, message, tuple(names), kept), []).append(field)
    for (layer_type, message, names, kept), fields in merged.items():
        location = first_location[(layer_type, message, fields[0])]
        where = f"{source}:{location}" if location else source
        plural = "s" if len(fields) > 1 else ""
        kind = f"{layer_type} layer" if layer_type else "untyped layer"
        shown = ", ".join(repr(name) if name else "(unnamed)" for name in names[:3])
        layers = f"{len(names)} {kind}s ({shown}{', ...' if len(names) > 3 else ''})" if len(names) > 1 else (
            f"{kind} {shown}"
        )
        fate = ("kept for its converter (not in caffe2torch's schema: read with ctx.param, typed with the "
                "fork's --caffe-proto)") if kept else "ignored (not in caffe2torch's schema: a Caffe fork's?)"
        warnings.warn(
            f"{where}: unknown field{plural} {', '.join(fields)} in {message} of {layers} {fate}",
            CaffeFormatWarning,
            stacklevel=stacklevel + 1,
        )


def layer_type_and_name(layer: caffe_pb2.LayerParameter | caffe_pb2.V1LayerParameter) -> tuple[str, str]:
    """A layer's type as its file spells it (V1 enums by their current name, V0 strings as they are)."""
    if isinstance(layer, caffe_pb2.LayerParameter):
        return layer.type, layer.name
    if layer.HasField("layer"):
        return layer.layer.type, layer.name or layer.layer.name
    return _V1_TYPES.get(layer.type, ""), layer.name


def _non_utf8_string(message, path: str) -> str | None:
    """The path (``layers[2].layer.name``) of a string field holding bytes that are not UTF-8, if any.

    Protobuf parses binary strings without checking them (proto2) and hands them out as ``bytes``, or
    raises on access, depending on the implementation. read_weights checks on the wire; this check
    covers nets that callers parsed themselves. Blobs hold no strings and are skipped.
    """
    try:
        fields = message.ListFields()
    except UnicodeDecodeError:
        return path or message.DESCRIPTOR.name
    for descriptor, value in fields:
        if descriptor.message_type is caffe_pb2.BlobProto.DESCRIPTOR:
            continue
        for index, item in enumerate(value if descriptor.is_repeated else [value]):
            where = f"{path}.{descriptor.name}" if path else descriptor.name
            if descriptor.is_repeated:
                where += f"[{index}]"
            if descriptor.message_type is not None:
                found = _non_utf8_string(item, where)
                if found is not None:
                    return found
            elif isinstance(item, bytes) and descriptor.type == descriptor.TYPE_STRING:
                return where
    return None


def _warn(source: str, message: str) -> None:
    warnings.warn(f"{source}: {message}", CaffeFormatWarning, stacklevel=2)


def _layer_label(index: int, name: str) -> str:
    return f'layer "{name}"' if name else f"layer #{index} (unnamed)"


# --- V0 -> V1 ---------------------------------------------------------------------------------


def _upgrade_v0_net(v0_net: caffe_pb2.NetParameter, source: str) -> caffe_pb2.NetParameter:
    """UpgradeV0Net: only name, layers, input, input_dim and force_backward survive, as in Caffe."""
    unpadded = _fold_padding_layers(v0_net, source)
    net = caffe_pb2.NetParameter()
    if unpadded.HasField("name"):
        net.name = unpadded.name
    for index, connection in enumerate(unpadded.layers):
        _upgrade_v0_layer(index, connection, net.layers.add(), source)
    net.input.extend(unpadded.input)
    net.input_dim.extend(unpadded.input_dim)
    if unpadded.HasField("force_backward"):
        net.force_backward = unpadded.force_backward
    return net


def _fold_padding_layers(net: caffe_pb2.NetParameter, source: str) -> caffe_pb2.NetParameter:
    """UpgradeV0PaddingLayers: drop V0 "padding" layers, moving their pad into the reader."""
    result = caffe_pb2.NetParameter()
    result.CopyFrom(net)
    del result.layers[:]
    last_producer: dict[str, int] = {blob: -1 for blob in net.input}
    for index, connection in enumerate(net.layers):
        v0_layer = connection.layer
        if v0_layer.type != "padding":
            result.layers.add().CopyFrom(connection)
        for bottom_index, blob in enumerate(connection.bottom):
            if blob not in last_producer:
                raise CaffeFormatError(
                    f"{source}: {_layer_label(index, v0_layer.name)} reads blob \"{blob}\", "
                    "which no earlier layer or net input produces"
                )
            producer_index = last_producer[blob]
            if producer_index == -1:
                continue
            producer = net.layers[producer_index]
            if producer.layer.type != "padding":
                continue
            if v0_layer.type not in ("conv", "pool"):
                raise CaffeFormatError(
                    f"{source}: padding layer \"{producer.layer.name}\" feeds "
                    f"{_layer_label(index, v0_layer.name)} of type \"{v0_layer.type}\"; "
                    "only conv and pool layers can take a padding layer's output"
                )
            if len(connection.bottom) != 1:
                raise CaffeFormatError(
                    f"{source}: {_layer_label(index, v0_layer.name)} reads a padding layer "
                    "and must have exactly one bottom"
                )
            if len(producer.bottom) != 1 or len(producer.top) != 1:
                raise CaffeFormatError(
                    f"{source}: padding layer \"{producer.layer.name}\" must have exactly one "
                    "bottom and one top"
                )
            folded = result.layers[-1]
            folded.layer.pad = producer.layer.pad
            folded.bottom[bottom_index] = producer.bottom[0]
        for blob in connection.top:
            last_producer[blob] = index
    return result


def _upgrade_v0_layer(
    index: int,
    connection: caffe_pb2.V1LayerParameter,
    layer: caffe_pb2.V1LayerParameter,
    source: str,
) -> None:
    """UpgradeV0LayerParameter: spread the flat V0 fields over the V1 parameter messages."""
    layer.bottom.extend(connection.bottom)
    layer.top.extend(connection.top)
    if not connection.HasField("layer"):
        return
    v0 = connection.layer
    kind = v0.type
    label = _layer_label(index, v0.name)
    if v0.HasField("name"):
        layer.name = v0.name
    if v0.HasField("type"):
        if kind not in _V0_TYPES:
            raise CaffeFormatError(f'{source}: {label} has unknown V0 layer type "{kind}"')
        layer.type = _V0_TYPES[kind]
    layer.blobs.extend(v0.blobs)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)

    def move(v0_field: str, targets: dict[str, tuple[str, str]]) -> None:
        """Copy a set V0 field into the parameter message its layer type uses; warn otherwise."""
        if not v0.HasField(v0_field):
            return
        if kind not in targets:
            _warn(source, f'{label}: V0 field "{v0_field}" does not apply to type "{kind}"; dropped')
            return
        message_name, field_name = targets[kind]
        target = getattr(layer, message_name)
        value = getattr(v0, v0_field)
        descriptor = target.DESCRIPTOR.fields_by_name[field_name]
        if descriptor.message_type is not None:
            getattr(target, field_name).CopyFrom(value)
        elif descriptor.is_repeated:
            getattr(target, field_name).append(value)
        else:
            setattr(target, field_name, value)

    def conv_ip(field: str) -> dict[str, tuple[str, str]]:
        return {"conv": ("convolution_param", field), "innerproduct": ("inner_product_param", field)}

    def conv_pool(field: str) -> dict[str, tuple[str, str]]:
        return {"conv": ("convolution_param", field), "pool": ("pooling_param", field)}

    move("num_output", conv_ip("num_output"))
    move("biasterm", conv_ip("bias_term"))
    move("weight_filler", conv_ip("weight_filler"))
    move("bias_filler", conv_ip("bias_filler"))
    move("pad", conv_pool("pad"))
    move("kernelsize", conv_pool("kernel_size"))
    move("group", {"conv": ("convolution_param", "group")})
    move("stride", conv_pool("stride"))
    # V0 and current PoolMethod enums have the same values (MAX 0, AVE 1, STOCHASTIC 2).
    move("pool", {"pool": ("pooling_param", "pool")})
    move("dropout_ratio", {"dropout": ("dropout_param", "dropout_ratio")})
    move("local_size", {"lrn": ("lrn_param", "local_size")})
    move("alpha", {"lrn": ("lrn_param", "alpha")})
    move("beta", {"lrn": ("lrn_param", "beta")})
    move("k", {"lrn": ("lrn_param", "k")})
    move("source", {
        "data": ("data_param", "source"),
        "hdf5_data": ("hdf5_data_param", "source"),
        "images": ("image_data_param", "source"),
        "window_data": ("window_data_param", "source"),
        "infogain_loss": ("infogain_loss_param", "source"),
    })
    # Preprocessing goes to transform_param whatever the layer type.
    if v0.HasField("scale"):
        layer.transform_param.scale = v0.scale
    if v0.HasField("meanfile"):
        layer.transform_param.mean_file = v0.meanfile
    move("batchsize", {
        "data": ("data_param", "batch_size"),
        "hdf5_data": ("hdf5_data_param", "batch_size"),
        "images": ("image_data_param", "batch_size"),
        "window_data": ("window_data_param", "batch_size"),
    })
    if v0.HasField("cropsize"):
        layer.transform_param.crop_size = v0.cropsize
    if v0.HasField("mirror"):
        layer.transform_param.mirror = v0.mirror
    move("rand_skip", {
        "data": ("data_param", "rand_skip"),
        "images": ("image_data_param", "rand_skip"),
    })
    move("shuffle_images", {"images": ("image_data_param", "shuffle")})
    move("new_height", {"images": ("image_data_param", "new_height")})
    move("new_width", {"images": ("image_data_param", "new_width")})
    move("concat_dim", {"concat": ("concat_param", "concat_dim")})
    move("det_fg_threshold", {"window_data": ("window_data_param", "fg_threshold")})
    move("det_bg_threshold", {"window_data": ("window_data_param", "bg_threshold")})
    move("det_fg_fraction", {"window_data": ("window_data_param", "fg_fraction")})
    move("det_context_pad", {"window_data": ("window_data_param", "context_pad")})
    move("det_crop_mode", {"window_data": ("window_data_param", "crop_mode")})
    if v0.HasField("hdf5_output_param"):
        if kind == "hdf5_output":
            layer.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
        else:
            _warn(source, f'{label}: V0 field "hdf5_output_param" does not apply to type "{kind}"; '
                          "dropped")


# --- data transformation ----------------------------------------------------------------------


def _needs_data_upgrade(net: caffe_pb2.NetParameter) -> bool:
    for layer in net.layers:
        param_name = _DATA_LAYER_PARAMS.get(layer.type)
        if param_name is not None:
            params = getattr(layer, param_name)
            if any(params.HasField(field) for field in _TRANSFORM_FIELDS):
                return True
    return False


def _upgrade_data_transformation(net: caffe_pb2.NetParameter) -> None:
    """UpgradeNetDataTransformation (touches, and so creates, both messages of every data layer)."""
    for layer in net.layers:
        param_name = _DATA_LAYER_PARAMS.get(layer.type)
        if param_name is None:
            continue
        params = getattr(layer, param_name)
        params.SetInParent()
        layer.transform_param.SetInParent()
        for field in _TRANSFORM_FIELDS:
            if params.HasField(field):
                setattr(layer.transform_param, field, getattr(params, field))
                params.ClearField(field)


# --- V1 -> current ----------------------------------------------------------------------------


def _upgrade_v1_net(v1_net: caffe_pb2.NetParameter, source: str) -> caffe_pb2.NetParameter:
    """UpgradeV1Net. A net mixing `layers` and `layer` keeps only the upgraded `layers`, as in Caffe."""
    if len(v1_net.layer) > 0:
        _warn(source, "the net has both V1 `layers` and current `layer` entries; "
                      f"the {len(v1_net.layer)} `layer` entries are ignored, as Caffe does")
    net = caffe_pb2.NetParameter()
    net.CopyFrom(v1_net)
    net.ClearField("layers")
    net.ClearField("layer")
    for index, v1_layer in enumerate(v1_net.layers):
        _upgrade_v1_layer(index, v1_layer, net.layer.add(), source)
    return net


def _upgrade_v1_layer(
    index: int,
    v1_layer: caffe_pb2.V1LayerParameter,
    layer: caffe_pb2.LayerParameter,
    source: str,
) -> None:
    """UpgradeV1LayerParameter."""
    layer.bottom.extend(v1_layer.bottom)
    layer.top.extend(v1_layer.top)
    if v1_layer.HasField("name"):
        layer.name = v1_layer.name
    layer.include.extend(v1_layer.include)
    layer.exclude.extend(v1_layer.exclude)
    if v1_layer.HasField("type"):
        layer.type = _V1_TYPES[v1_layer.type]
    layer.blobs.extend(v1_layer.blobs)

    def param_spec(position: int) -> caffe_pb2.ParamSpec:
        while len(layer.param) <= position:
            layer.param.add()
        return layer.param[position]

    for position, name in enumerate(v1_layer.param):
        param_spec(position).name = name
    for position, mode in enumerate(v1_layer.blob_share_mode):
        # V1 and ParamSpec DimCheckMode enums have the same values (STRICT 0, PERMISSIVE 1).
        param_spec(position).share_mode = mode
    for position, lr in enumerate(v1_layer.blobs_lr):
        param_spec(position).lr_mult = lr
    for position, decay in enumerate(v1_layer.weight_decay):
        param_spec(position).decay_mult = decay
    layer.loss_weight.extend(v1_layer.loss_weight)
    for message_name in _V1_PARAMETER_MESSAGES:
        if v1_layer.HasField(message_name):
            getattr(layer, message_name).CopyFrom(getattr(v1_layer, message_name))
    if v1_layer.HasField("layer"):
        _warn(source, f"{_layer_label(index, v1_layer.name)} also holds a V0 `layer`; it is ignored")


# --- legacy net inputs and BatchNorm ----------------------------------------------------------


def _upgrade_net_input(net: caffe_pb2.NetParameter, source: str) -> None:
    """UpgradeNetInput: `input` + `input_shape`/`input_dim` -> an Input layer at the front.

    Inputs given without any shape (as in old caffemodels) are just removed.
    """
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if has_shape or has_dim:
        inputs = list(net.input)
        if has_shape and len(net.input_shape) < len(inputs):
            raise CaffeFormatError(
                f"{source}: {len(inputs)} net inputs but only {len(net.input_shape)} input_shape"
            )
        if not has_shape and len(net.input_dim) < 4 * len(inputs):
            raise CaffeFormatError(
                f"{source}: {len(inputs)} net inputs need {4 * len(inputs)} input_dim values "
                f"(four each), found {len(net.input_dim)}"
            )
        input_layer = caffe_pb2.LayerParameter(name="input", type="Input", top=inputs)
        for position in range(len(inputs)):
            shape = input_layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[position])
            else:
                shape.dim.extend(net.input_dim[4 * position: 4 * position + 4])
        layers = [input_layer, *net.layer]
        del net.layer[:]
        net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def _upgrade_batch_norm(net: caffe_pb2.NetParameter) -> None:
    """UpgradeNetBatchNorm: BatchNorm statistics must not be trained."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0
