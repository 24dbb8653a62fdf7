"""Hostile and broken model files: every reader answers with a Caffe2TorchError naming the place.

Each test builds its own small reproducer of a failure that a fuzzing campaign found (a traceback
from deep inside our readers, protobuf, h5py or numpy, a read outside the model file, or an
allocation sized by the file and never checked).
"""

from __future__ import annotations

import os
import re
import struct
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from caffe2torch.caffe_proto import CaffeFormatWarning, caffe_pb2, read_prototxt, upgrade_net
from caffe2torch.caffe_proto.weights import read_blob, read_weights
from caffe2torch.caffe_proto.wire import EGROUP, SGROUP, encode_key, encode_len_prefix, encode_varint, read_field
from caffe2torch.errors import CaffeFormatError, ResourceLimitError
from caffe2torch.cli import main
from caffe2torch.limits import MEMORY_LIMIT_VARIABLE, memory_budget


def len_field(number: int, payload: bytes) -> bytes:
    return encode_len_prefix(number, len(payload)) + payload


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- 1. nested groups ------------------------------------------------------------------------------


def nested_groups(depth: int, number: int = 99) -> bytes:
    return encode_key(number, SGROUP) * depth + encode_key(number, EGROUP) * depth


def test_100000_nested_groups_are_skipped_in_linear_time() -> None:
    data = nested_groups(100_000)
    started = time.perf_counter()
    field = read_field(data, 0, len(data))
    assert field.end == len(data)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("depth", [100, 100_000])
def test_nested_groups_in_a_layer_are_a_clean_error_naming_it(tmp_path: Path, depth: int) -> None:
    layer = len_field(1, b"deep") + nested_groups(depth)
    path = write(tmp_path / "m.caffemodel", len_field(100, len_field(1, b"fine")) + len_field(100, layer))
    with pytest.raises(CaffeFormatError, match=rf"^{path}: layer 'deep' \(#1\): corrupt layer parameters .*"
                       r"nested deeper than its limit of 100 levels\) \(byte offset 9\)$"):
        read_weights(path)


def test_unclosed_nested_groups_in_a_blob_are_a_clean_error(tmp_path: Path) -> None:
    path = write(tmp_path / "mean.binaryproto", encode_key(99, SGROUP) * 100_000)
    with pytest.raises(CaffeFormatError, match="has no end-group"):
        read_blob(path)


# --- 2. strings that are not UTF-8 -----------------------------------------------------------------

BAD_UTF8 = b"\xff\xfebad"


