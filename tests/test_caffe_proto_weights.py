"""Caffe weights I/O: binary caffemodel (current, V1, V0), HDF5, binaryproto; round trips and real files.

Independent checks: OpenCV's Caffe importer reads what we write and agrees with what we read from
real files, and rewriting a real Caffe-written caffemodel reproduces it byte for byte.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from google.protobuf import text_format

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.caffe_proto import weights as weights_module
from caffe2torch.caffe_proto.weights import is_hdf5, read_blob, read_weights, write_caffemodel, write_hdf5
from caffe2torch.caffe_proto.wire import encode_len_prefix, encode_varint
from caffe2torch.errors import CaffeFormatError, InputError
from tests.conftest import shared_path

V1 = caffe_pb2.V1LayerParameter


# --- helpers -----------------------------------------------------------------------------------------


def small_net() -> tuple[caffe_pb2.NetParameter, dict[str, list[tuple[int, ...]]]]:
    """A deploy net OpenCV runs (conv, BatchNorm, Scale, ReLU, pooling, InnerProduct) and its blob shapes."""
    net = text_format.Parse(
        """
        name: "small"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
                batch_norm_param { use_global_stats: true } }
        layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
        layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
        layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
                pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
        layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
        """,
        caffe_pb2.NetParameter(),
    )
    shapes = {
        "conv1": [(4, 3, 3, 3), (4,)],
        "bn1": [(4,), (4,), (1,)],
        "scale1": [(4,), (4,)],
        "fc": [(5, 64), (5,)],
    }
    return net, shapes


def many_layer_net(count: int = 300) -> tuple[caffe_pb2.NetParameter, dict[str, list[tuple[int, ...]]]]:
    """Hundreds of layers, with edge-case blob shapes: scalar, empty, zero-sized dims, 5-D."""
    net = caffe_pb2.NetParameter(name="many")
    shapes: dict[str, list[tuple[int, ...]]] = {}
    rng = np.random.default_rng(7)
    edge_shapes = [(), (0,), (1,), (3, 0, 2), (2, 1, 1, 1, 3)]
    for index in range(count):
        name = f"layer{index}"
        if index % 3 == 0:
            net.layer.add(name=name, type="ReLU")
        elif index % 3 == 1:
            out, inp, k = (int(v) for v in rng.integers(1, 9, size=3))
            net.layer.add(name=name, type="Convolution")
            shapes[name] = [(out, inp, k, k), (out,)]
        else:
            net.layer.add(name=name, type="Parameter")
            shapes[name] = [edge_shapes[index % len(edge_shapes)]]
    return net, shapes


def seeded_weights(shapes: dict[str, list[tuple[int, ...]]], seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {name: [rng.standard_normal(shape).astype(np.float32) for shape in blob_shapes]
            for name, blob_shapes in shapes.items()}


def special_values() -> np.ndarray:
    """Floats that a lossy path would change: NaN with a payload, -0.0, infinities, denormals."""
    bits = np.array([0x7FC00001, 0xFFC12345, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x3F800001],
                    dtype=np.uint32)
    return bits.view(np.float32)


def assert_same_weights(read, expected: dict[str, list[np.ndarray]]) -> None:
    assert list(read) == list(expected)
    for name, arrays in expected.items():
        assert len(read[name]) == len(arrays), name
        for got, want in zip(read[name], arrays):
            assert got.dtype == np.float32
            assert got.shape == want.shape, name
            # Bit-identical, NaN payloads and signed zeros included.
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), name


def net_bytes(*layers: bytes, v1: bool = False) -> bytes:
    """A NetParameter made of raw layer messages (field 100, or V1 `layers` field 2)."""
    number = 2 if v1 else 100
    return b"".join(encode_len_prefix(number, len(layer)) + layer for layer in layers)


def layer_with_raw_blobs(name: str, layer_type: str, *blobs: bytes) -> bytes:
    header = caffe_pb2.LayerParameter(name=name, type=layer_type).SerializeToString()
    return header + b"".join(encode_len_prefix(7, len(blob)) + blob for blob in blobs)


def shape_record(*dims: int) -> bytes:
    packed = b"".join(encode_varint(dim) for dim in dims)
    return encode_len_prefix(7, len(encode_len_prefix(1, len(packed)) + packed)) + encode_len_prefix(1, len(packed)) + packed


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def opencv_param(net, layer: str, index: int, like: np.ndarray) -> np.ndarray:
    """OpenCV's copy of a blob; its Python binding shows 1-D blobs as 2-D, so compare by size."""
    param = np.asarray(net.getParam(layer, index))
    assert param.size == like.size, (layer, index, param.shape, like.shape)
    return param.reshape(like.shape)


