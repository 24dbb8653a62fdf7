"""Reading text prototxt: real nets, the V0/V1/input upgrades, and bad input."""

from __future__ import annotations

import functools
import warnings
from collections import Counter
from pathlib import Path

import pytest

from caffe2torch.caffe_proto import (
    CaffeFormatWarning,
    caffe_pb2,
    parse_prototxt,
    read_prototxt,
    upgrade_net,
)
from caffe2torch.errors import CaffeFormatError

Pool = caffe_pb2.PoolingParameter

# Layer and per-type counts taken with grep from the files themselves (`layer {` and `type: "..."`
# occurrences), independently of our reader.
SENET_LAYER_TYPES = {
    "SE-BN-Inception.prototxt": {
        "BatchNorm": 69, "Concat": 10, "Convolution": 89, "InnerProduct": 1, "Input": 1,
        "Pooling": 23, "ReLU": 79, "Reshape": 10, "Scale": 79, "Sigmoid": 10, "Softmax": 1,
    },
    "SE-ResNeXt-50.prototxt": {
        "Axpy": 16, "BatchNorm": 53, "Convolution": 85, "InnerProduct": 1, "Input": 1,
        "Pooling": 18, "ReLU": 65, "Scale": 53, "Sigmoid": 16, "Softmax": 1,
    },
    "SE-ResNeXt-101.prototxt": {
        "Axpy": 33, "BatchNorm": 104, "Convolution": 170, "InnerProduct": 1, "Input": 1,
        "Pooling": 35, "ReLU": 133, "Scale": 104, "Sigmoid": 33, "Softmax": 1,
    },
    "SE-ResNet-50.prototxt": {
        "Axpy": 16, "BatchNorm": 53, "Convolution": 85, "InnerProduct": 1, "Input": 1,
        "Pooling": 18, "ReLU": 65, "Scale": 53, "Sigmoid": 16, "Softmax": 1,
    },
    "SE-ResNet-101.prototxt": {
        "Axpy": 33, "BatchNorm": 104, "Convolution": 170, "InnerProduct": 1, "Input": 1,
        "Pooling": 35, "ReLU": 133, "Scale": 104, "Sigmoid": 33, "Softmax": 1,
    },
    "SE-ResNet-152.prototxt": {
        "Axpy": 50, "BatchNorm": 155, "Convolution": 255, "InnerProduct": 1, "Input": 1,
        "Pooling": 52, "ReLU": 201, "Scale": 155, "Sigmoid": 50, "Softmax": 1,
    },
    "SENet-154.prototxt": {
        "Axpy": 50, "BatchNorm": 157, "Convolution": 257, "Dropout": 1, "InnerProduct": 1,
        "Input": 1, "Pooling": 52, "ReLU": 203, "Scale": 157, "Sigmoid": 50, "Softmax": 1,
    },
}
SENET_LAYER_COUNTS = {
    "SE-BN-Inception.prototxt": 372,
    "SE-ResNeXt-50.prototxt": 309,
    "SE-ResNeXt-101.prototxt": 615,
    "SE-ResNet-50.prototxt": 309,
    "SE-ResNet-101.prototxt": 615,
    "SE-ResNet-152.prototxt": 921,
    "SENet-154.prototxt": 930,
}

