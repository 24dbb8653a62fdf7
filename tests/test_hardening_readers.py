"""Hostile and broken model files: every reader answers with a Caffe2TorchError naming the place.

Each test builds its own small reproducer of a failure that a fuzzing campaign found (a traceback
from deep inside our readers, protobuf, h5py or numpy, a read outside the model file, or an
allocation sized by the file and never checked).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from caffe2torch.caffe_proto.weights import read_blob, read_weights
from caffe2torch.caffe_proto.wire import EGROUP, SGROUP, encode_key, encode_len_prefix, read_field
from caffe2torch.errors import CaffeFormatError


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


def test_nested_groups_in_a_layer_are_a_clean_error(tmp_path: Path) -> None:
    layer = len_field(1, b"deep") + nested_groups(100_000)
    path = write(tmp_path / "m.caffemodel", len_field(100, layer))
    with pytest.raises(CaffeFormatError, match=rf"^{path}: layer 'deep' \(#0\): "):
        read_weights(path)


def test_unclosed_nested_groups_in_a_blob_are_a_clean_error(tmp_path: Path) -> None:
    path = write(tmp_path / "mean.binaryproto", encode_key(99, SGROUP) * 100_000)
    with pytest.raises(CaffeFormatError, match="has no end-group"):
        read_blob(path)