# --- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [write_caffemodel, write_hdf5], ids=["caffemodel", "hdf5"])
def test_round_trip_small_net_is_bit_identical(tmp_path: Path, writer) -> None:
    net, shapes = small_net()
    weights = seeded_weights(shapes, seed=1)
    weights["fc"][0].reshape(-1)[: len(special_values())] = special_values()
    path = tmp_path / "small.model"
    writer(net, weights, path)
    read = read_weights(path)
    assert_same_weights(read, weights)
    assert read.path == path
    assert [layer.name for layer in read.net.layer] == [layer.name for layer in net.layer]


def test_round_trip_many_layers_is_bit_identical(tmp_path: Path) -> None:
    net, shapes = many_layer_net()
    weights = seeded_weights(shapes, seed=2)
    write_caffemodel(net, weights, tmp_path / "many.caffemodel")
    write_hdf5(net, weights, tmp_path / "many.h5")
    binary = read_weights(tmp_path / "many.caffemodel")
    assert_same_weights(binary, weights)
    assert_same_weights(read_weights(tmp_path / "many.h5"), weights)
    assert binary.layer_types["layer1"] == "Convolution"
    assert binary.layer_types["layer0"] == "ReLU"
    assert len(binary.net.layer) == 300
    assert all(len(layer.blobs) == 0 for layer in binary.net.layer)


def test_binary_arrays_are_read_only_views_of_the_mapped_file(tmp_path: Path) -> None:
    net, shapes = small_net()
    write_caffemodel(net, seeded_weights(shapes), tmp_path / "small.caffemodel")
    for blobs in read_weights(tmp_path / "small.caffemodel").values():
        for blob in blobs:
            assert not blob.flags.writeable
            base = blob
            while isinstance(base, np.ndarray):
                base = base.base
            assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_format_is_told_by_content_not_name(tmp_path: Path) -> None:
    net, shapes = small_net()
    weights = seeded_weights(shapes)
    write_hdf5(net, weights, tmp_path / "weights.caffemodel")
    write_caffemodel(net, weights, tmp_path / "weights.h5")
    assert_same_weights(read_weights(tmp_path / "weights.caffemodel"), weights)
    assert_same_weights(read_weights(tmp_path / "weights.h5"), weights)


def with_user_block(hdf5: Path, path: Path) -> Path:
    """A copy of ``hdf5`` behind a 512-byte user block: its signature is at byte 512, not 0."""
    with h5py.File(hdf5, "r") as source, h5py.File(path, "w", userblock_size=512) as copy:
        source.copy(source["data"], copy)
    return path


def test_hdf5_is_told_by_its_signature_after_a_user_block_too(tmp_path: Path) -> None:
    net, shapes = small_net()
    weights = seeded_weights(shapes)
    write_hdf5(net, weights, tmp_path / "plain.h5")
    write_caffemodel(net, weights, tmp_path / "binary.caffemodel")
    blocked = with_user_block(tmp_path / "plain.h5", tmp_path / "blocked.h5")
    assert blocked.read_bytes()[512:520] == weights_module.HDF5_SIGNATURE
    assert is_hdf5(tmp_path / "plain.h5") and is_hdf5(blocked)
    assert not is_hdf5(tmp_path / "binary.caffemodel") and not is_hdf5(write_bytes(tmp_path / "empty", b""))
    assert_same_weights(read_weights(blocked), weights)


