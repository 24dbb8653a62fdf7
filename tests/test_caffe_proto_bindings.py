"""The committed caffe_pb2.py must be exactly what the pinned protoc makes of caffe.proto."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor

from caffe2torch.caffe_proto import caffe_pb2, regenerate


def test_committed_bindings_match_regenerated_bytes() -> None:
    try:
        fresh = regenerate.fresh_bindings()
    except regenerate.RegenerationError as error:
        pytest.fail(str(error))
    assert regenerate.BINDINGS_FILE.read_bytes() == fresh, (
        "caffe_pb2.py is stale: run python -m caffe2torch.caffe_proto.regenerate"
    )


def test_check_mode_reports_current_bindings() -> None:
    assert regenerate.main(["--check"]) == 0


@pytest.mark.parametrize(
    ("message", "field", "number", "field_type"),
    [
        # A sample of Caffe's wire layout that real files depend on.
        (caffe_pb2.BlobProto, "data", 5, descriptor.FieldDescriptor.TYPE_FLOAT),
        (caffe_pb2.BlobProto, "double_data", 8, descriptor.FieldDescriptor.TYPE_DOUBLE),
        (caffe_pb2.BlobProto, "num", 1, descriptor.FieldDescriptor.TYPE_INT32),
        (caffe_pb2.BlobShape, "dim", 1, descriptor.FieldDescriptor.TYPE_INT64),
        (caffe_pb2.NetParameter, "layer", 100, descriptor.FieldDescriptor.TYPE_MESSAGE),
        (caffe_pb2.NetParameter, "layers", 2, descriptor.FieldDescriptor.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "blobs", 7, descriptor.FieldDescriptor.TYPE_MESSAGE),
        (caffe_pb2.LayerParameter, "batch_norm_param", 139, descriptor.FieldDescriptor.TYPE_MESSAGE),
        (caffe_pb2.V1LayerParameter, "blobs", 6, descriptor.FieldDescriptor.TYPE_MESSAGE),
        (caffe_pb2.V1LayerParameter, "param", 1001, descriptor.FieldDescriptor.TYPE_STRING),
        (caffe_pb2.V0LayerParameter, "blobs", 50, descriptor.FieldDescriptor.TYPE_MESSAGE),
    ],
)
def test_wire_layout_matches_caffe(message, field: str, number: int, field_type: int) -> None:
    field_descriptor = message.DESCRIPTOR.fields_by_name[field]
    assert (field_descriptor.number, field_descriptor.type) == (number, field_type)


def test_packed_blob_payloads() -> None:
    """Caffe writes blob data packed; our reader's zero-copy path relies on it."""
    for name in ("data", "diff", "double_data", "double_diff"):
        assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name[name].is_packed