# (file, layer, type, parameter message, expected fields) read off the files by eye.
SENET_LAYER_PARAMS = [
    ("SE-ResNeXt-50.prototxt", "conv2_1_3x3", "Convolution", "convolution_param",
     {"num_output": 128, "group": 32, "kernel_size": [3], "pad": [1], "stride": [1], "bias_term": False}),
    ("SE-ResNeXt-101.prototxt", "conv3_1_3x3", "Convolution", "convolution_param",
     {"num_output": 256, "group": 32, "kernel_size": [3], "stride": [2]}),
    ("SENet-154.prototxt", "conv3_1_3x3", "Convolution", "convolution_param",
     {"num_output": 512, "group": 64, "kernel_size": [3], "stride": [2]}),
    ("SENet-154.prototxt", "pool5/dropout_7x7_s1", "Dropout", "dropout_param",
     {"dropout_ratio": pytest.approx(0.2)}),
    ("SE-ResNet-152.prototxt", "conv3_1_3x3", "Convolution", "convolution_param",
     {"num_output": 128, "group": 1, "kernel_size": [3], "stride": [1]}),
    ("SE-ResNet-101.prototxt", "conv5_3_1x1_down", "Convolution", "convolution_param",
     {"num_output": 128, "kernel_size": [1], "bias_term": True}),
    ("SE-ResNet-50.prototxt", "conv5_3_global_pool", "Pooling", "pooling_param",
     {"pool": Pool.AVE, "global_pooling": True, "engine": Pool.CAFFE}),
    ("SE-ResNet-50.prototxt", "pool5/7x7_s1", "Pooling", "pooling_param",
     {"pool": Pool.AVE, "kernel_size": 7, "stride": 1, "global_pooling": False}),
    ("SE-BN-Inception.prototxt", "conv1/7x7_s2", "Convolution", "convolution_param",
     {"num_output": 64, "pad": [3], "kernel_size": [7], "stride": [2], "bias_term": False}),
    ("SE-BN-Inception.prototxt", "inception_3a_prob_reshape", "Reshape", "reshape_param",
     {"axis": 0, "num_axes": -1}),
    ("SE-BN-Inception.prototxt", "inception_3a_scale", "Scale", "scale_param",
     {"axis": 0, "bias_term": False}),
]


@functools.cache
def _read_cached(path: Path) -> caffe_pb2.NetParameter:
    """Each SENet net is read once for all the tests that only look at it."""
    return read_prototxt(path)


def _layer(net: caffe_pb2.NetParameter, name: str) -> caffe_pb2.LayerParameter:
    matches = [layer for layer in net.layer if layer.name == name]
    assert len(matches) == 1, f"expected one layer named {name}, found {len(matches)}"
    return matches[0]


def _field_values(message, fields: dict) -> dict:
    return {
        name: list(getattr(message, name))
        if message.DESCRIPTOR.fields_by_name[name].is_repeated
        else getattr(message, name)
        for name in fields
    }


# --- the seven SENet release nets ---------------------------------------------------------------


@pytest.mark.parametrize("filename", sorted(SENET_LAYER_COUNTS))
def test_senet_release_net_reads(senet_models: Path, filename: str) -> None:
    net = _read_cached(senet_models / filename)
    assert len(net.layer) == SENET_LAYER_COUNTS[filename]
    assert Counter(layer.type for layer in net.layer) == SENET_LAYER_TYPES[filename]
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("data", "Input", ["data"])
    assert [list(shape.dim) for shape in first.input_param.shape] == [[1, 3, 224, 224]]
    classifier = _layer(net, "classifier")
    assert classifier.type == "InnerProduct"
    assert classifier.inner_product_param.num_output == 1000
    assert net.layer[-1].type == "Softmax"


@pytest.mark.parametrize(("filename", "layer_name", "layer_type", "param_name", "expected"),
                         SENET_LAYER_PARAMS)
def test_senet_layer_parameters(senet_models: Path, filename: str, layer_name: str,
                                layer_type: str, param_name: str, expected: dict) -> None:
    layer = _layer(_read_cached(senet_models / filename), layer_name)
    assert layer.type == layer_type
    assert layer.HasField(param_name)
    assert _field_values(getattr(layer, param_name), expected) == expected


def test_senet_two_bottom_layers(senet_models: Path) -> None:
    """Axpy (a * x + y) has three bottoms; the SE Scale of BN-Inception multiplies by a 2nd bottom."""
    axpy = _layer(_read_cached(senet_models / "SE-ResNet-50.prototxt"), "conv2_1")
    assert axpy.type == "Axpy"
    assert list(axpy.bottom) == ["conv2_1_1x1_up", "conv2_1_1x1_increase", "conv2_1_1x1_proj"]
    inception = _read_cached(senet_models / "SE-BN-Inception.prototxt")
    assert list(_layer(inception, "inception_3a_prob_reshape").reshape_param.shape.dim) == [0, 0]
    assert list(_layer(inception, "inception_3a_scale").bottom) == [
        "inception_3a/concat", "inception_3a_prob_reshape"]


# --- real models ------------------------------------------------------------------------------