def test_written_caffemodel_matches_what_opencv_reads(tmp_path: Path) -> None:
    net, shapes = small_net()
    weights = seeded_weights(shapes, seed=3)
    weights["bn1"][2][:] = 2.0  # moving-average factor
    prototxt = tmp_path / "small.prototxt"
    prototxt.write_text(text_format.MessageToString(net))
    write_caffemodel(net, weights, tmp_path / "small.caffemodel")
    opencv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(tmp_path / "small.caffemodel"))
    for name, blobs in weights.items():
        for index, blob in enumerate(blobs):
            assert np.array_equal(opencv_param(opencv_net, name, index, blob), blob), (name, index)
    opencv_net.setInput(np.ones((1, 3, 8, 8), np.float32))
    assert opencv_net.forward().shape == (1, 5)


# --- real Caffe files --------------------------------------------------------------------------------


def test_lenet_current_form_with_training_layers() -> None:
    path = shared_path("realmodels", "lenet", "lenet_iter_10000.caffemodel")
    weights = read_weights(path)
    assert list(weights) == ["conv1", "conv2", "ip1", "ip2"]
    assert [blob.shape for blob in weights["conv1"]] == [(20, 1, 5, 5), (20,)]
    assert [blob.shape for blob in weights["conv2"]] == [(50, 20, 5, 5), (50,)]
    assert [blob.shape for blob in weights["ip1"]] == [(500, 800), (500,)]
    assert [blob.shape for blob in weights["ip2"]] == [(10, 500), (10,)]
    assert weights.layer_types["mnist"] == "Data"
    assert weights.layer_types["loss"] == "SoftmaxWithLoss"
    assert [layer.name for layer in weights.net.layer][0] == "mnist"
    opencv_net = cv2.dnn.readNetFromCaffe(str(path.with_name("lenet.prototxt")), str(path))
    for name, blobs in weights.items():
        for index, blob in enumerate(blobs):
            assert np.array_equal(opencv_param(opencv_net, name, index, blob), blob), (name, index)


def test_open_nsfw_batchnorm_factor_and_convolutions_match_opencv() -> None:
    path = shared_path("realmodels", "open_nsfw", "resnet_50_1by2_nsfw.caffemodel")
    weights = read_weights(path)
    kinds = [weights.layer_types[name] for name in weights]
    assert kinds.count("Convolution") == kinds.count("BatchNorm") == kinds.count("Scale") == 53
    for name in weights:
        if weights.layer_types[name] == "BatchNorm":
            mean, variance, factor = weights[name]
            assert mean.shape == variance.shape and factor.shape == (1,)
            assert factor[0] == pytest.approx(999.98, abs=0.01)
    opencv_net = cv2.dnn.readNetFromCaffe(str(path.with_name("deploy.prototxt")), str(path))
    convolutions = [name for name in weights if weights.layer_types[name] == "Convolution"]
    for name in convolutions:
        for index, blob in enumerate(weights[name]):
            assert np.array_equal(opencv_param(opencv_net, name, index, blob), blob), (name, index)


@pytest.mark.parametrize(
    "parts", [("lenet", "lenet_iter_10000.caffemodel"), ("open_nsfw", "resnet_50_1by2_nsfw.caffemodel")]
)
def test_rewriting_a_caffe_written_model_reproduces_it_byte_for_byte(tmp_path: Path, parts) -> None:
    path = shared_path("realmodels", *parts)
    weights = read_weights(path)
    write_caffemodel(weights.net, weights, tmp_path / "rewritten.caffemodel")
    assert (tmp_path / "rewritten.caffemodel").read_bytes() == path.read_bytes()


def test_cifar10_v1_binary_is_upgraded_and_normalised() -> None:
    path = shared_path("realmodels", "cifar10_quick", "cifar10_quick_v1_iter_5000.caffemodel")
    weights = read_weights(path)
    assert list(weights) == ["conv1", "conv2", "conv3", "ip1", "ip2"]
    shapes = {name: [blob.shape for blob in blobs] for name, blobs in weights.items()}
    assert shapes == {
        "conv1": [(32, 3, 5, 5), (32,)],
        "conv2": [(32, 32, 5, 5), (32,)],
        "conv3": [(64, 32, 5, 5), (64,)],
        "ip1": [(64, 1024), (64,)],
        "ip2": [(10, 64), (10,)],
    }
    assert weights.layer_types["conv1"] == "Convolution"
    assert weights.layer_types["ip1"] == "InnerProduct"
    assert weights.layer_types["cifar"] == "Data"
    assert len(weights.net.layers) == 0 and len(weights.net.layer) > 0
    deploy = path.with_name("cifar10_quick.prototxt")
    opencv_net = cv2.dnn.readNetFromCaffe(str(deploy), str(path))
    for name, blobs in weights.items():
        for index, blob in enumerate(blobs):
            assert np.array_equal(opencv_param(opencv_net, name, index, blob), blob), (name, index)


