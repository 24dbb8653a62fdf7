"""Loading copies each blob once out of the memory-mapped caffemodel and gives the file's pages back.

The parameters of a loaded model own their memory: the file can be overwritten in place or deleted and the
model still holds and computes exactly what was loaded; the values are bit-exact copies (NaN payloads,
signed zeros, denormals); a Weights object the caller keeps still reads the same; after a load none of the
file's pages stay in the process's resident set; the memory budget is charged exactly one float32 copy per
blob; and only our own read-only mappings are ever given back.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.caffe_proto import caffe_pb2, parse_prototxt, read_weights, write_caffemodel, write_hdf5
from caffe2torch.caffe_proto.wire import encode_len_prefix, encode_varint
from caffe2torch.converter import convert
from caffe2torch.limits import memory_budget
from caffe2torch.mapped import copy_into, map_file, release_range

NET = """
name: "lean"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 64 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 100 } }
layer { name: "special" type: "InnerProduct" bottom: "pool1" top: "special" inner_product_param { num_output: 7 } }
"""

SPECIAL_BITS = [0x7FC00001, 0xFFC12345, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001, 0x3F800001]


def seeded(net) -> dict[str, list[np.ndarray]]:
    """Blobs for NET: fc is 100 x 4096 floats (1.6 MB, hundreds of pages); BatchNorm's factor is 1 (its
    statistics are used as stored); `special` holds floats a lossy copy would change."""
    rng = np.random.default_rng(11)
    weights = {
        "conv1": [rng.standard_normal((64, 3, 3, 3)).astype(np.float32), rng.standard_normal(64).astype(np.float32)],
        "bn1": [rng.standard_normal(64).astype(np.float32), (rng.random(64) + 0.5).astype(np.float32),
                np.ones(1, np.float32)],
        "scale1": [rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)],
        "fc": [rng.standard_normal((100, 64 * 8 * 8)).astype(np.float32), rng.standard_normal(100).astype(np.float32)],
        "special": [rng.standard_normal((7, 64 * 8 * 8)).astype(np.float32), np.zeros(7, np.float32)],
    }
    weights["special"][0][:, 0] = np.array(SPECIAL_BITS, np.uint32).view(np.float32)
    weights["special"][1] = np.array(SPECIAL_BITS, np.uint32).view(np.float32)
    return weights


def loaded_blobs(model) -> dict[str, list[np.ndarray]]:
    """Each layer's parameters (and BatchNorm's statistics), as the blobs they came from."""
    modules = dict(model.named_children())
    ident = {caffe: name for name, caffe in model.caffe_names.items()}
    result = {}
    for layer in ("conv1", "scale1", "fc", "special"):
        module = modules[ident[layer]]
        result[layer] = [module.weight.detach().numpy().copy(), module.bias.detach().numpy().copy()]
    bn = modules[ident["bn1"]]
    result["bn1"] = [bn.mean.numpy().copy(), bn.var.numpy().copy()]
    return result


def assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape, what
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), what


def assert_exact(model, weights: dict[str, list[np.ndarray]]) -> None:
    blobs = loaded_blobs(model)
    for layer in ("conv1", "scale1", "fc", "special"):
        for index in range(2):
            assert_bits_equal(blobs[layer][index], weights[layer][index], f"{layer} blob {index}")
    assert_bits_equal(blobs["bn1"][0], weights["bn1"][0], "bn1 mean")
    assert_bits_equal(blobs["bn1"][1], weights["bn1"][1], "bn1 var")


def outputs(model, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        result = model(x)
    return {name: value.numpy().copy() for name, value in result.items()}


@pytest.mark.parametrize("writer", [write_caffemodel, write_hdf5], ids=["caffemodel", "hdf5"])
def test_parameters_are_exact_and_survive_the_file_being_overwritten_and_deleted(tmp_path: Path, writer) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(NET)
    net = parse_prototxt(NET)
    weights = seeded(net)
    path = tmp_path / ("net.caffemodel" if writer is write_caffemodel else "net.caffemodel.h5")
    writer(net, weights, path)
    model = caffe2torch.load(prototxt, path)
    assert_exact(model, weights)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32))
    before = outputs(model, x)
    size = path.stat().st_size

    # Overwritten in place, same size (a shared mapping would show the new bytes), then deleted.
    with open(path, "r+b") as file:
        file.write(b"\xff" * size)
    assert path.stat().st_size == size
    assert_exact(model, weights)
    after = outputs(model, x)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    path.unlink()
    assert_exact(model, weights)
    for name, value in outputs(model, x).items():
        np.testing.assert_array_equal(value, before[name])


def test_parameters_own_their_memory_and_are_writable(tmp_path: Path) -> None:
    net = parse_prototxt(NET)
    weights = seeded(net)
    write_caffemodel(net, weights, tmp_path / "net.caffemodel")
    model = convert(net, tmp_path / "net.caffemodel")
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert tensor.dtype == torch.float32, name
        assert tensor.is_contiguous(), name
        saved = tensor.detach().clone()
        tensor.data.fill_(0)  # writable: no read-only numpy array or file mapping underneath
        tensor.data.copy_(saved)
    assert_exact(model, weights)


def test_weights_kept_by_the_caller_read_the_same_after_a_load(tmp_path: Path) -> None:
    net = parse_prototxt(NET)
    weights = seeded(net)
    write_caffemodel(net, weights, tmp_path / "net.caffemodel")
    kept = read_weights(tmp_path / "net.caffemodel")
    first = convert(net, kept)
    # The load gave the file's pages back; reading the views faults them in again, unchanged.
    for layer, arrays in weights.items():
        for index, array in enumerate(arrays):
            assert_bits_equal(kept[layer][index], array, f"{layer} blob {index}")
    second = convert(net, kept)
    assert_exact(first, weights)
    assert_exact(second, weights)


def mapping_rss(path: Path) -> int:
    """Bytes of ``path``'s mappings resident in this process, from /proc/self/smaps."""
    resident, inside = 0, False
    target = str(path.resolve())
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                inside = len(fields) >= 6 and " ".join(fields[5:]) == target
            elif inside and fields and fields[0] == "Rss:":
                resident += int(fields[1]) * 1024
    return resident


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_no_page_of_the_file_stays_resident_after_reading_or_loading(tmp_path: Path) -> None:
    net = parse_prototxt(NET)
    weights = seeded(net)
    path = tmp_path / "net.caffemodel"
    write_caffemodel(net, weights, path)
    assert path.stat().st_size > 400 * mmap.PAGESIZE
    kept = read_weights(path)  # kept alive: its mapping lives on after the load
    assert mapping_rss(path) <= 4 * mmap.PAGESIZE, "reading left the file's pages resident"
    model = convert(net, kept)
    assert mapping_rss(path) <= 4 * mmap.PAGESIZE, "the load left the file's pages resident"
    assert_exact(model, weights)
    for arrays in kept.values():  # the views still work: touching them maps the pages again
        for array in arrays:
            float(array.sum())
    assert mapping_rss(path) >= path.stat().st_size // 2