REALMODEL_PROTOTXTS = {
    # path: (layer count by `layer {`/`layers {` occurrences, per-type counts by grep)
    "cifar10_quick/cifar10_quick.prototxt": (13, {
        "Input": 1, "Convolution": 3, "Pooling": 3, "ReLU": 3, "InnerProduct": 2, "Softmax": 1}),
    "cifar10_quick/prediction_example.prototxt": (16, {
        "ImageData": 1, "Convolution": 3, "Pooling": 3, "ReLU": 3, "InnerProduct": 2,
        "Accuracy": 1, "SoftmaxWithLoss": 1, "Softmax": 1, "ArgMax": 1}),
    "lenet/lenet.prototxt": (9, {
        "Input": 1, "Convolution": 2, "Pooling": 2, "InnerProduct": 2, "ReLU": 1, "Softmax": 1}),
    "open_nsfw/deploy.prototxt": (229, {
        "Input": 1, "Convolution": 53, "BatchNorm": 53, "Scale": 53, "ReLU": 49, "Eltwise": 16,
        "Pooling": 2, "InnerProduct": 1, "Softmax": 1}),
}


def test_every_realmodel_prototxt_is_covered(realmodels: Path) -> None:
    found = {path.relative_to(realmodels).as_posix() for path in realmodels.glob("*/*.prototxt")}
    assert found == set(REALMODEL_PROTOTXTS)


@pytest.mark.parametrize("relative_path", sorted(REALMODEL_PROTOTXTS))
def test_realmodel_prototxt_reads(realmodels: Path, relative_path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaffeFormatWarning)
        net = read_prototxt(realmodels / relative_path)
    layer_count, type_counts = REALMODEL_PROTOTXTS[relative_path]
    assert len(net.layer) == layer_count
    assert Counter(layer.type for layer in net.layer) == type_counts
    assert len(net.layers) == 0 and len(net.input) == 0


def test_lenet_input_shape(realmodels: Path) -> None:
    net = read_prototxt(realmodels / "lenet" / "lenet.prototxt")
    assert [list(shape.dim) for shape in net.layer[0].input_param.shape] == [[64, 1, 28, 28]]


def test_open_nsfw_batch_norm_params_stay_frozen(realmodels: Path) -> None:
    bn = _layer(read_prototxt(realmodels / "open_nsfw" / "deploy.prototxt"), "bn_1")
    assert bn.batch_norm_param.use_global_stats is True
    assert [(spec.lr_mult, spec.decay_mult) for spec in bn.param] == [(0.0, 0.0)] * 3


def test_v1_prediction_example_upgrades_to_cifar10_quick(realmodels: Path) -> None:
    """The V1 training/prediction net and the current deploy net share every compute layer.

    What legitimately differs: the V1 file reads images (ImageData, tops data+label, mean_file in
    transform_param) where the deploy net has an Input layer; it adds Accuracy, SoftmaxWithLoss
    and ArgMax layers and restricts prob to the TEST phase; its conv/ip layers carry training
    fillers. Everything else must be identical after the upgrade.
    """
    v1 = read_prototxt(realmodels / "cifar10_quick" / "prediction_example.prototxt")
    current = read_prototxt(realmodels / "cifar10_quick" / "cifar10_quick.prototxt")

    compute_names = [layer.name for layer in current.layer[1:]]
    assert compute_names == ["conv1", "pool1", "relu1", "conv2", "relu2", "pool2", "conv3",
                             "relu3", "pool3", "ip1", "ip2", "prob"]
    assert [layer.name for layer in v1.layer if layer.name in compute_names] == compute_names
    for name in compute_names:
        old, new = caffe_pb2.LayerParameter(), caffe_pb2.LayerParameter()
        old.CopyFrom(_layer(v1, name))
        new.CopyFrom(_layer(current, name))
        for param_name in ("convolution_param", "inner_product_param"):
            if old.HasField(param_name):
                getattr(old, param_name).ClearField("weight_filler")
                getattr(old, param_name).ClearField("bias_filler")
        if name == "prob":
            assert [rule.phase for rule in old.include] == [caffe_pb2.TEST]
            old.ClearField("include")
        assert old == new, f"layer {name} differs after the V1 upgrade"

    # blobs_lr 1, 2 became param { lr_mult } and the filler moved with convolution_param.
    conv1 = _layer(v1, "conv1")
    assert [spec.lr_mult for spec in conv1.param] == [1.0, 2.0]
    assert conv1.convolution_param.weight_filler.std == pytest.approx(0.0001)

    data = v1.layer[0]
    assert (data.type, list(data.top)) == ("ImageData", ["data", "label"])
    assert data.image_data_param.new_height == 32 and data.image_data_param.batch_size == 3
    assert data.transform_param.mean_file == "./examples/cifar10/mean.binaryproto"
    assert [list(shape.dim) for shape in current.layer[0].input_param.shape] == [[1, 3, 32, 32]]
    extra = {layer.name: layer.type for layer in v1.layer if layer.name not in compute_names}
    assert extra == {"data": "ImageData", "accuracy": "Accuracy", "loss": "SoftmaxWithLoss",
                     "argmax": "ArgMax"}
    assert _layer(v1, "argmax").argmax_param.top_k == 5