def test_cifar10_hdf5_has_the_v1_binarys_normalised_shapes() -> None:
    folder = shared_path("realmodels", "cifar10_quick")
    hdf5 = read_weights(folder / "cifar10_quick_iter_5000.caffemodel.h5")
    binary = read_weights(folder / "cifar10_quick_v1_iter_5000.caffemodel")
    assert list(hdf5) == list(binary)
    for name in binary:
        assert [blob.shape for blob in hdf5[name]] == [blob.shape for blob in binary[name]], name
        assert all(blob.dtype == np.float32 for blob in hdf5[name])
    # HDF5 keeps no net: just the layer groups, blob-less ones included.
    assert {"loss", "relu1", "pool1"} <= {layer.name for layer in hdf5.net.layer}
    assert hdf5.layer_types == {}


def test_mean_binaryproto() -> None:
    mean = read_blob(shared_path("realmodels", "cifar10_quick", "mean.binaryproto"))
    assert mean.shape == (1, 3, 32, 32)
    assert mean.dtype == np.float32
    assert 0 < mean.min() < mean.max() < 255


# --- legacy encodings, synthesised -------------------------------------------------------------------


def test_v1_legacy_shapes_are_normalised_as_caffe_copies_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    conv_weight, conv_bias = rng.standard_normal((8, 3, 2, 2)), rng.standard_normal(8)
    ip_weight, ip_bias = rng.standard_normal((6, 5)), rng.standard_normal(6)
    net = caffe_pb2.NetParameter(name="v1")
    net.layers.add(name="conv", type=V1.CONVOLUTION, blobs=[
        caffe_pb2.BlobProto(num=8, channels=3, height=2, width=2, data=conv_weight.ravel()),
        caffe_pb2.BlobProto(num=1, channels=1, height=1, width=8, data=conv_bias),
    ]).convolution_param.num_output = 8
    net.layers.add(name="ip", type=V1.INNER_PRODUCT, blobs=[
        caffe_pb2.BlobProto(num=1, channels=1, height=6, width=5, data=ip_weight.ravel()),
        caffe_pb2.BlobProto(num=1, channels=1, height=1, width=6, data=ip_bias),
    ])
    # Not a layer type with a known shape: the legacy 4-D shape stays.
    net.layers.add(name="other", type=V1.POWER, blobs=[caffe_pb2.BlobProto(num=1, channels=1, height=1, width=2,
                                                                           data=[1, 2])])
    weights = read_weights(write_bytes(tmp_path / "v1.caffemodel", net.SerializeToString()))
    assert weights["conv"][0].shape == (8, 3, 2, 2)
    assert np.array_equal(weights["conv"][1], conv_bias.astype(np.float32))
    assert np.array_equal(weights["ip"][0], ip_weight.astype(np.float32))
    assert weights["ip"][1].shape == (6,)
    assert weights["other"][0].shape == (1, 1, 1, 2)
    assert weights.layer_types == {"conv": "Convolution", "ip": "InnerProduct", "other": "Power"}


def test_legacy_shapes_in_current_form_layers_are_normalised_too(tmp_path: Path) -> None:
    net = caffe_pb2.NetParameter()
    net.layer.add(name="ip", type="InnerProduct", blobs=[
        caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3, data=range(6)),
        caffe_pb2.BlobProto(num=1, channels=1, height=1, width=2, data=[7, 8]),
    ])
    weights = read_weights(write_bytes(tmp_path / "m.caffemodel", net.SerializeToString()))
    assert [blob.shape for blob in weights["ip"]] == [(2, 3), (2,)]


