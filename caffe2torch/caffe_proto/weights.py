"""Caffe weights: read and write binary ``.caffemodel``, HDF5 ``.caffemodel.h5`` and ``.binaryproto`` blobs.

Binary files are memory-mapped and scanned with our own wire-format reader (``wire.py``): each
blob's packed floats become a read-only numpy view of the mapping, so reading a 440 MiB model costs
no more time or memory than reading the file once, and files over protobuf's 2 GiB message limit
work. Only the small non-blob part of each layer is parsed with protobuf. The writers stream the
blob bytes the same way instead of building a message holding every float.
"""

from __future__ import annotations

import math
import mmap
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.caffe_proto.upgrade import (
    UnknownField,
    layer_type_and_name,
    upgrade_net,
    warn_unknown_fields,
)
from caffe2torch.caffe_proto.wire import (
    I32,
    I64,
    LEN,
    VARINT,
    WIRE_TYPE_NAMES,
    WireError,
    as_int32,
    as_int64,
    encode_len_prefix,
    encode_varint,
    iter_fields,
    read_field,
    read_varint,
)
from caffe2torch.errors import CaffeFormatError, InputError, ResourceLimitError
from caffe2torch.files import atomic_output
from caffe2torch.limits import charge, memory_budget
from caffe2torch.mapped import map_file, release_range

__all__ = ["Weights", "is_hdf5", "read_weights", "read_blob", "write_caffemodel", "write_hdf5"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

# NetParameter fields holding layers: current `layer` and legacy V1 `layers`.
_NET_LAYER = 100
_NET_V1_LAYERS = 2

# BlobProto and BlobShape fields.
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4
_BLOB_DATA = 5
_BLOB_SHAPE = 7
_BLOB_DOUBLE_DATA = 8
_SHAPE_DIM = 1
# Blob::Reshape's limits: at most kMaxBlobAxes axes, each dim and the count within an int.
_MAX_BLOB_AXES = 32
_INT_MAX = 2**31 - 1
# One-byte keys of unpacked repeated `data` (fixed32) and `double_data` (fixed64) as old files wrote them.
_UNPACKED_FLOAT_KEY = (_BLOB_DATA << 3) | I32
_UNPACKED_DOUBLE_KEY = (_BLOB_DOUBLE_DATA << 3) | I64


@dataclass(frozen=True)
class _LayerSchema:
    """Where a layer message of one format keeps its name and blobs."""

    descriptor: Descriptor
    name: int
    blobs: int
    nested_v0: int | None = None


_CURRENT_LAYER = _LayerSchema(caffe_pb2.LayerParameter.DESCRIPTOR, name=1, blobs=7)
# V1LayerParameter may wrap a V0 layer.
_V1_LAYER = _LayerSchema(caffe_pb2.V1LayerParameter.DESCRIPTOR, name=4, blobs=6, nested_v0=1)
_V0_LAYER = _LayerSchema(caffe_pb2.V0LayerParameter.DESCRIPTOR, name=1, blobs=50)


class Weights(Mapping[str, list[np.ndarray]]):
    """Layer name -> that layer's blobs (float32, Caffe's shapes), in file order.

    Arrays read from a binary caffemodel are read-only views of the memory-mapped file: do not
    modify or truncate the file while they are alive (``np.array(blob)`` makes an independent copy;
    ``caffe2torch.mapped.copy_into`` one that reads the file instead, leaving no page of it resident,
    which is how the converter copies blobs into parameters).

    Attributes: ``path``; ``net``, the NetParameter stored with the weights with blob payloads
    removed, upgraded to current form (for HDF5, which stores no net, just the layer names);
    ``layer_types``, layer name -> type string where the file says.
    """

    def __init__(
        self,
        path: Path,
        blobs: dict[str, list[np.ndarray]],
        net: caffe_pb2.NetParameter,
        layer_types: dict[str, str],
    ) -> None:
        self.path = path
        self.net = net
        self.layer_types = layer_types
        self._blobs = blobs

    def __getitem__(self, name: str) -> list[np.ndarray]:
        return self._blobs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._blobs)

    def __len__(self) -> int:
        return len(self._blobs)

    def __repr__(self) -> str:
        count = sum(blob.size for blobs in self._blobs.values() for blob in blobs)
        return f"Weights({str(self.path)!r}: {len(self)} layers with blobs, {count} values)"


def read_weights(path: str | os.PathLike) -> Weights:
    """Read a binary ``.caffemodel`` (current, V1 or V0 form) or Caffe's HDF5 weights.

    The format is told by the content (the HDF5 signature), not the file name. Every copy made
    from the file is charged to one memory budget (see caffe2torch.limits).
    """
    path = Path(path)
    mapped = _map_file(path)
    with memory_budget():
        if _is_hdf5(mapped):
            mapped.close()
            return _read_hdf5(path)
        return _CaffemodelReader(path, mapped).read()