# --- upgrades ---------------------------------------------------------------------------------

V0_NET = """
name: "v0net"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer {
    name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 1 biasterm: false
    weight_filler { type: "gaussian" std: 0.01 }
    blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.0001 beta: 0.75 } bottom: "pool1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 10 } bottom: "norm1" top: "fc" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "fc" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""

V0_NET_UPGRADED = """
name: "v0net"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 4 bias_term: false pad: 2 kernel_size: 3 stride: 1
    weight_filler { type: "gaussian" std: 0.01 }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_v0_net_upgrades_with_padding_folded_into_the_convolution() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaffeFormatWarning)
        upgraded = parse_prototxt(V0_NET)
    assert upgraded == parse_prototxt(V0_NET_UPGRADED)


def test_v0_data_layer_preprocessing_moves_to_transform_param() -> None:
    net = parse_prototxt("""
      layers {
        layer { name: "data" type: "data" source: "train_db" batchsize: 64 rand_skip: 5
                scale: 0.00390625 meanfile: "mean.binaryproto" cropsize: 227 mirror: true }
        top: "data" top: "label"
      }""")
    expected = parse_prototxt("""
      layer {
        name: "data" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.00390625 mirror: true crop_size: 227 mean_file: "mean.binaryproto" }
        data_param { source: "train_db" batch_size: 64 rand_skip: 5 }
      }""")
    assert net == expected


def test_v0_field_for_another_layer_type_is_dropped_with_a_warning() -> None:
    with pytest.warns(CaffeFormatWarning, match=r'layer "relu1": V0 field "num_output"'):
        net = parse_prototxt(
            'input: "x" layers { layer { name: "relu1" type: "relu" num_output: 3 } bottom: "x" top: "x" }')
    assert not net.layer[0].HasField("inner_product_param")


@pytest.mark.parametrize(("text", "message"), [
    ('input: "x" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }'
     'layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }',
     'padding layer "p" feeds layer "r" of type "relu"'),
    ('layers { layer { name: "c" type: "conv" } bottom: "nowhere" top: "c" }',
     'layer "c" reads blob "nowhere", which no earlier layer or net input produces'),
    ('layers { layer { name: "c" type: "convolution" } }', 'unknown V0 layer type "convolution"'),
])
def test_v0_errors_where_caffe_aborts(text: str, message: str) -> None:
    with pytest.raises(CaffeFormatError, match=f"^<string>: .*{message}"):
        parse_prototxt(text)


def test_v1_layer_upgrade_moves_every_training_field() -> None:
    net = parse_prototxt("""
      layers {
        name: "data" type: DATA top: "data" top: "label"
        data_param { source: "db" batch_size: 10 scale: 0.5 mean_file: "m.binaryproto" crop_size: 28 mirror: true }
        include { phase: TRAIN }
      }
      layers {
        name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip"
        blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
        param: "shared_w" blob_share_mode: PERMISSIVE
        inner_product_param { num_output: 10 }
        exclude { phase: TEST }
      }
      layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "label" top: "loss" loss_weight: 2 }
    """)
    expected = parse_prototxt("""
      layer {
        name: "data" type: "Data" top: "data" top: "label"
        include { phase: TRAIN }
        transform_param { scale: 0.5 mirror: true crop_size: 28 mean_file: "m.binaryproto" }
        data_param { source: "db" batch_size: 10 }
      }
      layer {
        name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        param { name: "shared_w" share_mode: PERMISSIVE lr_mult: 1 decay_mult: 1 }
        param { lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 10 }
        exclude { phase: TEST }
      }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" loss_weight: 2 }
    """)
    assert net == expected