@pytest.mark.parametrize(
    ("layer", "field"),
    [
        (len_field(1, BAD_UTF8) + len_field(2, b"ReLU"), "name"),
        (len_field(1, b"r") + len_field(2, BAD_UTF8), "type"),
        (len_field(1, b"r") + len_field(3, BAD_UTF8), "bottom"),
        (len_field(1, b"r") + len_field(4, BAD_UTF8), "top"),
        (len_field(1, b"d") + len_field(107, len_field(1, BAD_UTF8)), "data_param.source"),
    ],
    ids=["name", "type", "bottom", "top", "nested"],
)
def test_current_layer_string_not_utf8_names_layer_field_and_offset(tmp_path: Path, layer: bytes,
                                                                    field: str) -> None:
    data = len_field(100, len_field(1, b"fine") + len_field(2, b"ReLU")) + len_field(100, layer)
    path = write(tmp_path / "m.caffemodel", data)
    with pytest.raises(CaffeFormatError) as raised:
        read_weights(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: layer ")
    assert "#1" in message and f"string field {field} is not valid UTF-8" in message
    assert message.endswith(f"(byte offset {data.index(BAD_UTF8)})")


@pytest.mark.parametrize("field_number", [1, 2], ids=["v0_name", "v0_type"])
def test_v0_layer_name_or_type_not_utf8(tmp_path: Path, field_number: int) -> None:
    v0_fields = {1: b"conv1", 2: b"conv"}
    v0_fields[field_number] = BAD_UTF8
    v0_layer = len_field(1, v0_fields[1]) + len_field(2, v0_fields[2])
    data = len_field(2, len_field(1, v0_layer) + len_field(2, b"data"))  # V1 `layers` wrapping a V0 `layer`
    path = write(tmp_path / "m.caffemodel", data)
    name = {1: "name", 2: "type"}[field_number]
    with pytest.raises(CaffeFormatError, match=rf"#0\)?: string field {name} is not valid UTF-8 .*"
                       rf"\(byte offset {data.index(BAD_UTF8)}\)$"):
        read_weights(path)


def test_v1_layer_name_and_net_name_not_utf8(tmp_path: Path) -> None:
    v1 = write(tmp_path / "v1.caffemodel", len_field(2, len_field(4, BAD_UTF8) + len_field(2, b"x")))
    with pytest.raises(CaffeFormatError, match=r"layer #0: string field name is not valid UTF-8"):
        read_weights(v1)
    net = write(tmp_path / "net.caffemodel", len_field(1, BAD_UTF8) + len_field(100, len_field(1, b"r")))
    with pytest.raises(CaffeFormatError, match=r"string field name is not valid UTF-8 \(byte offset 2\)$"):
        read_weights(net)


@pytest.mark.parametrize(
    ("net_bytes", "field"),
    [
        (len_field(2, len_field(1, len_field(1, BAD_UTF8) + len_field(2, b"conv"))), r"layers\[0\]\.layer\.name"),
        (len_field(2, len_field(1, len_field(1, b"c") + len_field(2, BAD_UTF8))), r"layers\[0\]\.layer\.type"),
        (len_field(100, len_field(1, b"r")) + len_field(100, len_field(4, BAD_UTF8)), r"layer\[1\]\.top\[0\]"),
    ],
    ids=["v0_name", "v0_type", "top"],
)
def test_upgrade_net_refuses_a_net_parsed_elsewhere_with_non_utf8_strings(net_bytes: bytes, field: str) -> None:
    net = caffe_pb2.NetParameter.FromString(net_bytes)  # protobuf itself does not check proto2 strings
    with pytest.raises(CaffeFormatError, match=rf"^model\.caffemodel: string field {field} is not valid UTF-8$"):
        upgrade_net(net, source="model.caffemodel")


# --- 3. blob shapes Caffe's Blob::Reshape refuses ---------------------------------------------------


def packed_dims(*dims: int) -> bytes:
    return len_field(7, len_field(1, b"".join(encode_varint(dim) for dim in dims)))


def floats(count: int) -> bytes:
    return len_field(5, np.arange(count, dtype="<f4").tobytes())


def model_with_blob(blob: bytes) -> bytes:
    """A net of one Parameter layer 'p' holding a second blob ``blob`` (the first is fine)."""
    fine = packed_dims(2) + floats(2)
    layer = len_field(1, b"p") + len_field(2, b"Parameter") + len_field(7, fine) + len_field(7, blob)
    return len_field(100, layer)


@pytest.mark.parametrize(
    ("blob", "complaint"),
    [
        (packed_dims(*[1] * 65), "more than 32 axes"),
        (packed_dims(*[1] * 33), "more than 32 axes"),
        (packed_dims(0, 2**63 - 1, 2**63 - 1), "dimension 9223372036854775807 .* outside 0..2147483647"),
        (packed_dims(2, -3), "dimension -3 .* outside"),
        (packed_dims(65536, 65536), r"holds more than 2147483647 values"),
        (packed_dims(2**31), "dimension 2147483648 .* outside"),
        (packed_dims(0, 2**31 - 1, 2**31 - 1), "empty but larger than numpy can index"),
        (encode_key(1, 0) + encode_varint(-1) + encode_key(4, 0) + b"\x02",
         r"dimension -1 of shape \[-1, 0, 0, 2\]"),
        (encode_key(1, 0) + encode_varint(2**16) + encode_key(2, 0) + encode_varint(2**16),
         "holds more than 2147483647 values"),
    ],
    ids=["65_axes", "33_axes", "int64_max", "negative", "count_overflow", "over_int_max", "empty_beyond_numpy",
         "legacy_negative", "legacy_overflow"],
)
def test_blob_shapes_caffe_refuses_name_layer_blob_and_offset(tmp_path: Path, blob: bytes, complaint: str) -> None:
    data = model_with_blob(blob)
    path = write(tmp_path / "m.caffemodel", data)
    with pytest.raises(CaffeFormatError, match=rf"^{path}: layer 'p' \(#0\) blob 1: .*{complaint}.*"
                       rf"\(byte offset {data.index(blob)}\)$"):
        read_weights(path)
    with pytest.raises(CaffeFormatError, match=complaint):
        read_blob(write(tmp_path / "mean.binaryproto", blob))


def test_shapes_at_caffes_limits_are_read(tmp_path: Path) -> None:
    blob = packed_dims(*[1] * 31, 3) + floats(3)
    assert read_weights(write(tmp_path / "m.caffemodel", model_with_blob(blob)))["p"][1].shape == (1,) * 31 + (3,)
    empty = packed_dims(0, 2**31 - 1, 1000)  # Caffe checks the count only while it is not 0
    assert read_blob(write(tmp_path / "mean.binaryproto", empty)).shape == (0, 2**31 - 1, 1000)


# --- 4. copies sized by the file are charged to the memory budget --------------------------------


def unpacked(field: int, fmt: str, values: list[float]) -> bytes:
    wire_type = 5 if fmt == "<f" else 1
    return b"".join(encode_key(field, wire_type) + struct.pack(fmt, value) for value in values)


@pytest.mark.parametrize(
    "blob",
    [
        packed_dims(1000) + len_field(8, np.zeros(1000, "<f8").tobytes()),
        packed_dims(1000) + unpacked(5, "<f", [0.5] * 1000),
        packed_dims(1000) + unpacked(8, "<d", [0.5] * 1000),
        packed_dims(1000) + len_field(5, np.zeros(500, "<f4").tobytes()) * 2,
    ],
    ids=["double_data", "unpacked_data", "unpacked_double_data", "split_packed_runs"],
)
def test_copies_are_charged_before_they_are_made(tmp_path: Path, blob: bytes) -> None:
    path = write(tmp_path / "m.caffemodel", model_with_blob(blob))
    with memory_budget(limit=3000):
        with pytest.raises(ResourceLimitError, match=rf"^{path}: layer 'p' \(#0\) blob 1: .*memory limit"):
            read_weights(path)
    with memory_budget(limit=20_000):
        assert read_weights(path)["p"][1].shape == (1000,)


def test_a_packed_run_is_a_view_and_costs_no_budget(tmp_path: Path) -> None:
    path = write(tmp_path / "m.caffemodel", model_with_blob(packed_dims(1000) + floats(1000)))
    with memory_budget(limit=16):
        assert read_weights(path)["p"][1][999] == 999


# --- 6. a prototxt saved with a byte order mark ------------------------------------------------------


def test_utf8_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "bom.prototxt"
    path.write_bytes(b"\xef\xbb\xbf" + b'name: "bom"\nlayer { name: "r" type: "ReLU" bottom: "x" top: "x" }\n')
    assert read_prototxt(path).name == "bom"


def test_prototxt_from_a_device_is_charged_as_it_is_read(tmp_path: Path) -> None:
    with memory_budget(limit=4 << 20):
        with pytest.raises(ResourceLimitError, match="/dev/zero: reading the prototxt"):
            read_prototxt("/dev/zero")


# --- 7. unknown fields: one summary per layer type and field, not one warning per layer -------------


def test_unknown_field_in_many_layers_of_a_prototxt_is_one_warning(tmp_path: Path) -> None:
    layers = "".join(
        f'layer {{ name: "c{index}" type: "Convolution" bottom: "x" top: "x"\n'
        f"  convolution_param {{ num_output: 1 kernel_size: 1 fork_option: {index} }} }}\n"
        for index in range(12)
    )
    path = tmp_path / "fork.prototxt"
    path.write_text('input: "x"\n' + layers)
    with pytest.warns(CaffeFormatWarning) as caught:
        read_prototxt(path)
    assert [str(warning.message) for warning in caught] == [
        f"{path}:3:52: unknown field \"fork_option\" in ConvolutionParameter of 12 Convolution layers "
        "('c0', 'c1', 'c2', ...) ignored (not in caffe2torch's schema: a Caffe fork's?)"
    ]


def test_unknown_fields_in_many_layers_of_a_caffemodel_are_one_warning_per_type(tmp_path: Path) -> None:
    fork_fields = encode_key(10001, 0) + b"\x01" + encode_key(10002, 0) + b"\x01"
    relus = [len_field(100, len_field(1, f"r{index}".encode()) + len_field(2, b"ReLU") + fork_fields)
             for index in range(5)]
    conv = len_field(100, len_field(1, b"c") + len_field(2, b"Convolution") + encode_key(10001, 0) + b"\x01")
    path = write(tmp_path / "fork.caffemodel", b"".join(relus) + conv)
    with pytest.warns(CaffeFormatWarning) as caught:
        read_weights(path)
    assert [str(warning.message) for warning in caught] == [
        f"{path}: unknown fields 10001, 10002 in LayerParameter of 5 ReLU layers ('r0', 'r1', 'r2', ...) "
        "ignored (not in caffe2torch's schema: a Caffe fork's?)",
        f"{path}: unknown field 10001 in LayerParameter of Convolution layer 'c' "
        "ignored (not in caffe2torch's schema: a Caffe fork's?)",
    ]


# --- 5. HDF5: nothing read from outside the model file, nothing unwritten, nothing unbudgeted ------

SECRET = np.array([31337.25, -4242.5, 1e-7, 777.0], dtype="<f4")


def hdf5_model(path: Path, fill) -> Path:
    """An HDF5 weights file with a good layer 'conv' and a layer 'ip' whose group ``fill`` populates."""
    with h5py.File(path, "w") as file:
        file.create_group("data/conv").create_dataset("0", data=np.ones((2, 3), "<f4"))
        fill(file.create_group("data/ip"))
    return path


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    """An HDF5 file and a raw file holding SECRET, which no model may make us read."""
    secret_h5 = tmp_path / "secret.h5"
    with h5py.File(secret_h5, "w") as file:
        file.create_dataset("data/ip/0", data=SECRET)
        file.create_dataset("values", data=SECRET)
    secret_raw = tmp_path / "secret.raw"
    secret_raw.write_bytes(SECRET.tobytes())
    return {"h5": secret_h5, "raw": secret_raw}


def assert_refused(path: Path, complaint: str, capfd) -> None:
    with pytest.raises(CaffeFormatError) as raised:
        read_weights(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "'ip'" in message and "\n" not in message
    assert re.search(complaint, message), message
    assert not any(repr(float(value)) in message or str(value) in message for value in SECRET)
    assert capfd.readouterr().err == ""  # HDF5 printed nothing of its own


@pytest.mark.parametrize(
    ("fill", "complaint"),
    [
        (lambda group, secret: group.__setitem__("0", h5py.ExternalLink(str(secret["h5"]), "/values")),
         r"blob data/ip/0 is an external link to .*secret\.h5:/values; refused"),
        (lambda group, secret: group.__setitem__("0", h5py.SoftLink("/data/conv/0")),
         r"blob data/ip/0 is a soft link to /data/conv/0; refused"),
        (lambda group, secret: group.__setitem__("0", h5py.SoftLink("/nowhere")),
         r"soft link to /nowhere; refused"),
        (lambda group, secret: group.create_virtual_dataset("0", virtual_layout(secret["h5"])),
         r"blob 0: a virtual dataset"),
        (lambda group, secret: group.create_dataset("0", (4,), "<f4", external=[(str(secret["raw"]), 0, 16)]),
         r"blob 0: stored in external raw files"),
        (lambda group, secret: group.create_dataset("0", data=SECRET, compression="lzf"),
         r"blob 0: uses filter 32000 \('lzf'\), not one of HDF5's built-in filters"),
    ],
    ids=["external_link", "soft_link", "dangling_soft_link", "virtual_dataset", "external_storage",
         "plugin_filter"],
)
def test_hdf5_that_could_read_outside_the_file_is_refused(tmp_path: Path, secret_files, capfd, fill,
                                                          complaint: str) -> None:
    path = hdf5_model(tmp_path / "model.h5", lambda group: fill(group, secret_files))
    assert_refused(path, complaint, capfd)


def virtual_layout(secret_h5: Path) -> h5py.VirtualLayout:
    layout = h5py.VirtualLayout(shape=(4,), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(secret_h5), "values", shape=(4,))
    return layout


def test_hdf5_layer_or_data_group_behind_an_external_link_is_refused(tmp_path: Path, secret_files) -> None:
    layer_link = tmp_path / "layer_link.h5"
    with h5py.File(layer_link, "w") as file:
        file.create_group("data")["ip"] = h5py.ExternalLink(str(secret_files["h5"]), "/data/ip")
    with pytest.raises(CaffeFormatError, match=r"data/ip is an external link to .*; refused"):
        read_weights(layer_link)
    data_link = tmp_path / "data_link.h5"
    with h5py.File(data_link, "w") as file:
        file["data"] = h5py.ExternalLink(str(secret_files["h5"]), "/data")
    with pytest.raises(CaffeFormatError, match=rf"^{data_link}: data is an external link"):
        read_weights(data_link)


@pytest.mark.parametrize(
    ("fill", "complaint"),
    [
        (lambda group: group.create_dataset("0", (1000, 1000), "<f4"), "declared but never written"),
        (lambda group: group.create_dataset("0", (1000, 1000), "<f4", compression="gzip"),
         "declared but never written"),
        (lambda group: group.create_dataset("0", (1000, 1000), "<f4", chunks=(10, 1000)).__setitem__(0, 1.0),
         "has 40000 bytes stored of the 4000000 its shape needs"),
        (lambda group: group.create_dataset("0", (2**40,), "<f4"), "dimension 1099511627776 .* outside"),
        (lambda group: group.create_dataset("0", (65536, 65536), "<f4"), "holds more than 2147483647 values"),
        (lambda group: group.create_dataset("0", data=h5py.Empty("<f4")), "has no dataspace"),
        (lambda group: group.create_dataset("0", data=np.array([b"text"])), "is not numeric"),
    ],
    ids=["unwritten", "unwritten_compressed", "partly_written", "huge_dim", "count_overflow", "null_dataspace",
         "strings"],
)
def test_hdf5_dataset_that_is_not_a_readable_blob_is_refused(tmp_path: Path, capfd, fill, complaint: str) -> None:
    assert_refused(hdf5_model(tmp_path / "model.h5", fill), complaint, capfd)


def test_hdf5_gzip_bomb_is_refused_before_it_is_decompressed(tmp_path: Path) -> None:
    bomb = lambda group: group.create_dataset("0", data=np.zeros(2**24, "<f4"), compression="gzip")  # noqa: E731
    path = hdf5_model(tmp_path / "bomb.h5", bomb)
    assert path.stat().st_size < 2**20  # 64 MiB of floats in a small file
    with memory_budget(limit=16 << 20):
        with pytest.raises(ResourceLimitError, match=rf"^{path}: layer 'ip' blob 0 would need 64\.. MiB"):
            read_weights(path)
    with memory_budget(limit=256 << 20):
        assert read_weights(path)["ip"][0].shape == (2**24,)


# --- 8. the command line: --max-memory, one line per error and per warning --------------------------


def fork_prototxt(tmp_path: Path) -> Path:
    path = tmp_path / "fork.prototxt"
    path.write_text('input: "x"\ninput_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n' + "".join(
        f'layer {{ name: "r{index}" type: "ReLU" bottom: "x" top: "x" fork_option: 1 }}\n' for index in range(3)
    ))
    return path


def test_cli_shows_format_warnings_as_plain_lines_before_an_error(tmp_path: Path) -> None:
    path = fork_prototxt(tmp_path)
    weights = write(tmp_path / "w.caffemodel", b"\x00")
    result = CliRunner().invoke(main, ["info", str(path), "--weights", str(weights)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f'warning: {path}:3:54: unknown field "fork_option" in LayerParameter of 3 ReLU layers '
        "('r0', 'r1', 'r2') kept for its converter (not in caffe2torch's schema: read with ctx.param, typed "
        "with the fork's --caffe-proto)",
        f"error: {weights}: not a caffemodel, or truncated or corrupt: field number 0 is invalid (byte offset 0)",
    ]


def test_cli_warning_hook_prints_each_format_warning_once_and_leaves_others_alone(capsys) -> None:
    from caffe2torch.cli import _plain_format_warnings

    others = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, *rest: others.append((str(message), category))
        original = warnings.showwarning
        with _plain_format_warnings():
            warnings.warn("model.prototxt: something dropped", CaffeFormatWarning)
            warnings.warn("model.prototxt: something dropped", CaffeFormatWarning)
            warnings.warn("not about a model", UserWarning)
        assert warnings.showwarning is original
    assert capsys.readouterr().err.splitlines() == ["warning: model.prototxt: something dropped"]
    assert others == [("not about a model", UserWarning)]


def test_cli_max_memory_lowers_the_limit_for_the_command_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(MEMORY_LIMIT_VARIABLE, raising=False)
    bomb = tmp_path / "bomb.h5"
    with h5py.File(bomb, "w") as file:
        file.create_dataset("data/r0/0", data=np.zeros(2**22, "<f4"), compression="gzip")
    arguments = ["info", str(fork_prototxt(tmp_path)), "--weights", str(bomb)]
    result = CliRunner().invoke(main, ["--max-memory", "4M", *arguments])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: {bomb}: layer 'r0' blob 0 would need 16.0 MiB, more than the memory limit of 4.0 MiB "
        f"(raise it with --max-memory or {MEMORY_LIMIT_VARIABLE} if the model really is this large)"
    )
    assert MEMORY_LIMIT_VARIABLE not in os.environ  # restored for whoever runs next in this process


def test_cli_rejects_a_bad_max_memory() -> None:
    result = CliRunner().invoke(main, ["--max-memory", "lots", "info", "x.prototxt"])
    assert result.exit_code == 2
    assert "Invalid value for '--max-memory': 'lots' is not a size such as 8G" in result.stderr


def test_a_directory_for_a_model_file_is_a_format_error(tmp_path: Path) -> None:
    for reader in (read_weights, read_blob, read_prototxt):
        with pytest.raises(CaffeFormatError, match=rf"^{tmp_path}: .*directory"):
            reader(tmp_path)


def test_hdf5_names_that_are_not_utf8_or_not_blob_indices_are_refused(tmp_path: Path) -> None:
    bad_layer = hdf5_model(tmp_path / "layer.h5", lambda group: group.parent.create_group(b"\xff\xfe"))
    with pytest.raises(CaffeFormatError, match=r"layer name b'\\xff\\xfe' in data/ is not valid UTF-8"):
        read_weights(bad_layer)
    for key in (b"\xff", "00", "\u0661"):  # not UTF-8; not how Caffe writes 0; an Arabic-Indic digit one
        path = hdf5_model(tmp_path / "blob.h5", lambda group: group.create_dataset(key, data=SECRET))
        with pytest.raises(CaffeFormatError, match=r"layer 'ip': unexpected .* in data/ip"):
            read_weights(path)