def test_v0_layers_wrapped_in_v1(tmp_path: Path) -> None:
    net = caffe_pb2.NetParameter(name="v0")
    connection = net.layers.add(bottom=["data"], top=["fc"])
    connection.layer.name = "fc"
    connection.layer.type = "innerproduct"
    connection.layer.num_output = 2
    connection.layer.blobs.add(num=1, channels=1, height=2, width=3, data=range(6))
    connection.layer.blobs.add(num=1, channels=1, height=1, width=2, data=[10, 20])
    net.input.append("data")
    net.input_dim.extend([1, 3, 1, 1])
    weights = read_weights(write_bytes(tmp_path / "v0.caffemodel", net.SerializeToString()))
    assert list(weights) == ["fc"]
    assert np.array_equal(weights["fc"][0], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(weights["fc"][1], [10, 20])
    assert weights.layer_types["fc"] == "InnerProduct"
    assert [layer.type for layer in weights.net.layer] == ["Input", "InnerProduct"]


def test_unpacked_and_double_and_split_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    values = rng.standard_normal(3000).astype(np.float32)
    unpacked = shape_record(3000) + b"".join(b"\x2d" + struct.pack("<f", v) for v in values)
    doubles = rng.standard_normal(4)
    unpacked_doubles = b"".join(b"\x41" + struct.pack("<d", v) for v in doubles) + shape_record(2, 2)
    packed_doubles = caffe_pb2.BlobProto(double_data=doubles, shape=caffe_pb2.BlobShape(dim=[4])).SerializeToString()
    first, second = values[:5].tobytes(), values[5:8].tobytes()
    split = encode_len_prefix(5, len(first)) + first + shape_record(8) + encode_len_prefix(5, len(second)) + second
    layer = layer_with_raw_blobs("p", "Parameter", unpacked, unpacked_doubles, packed_doubles, split)
    weights = read_weights(write_bytes(tmp_path / "m.caffemodel", net_bytes(layer)))
    blobs = weights["p"]
    assert np.array_equal(blobs[0], values)
    # double_data comes back float32, as Caffe copies it into a float net.
    assert blobs[1].dtype == np.float32 and np.array_equal(blobs[1], doubles.astype(np.float32).reshape(2, 2))
    assert np.array_equal(blobs[2], doubles.astype(np.float32))
    assert np.array_equal(blobs[3], values[:8])


def test_unknown_fields_of_every_wire_type_are_skipped(tmp_path: Path) -> None:
    group = (encode_varint((20 << 3) | 3) + encode_varint(1 << 3) + encode_varint(5)
             + encode_varint((21 << 3) | 3) + encode_varint((21 << 3) | 4) + encode_varint((20 << 3) | 4))
    unknown = (group + encode_varint((22 << 3) | 1) + bytes(8) + encode_varint((23 << 3) | 5) + bytes(4)
               + encode_varint((24 << 3) | 0) + encode_varint(2**63) + encode_len_prefix(25, 3) + b"abc")
    values = np.arange(4, dtype=np.float32)
    blob = unknown + shape_record(4) + encode_len_prefix(5, 16) + values.tobytes() + unknown
    layer = layer_with_raw_blobs("p", "Parameter", blob) + unknown
    weights = read_weights(write_bytes(tmp_path / "m.caffemodel", net_bytes(layer)))
    assert np.array_equal(weights["p"][0], values)


# --- bad input -----------------------------------------------------------------------------------------


def message_of(path: Path) -> str:
    with pytest.raises(CaffeFormatError) as caught:
        read_weights(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    return message


def test_truncated_in_the_middle_names_layer_blob_and_offset(tmp_path: Path) -> None:
    data = shared_path("realmodels", "lenet", "lenet_iter_10000.caffemodel").read_bytes()
    message = message_of(write_bytes(tmp_path / "half.caffemodel", data[: len(data) // 2]))
    assert "truncated" in message and "layer 'ip1'" in message and "blob 0" in message
    assert "byte offset" in message


def test_truncated_by_one_byte_names_the_last_layer(tmp_path: Path) -> None:
    data = shared_path("realmodels", "lenet", "lenet_iter_10000.caffemodel").read_bytes()
    message = message_of(write_bytes(tmp_path / "cut.caffemodel", data[:-1]))
    assert "truncated" in message and "layer 'loss'" in message


def test_truncated_to_one_byte(tmp_path: Path) -> None:
    data = shared_path("realmodels", "lenet", "lenet_iter_10000.caffemodel").read_bytes()
    message = message_of(write_bytes(tmp_path / "one.caffemodel", data[:1]))
    assert "truncated" in message and "byte offset 1" in message


def test_random_bytes_empty_text_and_missing_files(tmp_path: Path) -> None:
    noise = np.random.default_rng(6).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert "not a caffemodel" in message_of(write_bytes(tmp_path / "noise.caffemodel", noise))
    assert "empty" in message_of(write_bytes(tmp_path / "empty.caffemodel", b""))
    text = b'name: "LeNet"\nlayer {\n  name: "data"\n}\n'
    assert ".prototxt" in message_of(write_bytes(tmp_path / "text.caffemodel", text))
    assert "cannot read" in message_of(tmp_path / "absent.caffemodel")


def test_blob_count_disagreeing_with_shape(tmp_path: Path) -> None:
    net = caffe_pb2.NetParameter()
    net.layer.add(name="ip", type="InnerProduct").blobs.add(shape=caffe_pb2.BlobShape(dim=[2, 3]), data=range(5))
    message = message_of(write_bytes(tmp_path / "m.caffemodel", net.SerializeToString()))
    assert "layer 'ip' (#0) blob 0" in message and "5 values" in message and "needs 6" in message


def test_blob_record_overrunning_its_layer(tmp_path: Path) -> None:
    header = caffe_pb2.LayerParameter(name="conv", type="Convolution").SerializeToString()
    layer = header + encode_varint((7 << 3) | 2) + encode_varint(1000) + bytes(10)
    message = message_of(write_bytes(tmp_path / "m.caffemodel", net_bytes(layer)))
    assert "layer 'conv' (#0) blob 0" in message and "claims 1000 bytes" in message


def test_hdf5_without_data_group_or_with_a_missing_blob(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "nodata.h5", "w") as file:
        file.create_group("weights")
    assert "'data' group" in message_of(tmp_path / "nodata.h5")
    with h5py.File(tmp_path / "gap.h5", "w") as file:
        file.create_dataset("data/conv1/0", data=np.zeros(3, np.float32))
        file.create_dataset("data/conv2/1", data=np.zeros(3, np.float32))
    message = message_of(tmp_path / "gap.h5")
    assert "layer 'conv2'" in message and "blob 0 is missing" in message
    with h5py.File(tmp_path / "flat.h5", "w") as file:
        file.create_dataset("data/conv1", data=np.zeros(3, np.float32))
    assert "data/conv1 is not a group" in message_of(tmp_path / "flat.h5")


def test_truncated_hdf5(tmp_path: Path) -> None:
    net, shapes = small_net()
    write_hdf5(net, seeded_weights(shapes), tmp_path / "whole.h5")
    data = (tmp_path / "whole.h5").read_bytes()
    assert "HDF5" in message_of(write_bytes(tmp_path / "half.h5", data[: len(data) // 2]))


def test_read_blob_rejects_a_non_blob(tmp_path: Path) -> None:
    path = shared_path("realmodels", "lenet", "lenet_iter_10000.caffemodel")
    with pytest.raises(CaffeFormatError, match="not a valid BlobProto"):
        read_blob(path)


# --- writer behaviour --------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [write_caffemodel, write_hdf5], ids=["caffemodel", "hdf5"])
def test_existing_output_needs_force_and_is_replaced_atomically(tmp_path: Path, writer) -> None:
    net, shapes = small_net()
    path = tmp_path / "out.model"
    path.write_bytes(b"old")
    with pytest.raises(InputError, match="--force"):
        writer(net, seeded_weights(shapes), path)
    assert path.read_bytes() == b"old"
    writer(net, seeded_weights(shapes), path, force=True)
    assert_same_weights(read_weights(path), seeded_weights(shapes))
    assert sorted(os.listdir(tmp_path)) == ["out.model"]


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    def fail(*args) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(weights_module, "_write_layer", fail)
    net, shapes = small_net()
    with pytest.raises(RuntimeError):
        write_caffemodel(net, seeded_weights(shapes), tmp_path / "out.caffemodel")
    assert os.listdir(tmp_path) == []


def test_writer_rejects_weights_of_unknown_layers_and_slashes_in_hdf5(tmp_path: Path) -> None:
    net, shapes = small_net()
    weights = seeded_weights(shapes)
    with pytest.raises(InputError, match="'nope'"):
        write_caffemodel(net, {**weights, "nope": [np.zeros(1)]}, tmp_path / "a.caffemodel")
    net.layer[2].name = "conv1/bn"
    weights["conv1/bn"] = weights.pop("bn1")
    with pytest.raises(InputError, match="contains '/'"):
        write_hdf5(net, weights, tmp_path / "a.h5")
    assert os.listdir(tmp_path) == []


def test_writer_upgrades_a_v1_net(tmp_path: Path) -> None:
    net = caffe_pb2.NetParameter(name="v1")
    net.layers.add(name="ip", type=V1.INNER_PRODUCT).inner_product_param.num_output = 2
    weights = {"ip": [np.ones((2, 3), np.float32), np.zeros(2, np.float32)]}
    write_caffemodel(net, weights, tmp_path / "m.caffemodel")
    read = read_weights(tmp_path / "m.caffemodel")
    assert_same_weights(read, weights)
    assert read.layer_types == {"ip": "InnerProduct"}


# --- beyond protobuf's 2 GiB limit ---------------------------------------------------------------------


@pytest.mark.slow
def test_blob_beyond_4_gib_in_a_sparse_file(tmp_path: Path) -> None:
    """A 4 GiB blob whose data is a hole: offsets and lengths past 2**32 must be handled exactly."""
    count = 2**30 + 2
    tail = np.array([1.5, -2.5], dtype="<f4").tobytes()
    header = caffe_pb2.LayerParameter(name="big", type="Parameter").SerializeToString()
    data_prefix = encode_len_prefix(5, 4 * count)
    suffix = shape_record(count)
    blob_length = len(data_prefix) + 4 * count + len(suffix)
    blob_prefix = encode_len_prefix(7, blob_length)
    layer_length = len(header) + len(blob_prefix) + blob_length
    path = tmp_path / "big.caffemodel"
    with open(path, "wb") as file:
        file.write(encode_len_prefix(100, layer_length) + header + blob_prefix + data_prefix)
        file.seek(4 * count - len(tail), os.SEEK_CUR)
        file.write(tail + suffix)
    if os.stat(path).st_blocks * 512 > 2**20:
        pytest.skip("the file system does not keep sparse files sparse")
    weights = read_weights(path)
    (blob,) = weights["big"]
    assert blob.shape == (count,)
    assert blob[0] == 0.0 and blob[-2] == 1.5 and blob[-1] == -2.5


def test_fields_of_a_caffe_fork_are_reported_not_fatal() -> None:
    """open_nsfw was written by CaffeOnSpark, whose data layer carries fields BVLC's schema lacks."""
    import warnings

    from caffe2torch.caffe_proto import CaffeFormatWarning

    path = shared_path("realmodels", "open_nsfw", "resnet_50_1by2_nsfw.caffemodel")
    with pytest.warns(CaffeFormatWarning) as caught:
        weights = read_weights(path)
    assert [str(warning.message) for warning in caught] == [
        f"{path}: unknown field 10001 in LayerParameter of MemoryData layer 'data' ignored "
        "(not in caffe2torch's schema: a Caffe fork's?)",
        f"{path}: unknown fields 10000, 10001 in MemoryDataParameter of MemoryData layer 'data' ignored "
        "(not in caffe2torch's schema: a Caffe fork's?)",
    ]
    assert len(weights) == 160
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_weights(shared_path("realmodels", "lenet", "lenet_iter_10000.caffemodel"))