def test_every_v1_parameter_message_is_carried_over() -> None:
    v1_layer = caffe_pb2.V1LayerParameter(name="all")
    names = [field.name for field in v1_layer.DESCRIPTOR.fields
             if field.name.endswith("_param") and field.message_type is not None]
    assert len(names) == 30
    for name in names:
        getattr(v1_layer, name).SetInParent()
    v1_layer.convolution_param.num_output = 7
    v1_layer.transform_param.mean_value.append(104.0)
    layer = upgrade_net(caffe_pb2.NetParameter(layers=[v1_layer])).layer[0]
    assert all(layer.HasField(name) for name in names)
    assert layer.convolution_param.num_output == 7
    assert list(layer.transform_param.mean_value) == [104.0]


def test_every_v1_layer_type_has_a_current_name() -> None:
    layer_types = caffe_pb2.V1LayerParameter.LayerType
    net = caffe_pb2.NetParameter()
    for value in layer_types.values():
        net.layers.add(name=layer_types.Name(value), type=value)
    upgraded = upgrade_net(net)
    names = {layer.name: layer.type for layer in upgraded.layer}
    assert names["CONVOLUTION"] == "Convolution" and names["SOFTMAX_LOSS"] == "SoftmaxWithLoss"
    assert names["NONE"] == "" and all(names[name] for name in names if name != "NONE")


def test_v1_net_with_current_layers_keeps_only_the_v1_layers() -> None:
    with pytest.warns(CaffeFormatWarning, match="the 1 `layer` entries are ignored"):
        net = parse_prototxt('layer { name: "new" type: "ReLU" } layers { name: "old" type: RELU }')
    assert [layer.name for layer in net.layer] == ["old"]


def test_legacy_input_shape_becomes_input_layer_first() -> None:
    net = parse_prototxt("""
      input: "image" input_shape { dim: 2 dim: 3 dim: 16 dim: 16 }
      input: "scale" input_shape { dim: 2 dim: 1 }
      layer { name: "s" type: "Scale" bottom: "image" bottom: "scale" top: "out" }
    """)
    assert [layer.type for layer in net.layer] == ["Input", "Scale"]
    input_layer = net.layer[0]
    assert (input_layer.name, list(input_layer.top)) == ("input", ["image", "scale"])
    assert [list(shape.dim) for shape in input_layer.input_param.shape] == [[2, 3, 16, 16], [2, 1]]
    assert not net.input and not net.input_shape and not net.input_dim