def test_the_budget_is_charged_one_float32_copy_per_blob(tmp_path: Path) -> None:
    net = parse_prototxt(NET)
    weights = seeded(net)
    write_caffemodel(net, weights, tmp_path / "net.caffemodel")
    values = sum(array.size for arrays in weights.values() for array in arrays)
    with memory_budget() as budget:
        convert(net, tmp_path / "net.caffemodel")
    assert budget.used == 4 * values  # packed float data is read as views: only the copies count
    with memory_budget(4 * values - 1):
        with pytest.raises(caffe2torch.ResourceLimitError, match=r"layer 'special' \(InnerProduct\): blob 1"):
            convert(net, tmp_path / "net.caffemodel")


def blob_record(payload: bytes) -> bytes:
    return encode_len_prefix(7, len(payload)) + payload


def shape_record(*dims: int) -> bytes:
    packed = b"".join(encode_varint(dim) for dim in dims)
    inner = encode_len_prefix(1, len(packed)) + packed
    return encode_len_prefix(7, len(inner)) + inner


def test_double_data_unpacked_and_legacy_blobs_convert_exactly(tmp_path: Path) -> None:
    """Blobs that reading copies (double_data, unpacked floats) give their pages back while read; the packed
    blobs beside them, on the same pages, still convert exactly."""
    rng = np.random.default_rng(8)
    ip_weight = rng.standard_normal((300, 60))  # 18000 doubles: 144 KB, 35 pages
    ip_bias = rng.standard_normal(300).astype(np.float32)
    conv_weight = rng.standard_normal((5, 3, 2, 2)).astype(np.float32)
    conv_bias = rng.standard_normal(5).astype(np.float32)
    header = caffe_pb2.LayerParameter(name="ip", type="InnerProduct", bottom=["data"], top=["ip"])
    header.inner_product_param.num_output = 300
    doubles = encode_len_prefix(8, ip_weight.nbytes) + ip_weight.tobytes() + shape_record(300, 60)
    legacy_bias = (b"\x08\x01\x10\x01\x18\x01" + b"\x20" + encode_varint(300)
                   + encode_len_prefix(5, ip_bias.nbytes) + ip_bias.tobytes())  # num, channels, height: 1
    ip_layer = header.SerializeToString() + blob_record(doubles) + blob_record(legacy_bias)
    header = caffe_pb2.LayerParameter(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    header.convolution_param.num_output = 5
    header.convolution_param.kernel_size.append(2)
    unpacked = b"".join(b"\x2d" + struct.pack("<f", value) for value in conv_weight.ravel()) + shape_record(5, 3, 2, 2)
    packed = encode_len_prefix(5, conv_bias.nbytes) + conv_bias.tobytes() + shape_record(5)
    conv_layer = header.SerializeToString() + blob_record(unpacked) + blob_record(packed)
    data = b"".join(encode_len_prefix(100, len(layer)) + layer for layer in (ip_layer, conv_layer))
    path = tmp_path / "mixed.caffemodel"
    path.write_bytes(data)
    net = parse_prototxt("""
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 5 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 300 } }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                convolution_param { num_output: 5 kernel_size: 2 } }
    """)
    with memory_budget() as budget:
        model = convert(net, path)
    # double_data converted (4 bytes a value), unpacked floats decoded (4), then one float32 copy of each blob
    assert budget.used == 4 * (ip_weight.size + conv_weight.size) + 4 * (ip_weight.size + 300 + conv_weight.size + 5)
    modules = {model.caffe_names[name]: module for name, module in model.named_children()}
    assert_bits_equal(modules["ip"].weight.detach().numpy(), ip_weight.astype(np.float32), "ip weight")
    assert_bits_equal(modules["ip"].bias.detach().numpy(), ip_bias, "ip bias (legacy 1 x 1 x 1 x 300)")
    assert_bits_equal(modules["conv"].weight.detach().numpy(), conv_weight, "conv weight (unpacked)")
    assert_bits_equal(modules["conv"].bias.detach().numpy(), conv_bias, "conv bias")
    path.unlink()
    assert_bits_equal(modules["ip"].weight.detach().numpy(), ip_weight.astype(np.float32), "ip weight, file gone")


def test_only_our_own_mappings_are_read_by_file_or_given_back(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    values = np.arange(4096, dtype=np.float32)
    path.write_bytes(values.tobytes())
    with open(path, "r+b") as file:
        private = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)  # copy-on-write: changes are its own
    view = np.frombuffer(private, np.float32)
    private[:4] = struct.pack("<f", -1.0)
    out = np.empty(4096, np.float32)
    copy_into(out, view)  # through the mapping, as the view shows it: not read from the file
    assert out[0] == -1.0 and np.array_equal(out[1:], values[1:])
    release_range(private)  # MADV_DONTNEED here would throw the change away
    assert view[0] == -1.0
    copy_into(out, np.arange(4096.0))  # an array of its own, float64: converted by numpy
    assert np.array_equal(out, values)
    with open(path, "rb") as file:
        ours = map_file(file.fileno())
    out = np.empty((20, 95), np.float32)
    copy_into(out, np.frombuffer(ours, np.float32)[100:2000].reshape(20, 95))  # read from the file
    assert np.array_equal(out.ravel(), values[100:2000])
    copy_into(out.reshape(-1)[:10], np.frombuffer(ours, np.float32)[7:27:2])  # strided: numpy's copy
    assert np.array_equal(out.ravel()[:10], values[7:27:2])
    release_range(b"not a mapping")  # nothing to give back
    del view, private
    os.remove(path)


def test_large_destinations_are_offered_huge_pages_and_read_exactly(tmp_path: Path, monkeypatch) -> None:
    """A destination of 4 MiB or more gets a transparent-huge-page hint on whole pages inside it before the
    file is read into it (filling fresh memory is mostly faulting it in); smaller ones get none.  Either way
    the bytes are the file's, from an offset no float is aligned to."""
    import caffe2torch.mapped as mapped_module

    if mapped_module._MADVISE is None:
        pytest.skip("no transparent huge pages on this platform")
    hints: list[tuple[int, int, int]] = []
    real_madvise = mapped_module._MADVISE
    monkeypatch.setattr(mapped_module, "_MADVISE", lambda start, length, advice: (
        hints.append((start, length, advice)), real_madvise(start, length, advice))[1])
    values = np.random.default_rng(5).standard_normal(1_300_001).astype(np.float32)  # 5.2 MB
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00" * 3 + values.tobytes())
    with open(path, "rb") as file:
        mapping = map_file(file.fileno())
    large = torch.empty(values.shape)
    copy_into(large.numpy(), np.frombuffer(mapping, np.float32, count=values.size, offset=3))
    assert np.array_equal(large.numpy().view(np.uint32), values.view(np.uint32))
    (start, length, advice), = hints
    pointer, page = large.data_ptr(), mmap.PAGESIZE
    assert advice == mmap.MADV_HUGEPAGE and start % page == 0 and length % page == 0
    assert pointer <= start < start + length <= pointer + large.numel() * 4
    small = torch.empty(1000)
    copy_into(small.numpy(), np.frombuffer(mapping, np.float32, count=1000, offset=3))
    assert len(hints) == 1 and np.array_equal(small.numpy(), values[:1000])