def read_blob(path: str | os.PathLike) -> np.ndarray:
    """A single BlobProto (a ``.binaryproto`` mean image) as float32 in Caffe's shape.

    Legacy num/channels/height/width blobs come back 4-D, as Caffe's ``Blob::FromProto`` shapes them.
    """
    path = Path(path)
    mapped = _map_file(path)
    if _is_hdf5(mapped):
        raise CaffeFormatError(f"{path}: an HDF5 file, not a BlobProto (.binaryproto)")
    try:
        with memory_budget():
            return _read_blob(mapped, 0, len(mapped), layer_type=None, blob_index=0)
    except (WireError, _BlobError) as error:
        raise CaffeFormatError(
            f"{path}: not a valid BlobProto (.binaryproto): {error.message} (byte {error.offset})"
        ) from None
    except ResourceLimitError as error:
        raise ResourceLimitError(f"{path}: {error}") from None


def _map_file(path: Path) -> mmap.mmap:
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                raise CaffeFormatError(f"{path}: empty file, not a Caffe model")
            return map_file(file.fileno())
    except OSError as error:
        raise CaffeFormatError(f"{path}: cannot read: {error.strerror or error}") from None


def is_hdf5(path: str | os.PathLike) -> bool:
    """Whether the file is HDF5 rather than a binary protobuf: the one test every reader uses, so a
    file with a user block before its signature is HDF5 to all of them."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size == 0:
            return False
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _is_hdf5(mapped)


def _is_hdf5(mapped: mmap.mmap) -> bool:
    """HDF5's signature sits at byte 0, or after a user block at 512, 1024, 2048, ... bytes."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= len(mapped):
        if mapped[offset : offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return True
        offset = 512 if offset == 0 else offset * 2
    return False


# --- binary caffemodel --------------------------------------------------------------------------


class _BlobError(ValueError):
    """A blob is well formed on the wire but does not make sense (count vs. shape, bad dims)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass
class _ScannedLayer:
    """A layer's place in the file: its name, blob records, and its bytes without the blobs."""

    index: int
    start: int
    v1: bool
    name: str | None = None
    blob_ranges: list[tuple[int, int]] = field(default_factory=list)
    v0_name: str | None = None
    v0_blob_ranges: list[tuple[int, int]] | None = None
    stripped: bytes = b""

    @property
    def display_name(self) -> str:
        name = self.v0_name if self.v0_name is not None else self.name
        return f"layer {name!r} (#{self.index})" if name is not None else f"layer #{self.index}"

    @property
    def blobs(self) -> list[tuple[int, int]]:
        """Caffe's V0 upgrade takes a wrapped V0 layer's blobs and ignores the wrapper's own."""
        return self.v0_blob_ranges if self.v0_blob_ranges is not None else self.blob_ranges


class _CaffemodelReader:
    def __init__(self, path: Path, mapped: mmap.mmap) -> None:
        self.path = path
        self.mapped = mapped
        self.size = len(mapped)

    def read(self) -> Weights:
        net_pieces, layers = self._scan_net()
        net = self._parse_net(net_pieces, layers)
        layer_types = {layer.name: layer.type for layer in net.layer if layer.HasField("type")}
        blobs: dict[str, list[np.ndarray]] = {}
        for layer in layers:
            if not layer.blobs:
                continue
            name = layer.v0_name if layer.v0_name is not None else layer.name or ""
            arrays = []
            for blob_index, (start, end) in enumerate(layer.blobs):
                try:
                    arrays.append(_read_blob(self.mapped, start, end, layer_types.get(name), blob_index))
                except (WireError, _BlobError) as error:
                    raise self._error(error.message, error.offset, layer, blob_index) from None
                except ResourceLimitError as error:
                    where = f"{self.path}: {layer.display_name} blob {blob_index}"
                    raise ResourceLimitError(f"{where}: {error}") from None
            # A name given twice: Caffe copies both in turn, so the later one is what stays.
            blobs[name] = arrays
        # The scan touched the layers' headers (and the kernel mapped the pages around them), copies touched
        # unpacked and double_data blobs: give those pages back. The views stay valid, mapping pages as used.
        release_range(self.mapped)
        return Weights(self.path, blobs, net, layer_types)

    def _error(
        self, message: str, offset: int, layer: _ScannedLayer | None = None, blob_index: int | None = None
    ) -> CaffeFormatError:
        where = ""
        if layer is not None:
            where = f"{layer.display_name}"
            if blob_index is not None:
                where += f" blob {blob_index}"
            where += ": "
        return CaffeFormatError(f"{self.path}: {where}{message} (byte offset {offset})")

    def _scan_net(self) -> tuple[list[bytes], list[_ScannedLayer]]:
        """Walk the NetParameter: collect its non-layer records and scan every layer."""
        net_pieces: list[bytes] = []
        layers: list[_ScannedLayer] = []
        pos = 0
        while pos < self.size:
            try:
                record = read_field(self.mapped, pos, self.size)
            except WireError as error:
                self._raise_top_level(error, pos, layers)
            if record.number in (_NET_LAYER, _NET_V1_LAYERS):
                if record.wire_type != LEN:
                    raise self._error(
                        f"field {record.number} (a layer) has wire type "
                        f"{WIRE_TYPE_NAMES.get(record.wire_type, record.wire_type)}; not a caffemodel",
                        record.start,
                    )
                v1 = record.number == _NET_V1_LAYERS
                layer = _ScannedLayer(index=len(layers), start=record.start, v1=v1)
                schema = _V1_LAYER if v1 else _CURRENT_LAYER
                try:
                    layer.stripped = self._scan_layer(layer, schema, record.payload_start, record.payload_end)
                except WireError as error:
                    raise self._error(error.message, error.offset, layer, self._blob_at(layer, error)) from None
                layers.append(layer)
                net_pieces.append(encode_len_prefix(record.number, len(layer.stripped)) + layer.stripped)
            else:
                try:
                    _check_strings(self.mapped, record, caffe_pb2.NetParameter.DESCRIPTOR)
                except WireError as error:
                    self._raise_top_level(error, pos, layers)
                net_pieces.append(self.mapped[record.start : record.end])
            pos = record.end
        if not layers:
            raise CaffeFormatError(f"{self.path}: holds no layers; not a caffemodel")
        return net_pieces, layers

    def _raise_top_level(self, error: WireError, pos: int, layers: list[_ScannedLayer]) -> NoReturn:
        """Explain a bad top-level record: a truncated layer (with the blob it cut) or garbage."""
        key, after_key = _try_varint(self.mapped, pos, self.size)
        if key is not None and key >> 3 in (_NET_LAYER, _NET_V1_LAYERS) and key & 7 == LEN:
            length, payload_start = _try_varint(self.mapped, after_key, self.size)
            if length is not None and payload_start + length > self.size:
                v1 = key >> 3 == _NET_V1_LAYERS
                layer = _ScannedLayer(index=len(layers), start=pos, v1=v1)
                schema = _V1_LAYER if v1 else _CURRENT_LAYER
                message = (
                    f"truncated: the layer at byte {pos} needs {payload_start + length} bytes, "
                    f"the file has {self.size}"
                )
                try:
                    self._scan_layer(layer, schema, payload_start, self.size)
                except WireError as inner:
                    raise self._error(message, inner.offset, layer, self._blob_at(layer, inner)) from None
                raise self._error(message, self.size, layer)
        after = f" after {layers[-1].display_name}" if layers else ""
        hint = " (it looks like text: a .prototxt?)" if _looks_like_text(self.mapped) else ""
        raise self._error(f"not a caffemodel, or truncated or corrupt{after}: {error.message}{hint}", error.offset)

    @staticmethod
    def _blob_at(layer: _ScannedLayer, error: WireError) -> int | None:
        """The index of the blob whose record an error falls in, if it does."""
        for index, (start, end) in enumerate(layer.blobs):
            if start <= error.offset < end:
                return index
        return None

    def _scan_layer(self, layer: _ScannedLayer, schema: _LayerSchema, start: int, end: int) -> bytes:
        """Record the layer's name and blob ranges; return its records except the blobs."""
        mapped = self.mapped
        kept = bytearray()
        pos = start
        while pos < end:
            try:
                record = read_field(mapped, pos, end)
            except WireError:
                key, _ = _try_varint(mapped, pos, end)
                if key is not None and key >> 3 == schema.blobs:
                    # Name the blob the error cut: the one this record would have been.
                    target = layer.v0_blob_ranges if schema is _V0_LAYER else layer.blob_ranges
                    target.append((pos, end))
                raise
            if record.number == schema.blobs:
                if record.wire_type != LEN:
                    raise WireError(f"blob record has wire type {WIRE_TYPE_NAMES[record.wire_type]}", pos)
                target = layer.v0_blob_ranges if schema is _V0_LAYER else layer.blob_ranges
                target.append((record.payload_start, record.payload_end))
            elif schema.nested_v0 is not None and record.number == schema.nested_v0 and record.wire_type == LEN:
                layer.v0_blob_ranges = []
                nested = self._scan_layer(layer, _V0_LAYER, record.payload_start, record.payload_end)
                kept += encode_len_prefix(record.number, len(nested)) + nested
            else:
                _check_strings(mapped, record, schema.descriptor)
                if record.number == schema.name and record.wire_type == LEN:
                    name = bytes(mapped[record.payload_start : record.payload_end]).decode("utf-8")
                    if schema is _V0_LAYER:
                        layer.v0_name = name
                    else:
                        layer.name = name
                kept += mapped[record.start : record.end]
            pos = record.end
        return bytes(kept)

    def _parse_net(self, net_pieces: list[bytes], layers: list[_ScannedLayer]) -> caffe_pb2.NetParameter:
        """Parse the net without its blobs and bring it to current form as Caffe does on loading."""
        try:
            net = caffe_pb2.NetParameter.FromString(b"".join(net_pieces))
        except DecodeError:
            raise self._locate_decode_error(layers) from None
        _warn_unknown_fields(net, str(self.path))
        return upgrade_net(net, source=str(self.path))

    def _locate_decode_error(self, layers: list[_ScannedLayer]) -> CaffeFormatError:
        """Protobuf does not say where it failed: find the layer whose parameters do not parse."""
        for layer in layers:
            # Parsed inside a net, as in the file, so that protobuf's nesting limit counts the same.
            number = _NET_V1_LAYERS if layer.v1 else _NET_LAYER
            try:
                caffe_pb2.NetParameter.FromString(encode_len_prefix(number, len(layer.stripped)) + layer.stripped)
            except DecodeError:
                return self._error(
                    "corrupt layer parameters (protobuf cannot parse them: malformed, or nested deeper "
                    "than its limit of 100 levels)",
                    layer.start,
                    layer,
                )
        return CaffeFormatError(f"{self.path}: corrupt net parameters outside the layers")


def _unknown_fields(message: Message) -> list[tuple[str, int]]:
    """(message type, field number) of the fields ``message`` or its sub-messages hold that our schema lacks."""
    found = [(message.DESCRIPTOR.name, field.field_number) for field in UnknownFieldSet(message)]
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        for item in value if descriptor.is_repeated else [value]:
            found += _unknown_fields(item)
    return found


def _warn_unknown_fields(net: caffe_pb2.NetParameter, source: str) -> None:
    """Fields that a fork of Caffe added do not stop reading; one summary per layer type says where."""
    occurrences = []
    for layer in [*net.layer, *net.layers]:
        layer_type, layer_name = layer_type_and_name(layer)
        for message, number in sorted(set(_unknown_fields(layer))):
            occurrences.append(UnknownField(str(number), message, layer_type, layer_name))
    warn_unknown_fields(source, occurrences, stacklevel=5)  # the caller of read_weights


def _check_strings(buf, record, descriptor: Descriptor, path: str = "") -> None:
    """Refuse a string field (in ``record`` or the messages inside it) that is not UTF-8.

    Protobuf's parser accepts such bytes in proto2 and hands them out as ``bytes`` where the rest of
    the code expects ``str`` (or raises on access, depending on the implementation); checked here on
    the wire, the error can say which field and at which byte. Blobs hold no strings and are skipped.
    """
    field = descriptor.fields_by_number.get(record.number)
    if field is None or record.wire_type != LEN:
        return  # unknown, or a wire type protobuf keeps as an unknown field
    name = f"{path}.{field.name}" if path else field.name
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            bytes(buf[record.payload_start : record.payload_end]).decode("utf-8")
        except UnicodeDecodeError as error:
            raise WireError(
                f"string field {name} is not valid UTF-8", record.payload_start + error.start
            ) from None
    elif field.message_type is not None and field.message_type is not caffe_pb2.BlobProto.DESCRIPTOR:
        for inner in iter_fields(buf, record.payload_start, record.payload_end):
            _check_strings(buf, inner, field.message_type, name)


def _try_varint(buf, pos: int, end: int) -> tuple[int | None, int]:
    try:
        return read_varint(buf, pos, end)
    except WireError:
        return None, pos


def _looks_like_text(mapped: mmap.mmap) -> bool:
    """Printable text with prototxt punctuation: someone passed the .prototxt for the weights."""
    try:
        text = mapped[:256].decode("utf-8")
    except UnicodeDecodeError:
        return False
    printable = all(char.isprintable() or char in "\t\r\n" for char in text)
    return printable and (":" in text or "{" in text)


def _read_blob(mapped, start: int, end: int, layer_type: str | None, blob_index: int) -> np.ndarray:
    """One BlobProto as a float32 array in Caffe's shape: a view of packed `data`, else a copy.

    `double_data` is converted to float32: Caffe reads it into float nets (``data_vec[i] =
    proto.double_data(i)`` with Dtype float), and every pretrained model is used in a float net.
    As in ``Blob::FromProto``, `double_data` wins when present, and the legacy num/channels/height/
    width, when any of them is set, wins over `shape`.
    """
    legacy: list[int | None] = [None, None, None, None]
    dims: list[int] = []
    floats: list[tuple[int, int] | np.ndarray] = []  # (offset, count) of packed runs, or copies
    doubles: list[tuple[int, int] | np.ndarray] = []
    pos = start
    while pos < end:
        key = mapped[pos]
        if key == _UNPACKED_FLOAT_KEY:
            values, pos = _unpacked_run(mapped, pos, end, key, "<f4")
            floats.append(values)
            continue
        if key == _UNPACKED_DOUBLE_KEY:
            values, pos = _unpacked_run(mapped, pos, end, key, "<f8")
            doubles.append(values)
            continue
        record = read_field(mapped, pos, end)
        number, wire_type = record.number, record.wire_type
        if number in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH):
            _expect(record, VARINT, "num/channels/height/width")
            legacy[number - 1] = as_int32(record.value)
        elif number == _BLOB_SHAPE:
            _expect(record, LEN, "shape")
            # An optional message seen twice is merged: its repeated dims concatenate.
            _read_dims(mapped, record, dims)
        elif number in (_BLOB_DATA, _BLOB_DOUBLE_DATA):
            target, itemsize, name = (
                (floats, 4, "data") if number == _BLOB_DATA else (doubles, 8, "double_data")
            )
            if wire_type == LEN:
                length = record.payload_end - record.payload_start
                if length % itemsize:
                    raise _BlobError(f"packed {name} has {length} bytes, not a multiple of {itemsize}", pos)
                target.append((record.payload_start, length // itemsize))
            elif wire_type == (I32 if number == _BLOB_DATA else I64):
                dtype = "<f4" if number == _BLOB_DATA else "<f8"
                target.append(np.frombuffer(mapped, dtype, 1, record.payload_start).copy())
            else:
                raise _BlobError(f"{name} has wire type {WIRE_TYPE_NAMES[wire_type]}", pos)
        pos = record.end

    if any(value is not None for value in legacy):
        shape = tuple(value or 0 for value in legacy)
        legacy_shape = True
    else:
        shape = tuple(dims)
        legacy_shape = False
    problem = _blob_shape_problem(shape)
    if problem is not None:
        raise _BlobError(problem, start)
    count = math.prod(shape)
    parts, source = (doubles, "double_data") if _total(doubles) > 0 else (floats, "data")
    if _total(parts) != count:
        raise _BlobError(
            f"has {_total(parts)} values in {source} but its shape {list(shape)} needs {count}", start
        )
    if source == "double_data":
        doubles_array = _assemble(mapped, doubles, "<f8")
        charge(4 * count, "double_data converted to float32")
        values = doubles_array.astype(np.float32)
        values.flags.writeable = False
    else:
        values = _assemble(mapped, floats, "<f4")
    if legacy_shape:
        shape = _current_shape(shape, layer_type, blob_index)
    return values.reshape(shape)


def _expect(record, wire_type: int, what: str) -> None:
    if record.wire_type != wire_type:
        raise _BlobError(f"{what} has wire type {WIRE_TYPE_NAMES[record.wire_type]}", record.start)


def _read_dims(mapped, shape_record, dims: list[int]) -> None:
    """Append BlobShape.dim to ``dims``: packed int64 varints (or unpacked, which parsers must accept too).

    Stops at the first dim over Caffe's axis limit, so a shape of a million dims costs nothing.
    """
    for record in iter_fields(mapped, shape_record.payload_start, shape_record.payload_end):
        if record.number != _SHAPE_DIM:
            continue
        if record.wire_type == VARINT:
            dims.append(as_int64(record.value))
        elif record.wire_type == LEN:
            pos = record.payload_start
            while pos < record.payload_end and len(dims) <= _MAX_BLOB_AXES:
                value, pos = read_varint(mapped, pos, record.payload_end)
                dims.append(as_int64(value))
        else:
            raise _BlobError(f"shape dim has wire type {WIRE_TYPE_NAMES[record.wire_type]}", record.start)
        if len(dims) > _MAX_BLOB_AXES:
            raise _BlobError(
                f"shape has more than {_MAX_BLOB_AXES} axes, Caffe's limit (kMaxBlobAxes)", shape_record.start
            )


def _blob_shape_problem(shape: Sequence[int]) -> str | None:
    """Why Caffe's ``Blob::Reshape`` would refuse ``shape``, or None: at most 32 axes, every dim in
    0..INT_MAX, and a count that fits an int (checked as Caffe does, so a 0 dim allows any later one).
    """
    if len(shape) > _MAX_BLOB_AXES:
        return f"shape has {len(shape)} axes, more than Caffe's limit of {_MAX_BLOB_AXES} (kMaxBlobAxes)"
    count = 1
    for dim in shape:
        if not 0 <= dim <= _INT_MAX:
            return f"dimension {dim} of shape {list(shape)} is outside 0..{_INT_MAX}"
        if count != 0 and dim > _INT_MAX // count:
            return f"shape {list(shape)} holds more than {_INT_MAX} values (Caffe's count is an int)"
        count *= dim
    if math.prod(dim for dim in shape if dim) * 4 > sys.maxsize:
        return f"shape {list(shape)} is empty but larger than numpy can index"
    return None


def _unpacked_run(mapped, pos: int, end: int, key: int, dtype: str) -> tuple[np.ndarray, int]:
    """Consecutive unpacked fixed-size records with one-byte key `key`, decoded at numpy speed.

    Old Caffe wrote `data` unpacked: a key byte before every value. The run ends at the first
    record boundary without that key; probing in growing chunks keeps short runs cheap.
    """
    itemsize = np.dtype(dtype).itemsize
    stride = itemsize + 1
    runs: list[np.ndarray] = []
    chunk = 1024
    while True:
        available = (end - pos) // stride
        if available == 0:
            if pos < end and mapped[pos] == key:
                raise WireError(f"unpacked value at byte {pos} runs past the end of its blob", pos)
            break
        take = min(chunk, available)
        records = np.frombuffer(mapped, np.uint8, take * stride, pos).reshape(take, stride)
        is_record = records[:, 0] == key
        length = take if is_record.all() else int(np.argmin(is_record))
        charge(length * itemsize, "unpacked values")
        runs.append(np.ascontiguousarray(records[:length, 1:]).view(dtype).reshape(length))
        pos += length * stride
        if length < take:
            break
        chunk *= 2
    if len(runs) == 1:
        return runs[0], pos
    charge(sum(run.nbytes for run in runs), "unpacked values")
    return np.concatenate(runs), pos


def _total(parts: list[tuple[int, int] | np.ndarray]) -> int:
    return sum(part[1] if isinstance(part, tuple) else part.size for part in parts)


def _assemble(mapped, parts: list[tuple[int, int] | np.ndarray], dtype: str) -> np.ndarray:
    """One packed run stays a zero-copy view; several (legal: repeated fields concatenate) are joined."""
    arrays = [
        np.frombuffer(mapped, dtype, part[1], part[0]) if isinstance(part, tuple) else part
        for part in parts
    ]
    if len(arrays) == 1:
        return arrays[0]
    charge(sum(array.nbytes for array in arrays), "several runs of values joined")
    joined = np.concatenate(arrays) if arrays else np.empty(0, dtype)
    joined.flags.writeable = False
    return joined


def _current_shape(legacy: tuple[int, ...], layer_type: str | None, blob_index: int) -> tuple[int, ...]:
    """The shape Caffe gives a blob stored with the legacy (num, channels, height, width).

    Caffe never reshapes its layers' blobs to the file's: ``Net::CopyTrainedLayersFrom`` accepts a
    legacy blob when ``Blob::ShapeEquals`` holds, i.e. when the layer's own shape (at most 4 axes),
    padded with 1s on the left to 4 axes, equals (num, channels, height, width), and then copies the
    values into the layer's shape. So the true shape is that of the layer type, and for the layer
    types that had blobs when the legacy shape was written (V1/V0: CONVOLUTION, DECONVOLUTION,
    INNER_PRODUCT) we give it here:

    - Convolution / Deconvolution weight: (num, channels, height, width), unchanged;
    - Convolution / Deconvolution bias 1 x 1 x 1 x N -> (N,);
    - InnerProduct weight 1 x 1 x N x K -> (N, K) (K x N with ``transpose``, same rule);
    - InnerProduct bias 1 x 1 x 1 x N -> (N,).

    Blobs of other types, and blobs whose leading legacy dims are not 1 (Caffe would refuse them),
    keep the 4-D shape. This applies to legacy blobs in current-form layers too (a V1 model
    upgraded by Caffe's ``upgrade_net_proto_binary`` keeps them), since Caffe's rule is per blob.
    """
    num, channels, height, width = legacy
    if layer_type in ("Convolution", "Deconvolution") and blob_index == 1:
        if num == channels == height == 1:
            return (width,)
    elif layer_type == "InnerProduct":
        if blob_index == 0 and num == channels == 1:
            return (height, width)
        if blob_index == 1 and num == channels == height == 1:
            return (width,)
    return legacy


# --- HDF5 -----------------------------------------------------------------------------------------


# HDF5's own filters (H5Z_FILTER_DEFLATE ... H5Z_FILTER_SCALEOFFSET); any other is a plugin loaded
# from disk, which a model file must not make us load.
_HDF5_BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset"}


def _read_hdf5(path: Path) -> Weights:
    """Caffe's HDF5 weights: ``data/<layer>/<i>`` datasets, as ``Net::ToHDF5`` writes them.

    Layers come in the order HDF5 lists them: creation order where the file tracks it (ours do),
    else by name (Caffe's files do not track it). Datasets are read into float32 copies.

    Only what the file itself holds is read: links other than hard links, virtual datasets,
    external raw storage and plugin filters are refused before anything is opened or read through
    them (Caffe writes none of them, and each could make us read another file).
    """
    import h5py

    net = caffe_pb2.NetParameter()
    blobs: dict[str, list[np.ndarray]] = {}
    layer_name = None
    try:
        with h5py.File(path, "r") as file:
            data = _open_hard_link(path, file, "data", "data")
            if not isinstance(data, h5py.Group):
                raise CaffeFormatError(
                    f"{path}: HDF5 file without a 'data' group; not Caffe weights "
                    "(Net::ToHDF5 writes data/<layer>/<blob index>)"
                )
            for layer_name in data:  # names only: nothing is opened yet
                if not isinstance(layer_name, str):  # h5py hands out names that are not UTF-8 as bytes
                    raise CaffeFormatError(f"{path}: layer name {layer_name!r} in data/ is not valid UTF-8")
                group = _open_hard_link(path, data, layer_name, f"data/{layer_name}")
                if not isinstance(group, h5py.Group):
                    raise CaffeFormatError(f"{path}: data/{layer_name} is not a group of blobs")
                net.layer.add(name=layer_name)
                arrays = _read_hdf5_layer(path, layer_name, group, h5py)
                if arrays:
                    blobs[layer_name] = arrays
    except CaffeFormatError:
        raise
    except ResourceLimitError as error:
        raise ResourceLimitError(f"{path}: {error}") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        where = f" layer {layer_name!r}" if layer_name is not None else ""
        raise CaffeFormatError(f"{path}:{where} cannot read HDF5: {error}") from None
    return Weights(path, blobs, net, {})


def _open_hard_link(path: Path, group, name: str, where: str):
    """``group[name]`` if it is a hard link (or None if absent); any other link is refused unopened."""
    import h5py

    link = group.get(name, getlink=True)
    if link is None or isinstance(link, h5py.HardLink):
        return None if link is None else group[name]
    if isinstance(link, h5py.ExternalLink):
        kind = f"an external link to {link.filename}:{link.path}"
    elif isinstance(link, h5py.SoftLink):
        kind = f"a soft link to {link.path}"
    else:
        kind = "a user-defined link"
    raise CaffeFormatError(
        f"{path}: {where} is {kind}; refused (Caffe writes only plain groups and datasets, "
        "and a link could read data from outside the model file)"
    )


def _read_hdf5_layer(path: Path, layer_name: str, group, h5py) -> list[np.ndarray]:
    """A layer group's datasets ``0``..``n-1``, which is all that Caffe's loader accepts."""
    by_index: dict[int, np.ndarray] = {}
    for key in group:
        where = f"{path}: layer {layer_name!r} blob {key}"
        unexpected = CaffeFormatError(
            f"{path}: layer {layer_name!r}: unexpected {key!r} in data/{layer_name} "
            "(Caffe stores a layer's blobs as datasets named 0, 1, ...)"
        )
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and str(int(key)) == key):
            raise unexpected
        dataset = _open_hard_link(path, group, key, f"layer {layer_name!r} blob data/{layer_name}/{key}")
        if not isinstance(dataset, h5py.Dataset):
            raise unexpected
        problem = _hdf5_dataset_problem(dataset, h5py)
        if problem is not None:
            raise CaffeFormatError(f"{where}: {problem}")
        charge(_hdf5_read_bytes(dataset, h5py), f"layer {layer_name!r} blob {key}")
        array = np.asarray(dataset[()], dtype=np.float32)
        array.flags.writeable = False
        by_index[int(key)] = array
    for index in range(len(by_index)):
        if index not in by_index:
            raise CaffeFormatError(
                f"{path}: layer {layer_name!r}: blob {index} is missing but blob "
                f"{max(by_index)} is there (Caffe leaves out weight-shared blobs; not supported)"
            )
    return [by_index[index] for index in range(len(by_index))]


def _hdf5_dataset_problem(dataset, h5py) -> str | None:
    """Why a dataset must not be read as a blob, or None; looks at its metadata only."""
    plist = dataset.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        return "a virtual dataset (its data would come from other files); refused"
    if plist.get_external_count() > 0:
        return "stored in external raw files, outside the model file; refused"
    for index in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(index)
        if code not in _HDF5_BUILTIN_FILTERS:
            label = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
            return f"uses filter {code} ({label!r}), not one of HDF5's built-in filters; refused"
    if dataset.dtype.kind not in "fiu":
        return f"dtype {dataset.dtype} is not numeric"
    if dataset.shape is None:
        return "has no dataspace (an HDF5 null dataset), not a blob"
    problem = _blob_shape_problem(dataset.shape)
    if problem is not None:
        return problem
    expected = math.prod(dataset.shape) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if expected and stored == 0:
        return "declared but never written (no storage allocated); refused rather than read as fill values"
    if plist.get_nfilters() == 0 and stored < expected:
        return f"has {stored} bytes stored of the {expected} its shape needs (partly written)"
    return None


def _hdf5_read_bytes(dataset, h5py) -> int:
    """Memory a read takes: the data as stored type, its float32 copy, and one decompressed chunk."""
    count = math.prod(dataset.shape)
    total = count * dataset.dtype.itemsize
    if dataset.dtype != np.float32:
        total += 4 * count
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters() > 0 and plist.get_layout() == h5py.h5d.CHUNKED:
        total += math.prod(plist.get_chunk()) * dataset.dtype.itemsize
    return total


# --- writers ----------------------------------------------------------------------------------------


def write_caffemodel(
    net: caffe_pb2.NetParameter,
    weights: Mapping[str, Sequence[np.ndarray]],
    path: str | os.PathLike,
    *,
    force: bool = False,
) -> None:
    """Write a binary caffemodel as Caffe's ``Net::ToProto`` does.

    Every NetParameter field of `net` is kept (Caffe's own ``ToProto`` writes just the name and
    the layers, after turning legacy inputs into an Input layer); each layer gets the blobs
    ``weights[layer.name]``, each written as Caffe writes it: packed float32 `data` followed by
    `shape` (protobuf's field order). Blob bytes are streamed from the arrays, never built into a
    protobuf message, so large models write at disk speed and sizes over 2 GiB work.
    """
    path = Path(path)
    net = _current_form(net, path)
    blobs_by_layer = _check_weights(net, weights, path)
    head = caffe_pb2.NetParameter()
    head.CopyFrom(net)
    head.ClearField("layer")
    with atomic_output(path, force=force) as temporary:
        with open(temporary, "wb") as file:
            file.write(head.SerializeToString(deterministic=True))
            for layer in net.layer:
                _write_layer(file, layer, blobs_by_layer.get(layer.name, []))


def write_hdf5(
    net: caffe_pb2.NetParameter,
    weights: Mapping[str, Sequence[np.ndarray]],
    path: str | os.PathLike,
    *,
    force: bool = False,
) -> None:
    """Write Caffe's HDF5 weights as ``Net::ToHDF5`` does: a group ``data/<layer>`` for every
    layer of the net and float32 datasets ``0``, ``1``, ... for its blobs.

    Caffe adds a ``diff`` group only when asked to snapshot gradients, so there is none here.
    Groups track creation order so that reading gives the layers back in net order.
    """
    import h5py

    path = Path(path)
    net = _current_form(net, path)
    blobs_by_layer = _check_weights(net, weights, path)
    for layer in net.layer:
        if "/" in layer.name:
            raise InputError(
                f"{path}: layer name {layer.name!r} contains '/', which Caffe's HDF5 weights "
                "cannot hold (Caffe's own H5Gcreate of it fails); write a binary caffemodel instead"
            )
    with atomic_output(path, force=force) as temporary:
        with h5py.File(temporary, "w") as file:
            data = file.create_group("data", track_order=True)
            for layer in net.layer:
                if layer.name in data:
                    continue
                group = data.create_group(layer.name, track_order=True)
                for index, array in enumerate(blobs_by_layer.get(layer.name, [])):
                    group.create_dataset(str(index), data=array)


def _current_form(net: caffe_pb2.NetParameter, path: Path) -> caffe_pb2.NetParameter:
    if not isinstance(net, caffe_pb2.NetParameter):
        raise InputError(f"{path}: expected a caffe_pb2.NetParameter, got {type(net).__name__}")
    return upgrade_net(net, source=str(path)) if len(net.layers) > 0 else net


def _check_weights(
    net: caffe_pb2.NetParameter, weights: Mapping[str, Sequence[np.ndarray]], path: Path
) -> dict[str, list[np.ndarray]]:
    """Every weight must belong to a layer of the net; arrays become contiguous little-endian float32."""
    layer_names = {layer.name for layer in net.layer}
    unknown = [name for name in weights if name not in layer_names]
    if unknown:
        raise InputError(f"{path}: weights for layers the net does not have: {', '.join(map(repr, unknown))}")
    prepared: dict[str, list[np.ndarray]] = {}
    for name, arrays in weights.items():
        prepared[name] = []
        for index, array in enumerate(arrays):
            array = np.asarray(array)
            if array.dtype.kind not in "fiu":
                raise InputError(f"{path}: layer {name!r} blob {index}: dtype {array.dtype} is not real numbers")
            prepared[name].append(np.asarray(array, dtype="<f4", order="C"))
    return prepared


def _write_layer(file, layer: caffe_pb2.LayerParameter, arrays: list[np.ndarray]) -> None:
    """One `layer` record: its parameters with `blobs` at their place in field order (7)."""
    header = caffe_pb2.LayerParameter()
    header.CopyFrom(layer)
    header.ClearField("blobs")
    encoded = header.SerializeToString(deterministic=True)
    split = next(
        (record.start for record in iter_fields(encoded, 0, len(encoded)) if record.number > _CURRENT_LAYER.blobs),
        len(encoded),
    )
    blob_records = [_blob_record(array) for array in arrays]
    length = len(encoded) + sum(len(prefix) + array.nbytes + len(suffix) for prefix, array, suffix in blob_records)
    file.write(encode_len_prefix(_NET_LAYER, length))
    file.write(encoded[:split])
    for prefix, array, suffix in blob_records:
        file.write(prefix)
        if array.nbytes:
            file.write(memoryview(array.reshape(-1)).cast("B"))
        file.write(suffix)
    file.write(encoded[split:])


def _blob_record(array: np.ndarray) -> tuple[bytes, np.ndarray, bytes]:
    """A BlobProto as Blob::ToProto writes it: (key, length and data key) + floats + shape record."""
    dims = b"".join(encode_varint(dim) for dim in array.shape)
    shape = encode_len_prefix(_SHAPE_DIM, len(dims)) + dims if dims else b""
    shape_record = encode_len_prefix(_BLOB_SHAPE, len(shape)) + shape if array.ndim else b""
    data_prefix = encode_len_prefix(_BLOB_DATA, array.nbytes) if array.nbytes else b""
    blob_length = len(data_prefix) + array.nbytes + len(shape_record)
    return encode_len_prefix(_CURRENT_LAYER.blobs, blob_length) + data_prefix, array, shape_record