def test_input_without_shape_is_dropped_as_caffe_does() -> None:
    net = parse_prototxt('input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert [layer.type for layer in net.layer] == ["ReLU"] and not net.input


def test_too_few_input_dims_is_an_error() -> None:
    with pytest.raises(CaffeFormatError, match="2 net inputs need 8 input_dim values"):
        parse_prototxt('input: "a" input: "b" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4 '
                       'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }')


def test_batch_norm_with_three_params_gets_frozen() -> None:
    net = parse_prototxt('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } '
                         'param { lr_mult: 1 decay_mult: 2 } param { name: "keep" lr_mult: 1 } }')
    assert [(spec.name, spec.lr_mult, spec.decay_mult) for spec in net.layer[0].param] == [
        ("", 0.0, 0.0), ("", 0.0, 0.0), ("keep", 0.0, 0.0)]


def test_upgrade_leaves_its_argument_alone() -> None:
    net = caffe_pb2.NetParameter(input=["data"], input_dim=[1, 3, 4, 4])
    upgrade_net(net)
    assert list(net.input) == ["data"] and len(net.layer) == 0


# --- bad input ------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "net.prototxt"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name: "n"\nlayer {\n  name: "a"\n  type "ReLU"\n}\n')
    with pytest.raises(CaffeFormatError) as raised:
        read_prototxt(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:4:8: ")
    assert "\n" not in message and "caffe." not in message and "'" not in message


def test_unclosed_block_reports_where_the_text_ends(tmp_path: Path) -> None:
    with pytest.raises(CaffeFormatError, match=r':3:\d+: Expected "}"'):
        read_prototxt(_write(tmp_path, 'layer {\n  name: "a"\n  type: "ReLU"'))


def test_unknown_fields_are_kept_or_dropped_with_a_warning_naming_layer_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, """name: "fork"
layer {
  name: "conv"
  type: "Convolution"
  convolution_param { num_output: 8 kernel_size: 3 fork_option: 2 }
  fork_block { a: 1 b: [1, 2] }
}
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
""")
    with pytest.warns(CaffeFormatWarning) as caught:
        net = read_prototxt(path)
    messages = [str(warning.message) for warning in caught]
    assert messages == [
        f'{path}:5:52: unknown field "fork_option" in ConvolutionParameter of Convolution layer \'conv\' '
        "ignored (not in caffe2torch's schema: a Caffe fork's?)",
        f'{path}:6:3: unknown field "fork_block" in LayerParameter of Convolution layer \'conv\' '
        "kept for its converter (not in caffe2torch's schema: read with ctx.param, typed with the fork's "
        "--caffe-proto)",
    ]
    assert [layer.name for layer in net.layer] == ["conv", "relu"]
    assert net.layer[0].convolution_param.num_output == 8


def test_unknown_field_in_unnamed_v1_layer_and_at_net_level(tmp_path: Path) -> None:
    path = _write(tmp_path, 'fork_version: 3\nlayers { type: RELU extra: "x" }\n')
    with pytest.warns(CaffeFormatWarning) as caught:
        read_prototxt(path)
    messages = [str(warning.message) for warning in caught]
    assert messages[0].startswith(f'{path}:1:1: unknown net field "fork_version"')
    assert messages[1].startswith(f'{path}:2:21: unknown field "extra" in V1LayerParameter of ReLU layer (unnamed) ')


def test_unknown_field_inside_a_list_of_layers_names_its_own_layer() -> None:
    with pytest.warns(CaffeFormatWarning, match=r'unknown field "fork" in LayerParameter of ReLU layer \'second\' '):
        parse_prototxt('layer: [{ name: "first" type: "ReLU" }, { name: "second" type: "ReLU" fork: 1 }]')


def test_unknown_field_does_not_hide_a_real_error(tmp_path: Path) -> None:
    path = _write(tmp_path, 'layer { name: "a" fork: 1 }\nlayer { name: "b" type: 3 }\n')
    with pytest.raises(CaffeFormatError, match=rf"^{path}:2:25: "):
        read_prototxt(path)


def test_unknown_enum_value_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'layer {\n  name: "p"\n  type: "Pooling"\n  pooling_param { pool: MEDIAN }\n}\n')
    with pytest.raises(CaffeFormatError, match=rf'^{path}:4:25: .*"PoolingParameter.PoolMethod" has no value named MEDIAN'):
        read_prototxt(path)


def test_missing_required_field_is_an_error() -> None:
    with pytest.raises(CaffeFormatError, match=r"required fields are missing: layer\[0\]\.clip_param\.max"):
        parse_prototxt('layer { name: "c" type: "Clip" clip_param { min: 0 } }')


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.prototxt"
    with pytest.raises(CaffeFormatError, match=rf"^{path}: no such file$"):
        read_prototxt(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CaffeFormatError, match="is a directory"):
        read_prototxt(tmp_path)


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n", 'name: "empty"\n'])
def test_net_without_layers_is_an_error(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CaffeFormatError, match=rf"^{path}: defines no layers$"):
        read_prototxt(path)


def test_solver_file_is_recognised(tmp_path: Path) -> None:
    path = _write(tmp_path, 'net: "train_val.prototxt"\nbase_lr: 0.01\n')
    with pytest.raises(CaffeFormatError, match=r"fields base_lr, net: is it a solver\?"):
        read_prototxt(path)


def test_binary_file_is_not_taken_for_text(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\x0a\x05LeNet\xa2\x06\xff\xfe")
    with pytest.raises(CaffeFormatError, match="not a text prototxt"):
        read_prototxt(path)
