"""The protocol buffer wire format, scanned by hand.

Why not let protobuf parse a caffemodel: it would turn every weight into a Python float (seconds and
gigabytes for a large net) and refuses messages over 2 GiB. Scanning the wire format ourselves over a
memory map lets the readers find where each blob's packed floats lie and hand them out as numpy views,
and parse with protobuf only the small parts of each layer that are not blobs.

Every function works on any buffer indexable by position (``mmap.mmap``, ``bytes``) and takes the
``end`` of the enclosing message, so a field that claims to run past it is an error, never a read
beyond the data. Offsets are absolute positions in the buffer (Python ints: files over 4 GiB work).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
WIRE_TYPE_NAMES = {
    VARINT: "varint",
    I64: "64-bit",
    LEN: "length-delimited",
    SGROUP: "start-group",
    EGROUP: "end-group",
    I32: "32-bit",
}
_FIXED_SIZE = {I64: 8, I32: 4}
_MAX_VARINT_BYTES = 10
_UINT64_MASK = (1 << 64) - 1


class WireError(ValueError):
    """Malformed or truncated wire data; ``offset`` is where the offending record starts."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class Field(NamedTuple):
    """One record of a message: its key, where it starts and ends, and its payload.

    ``payload_start:payload_end`` is the value's bytes for every wire type (the contents for a
    length-delimited field or a group); ``value`` is the decoded number for a varint, else None.
    """

    number: int
    wire_type: int
    start: int
    payload_start: int
    payload_end: int
    end: int
    value: int | None


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; returns (value as unsigned 64-bit, position after it)."""
    if pos < end:
        byte = buf[pos]
        if byte < 0x80:
            return byte, pos + 1
    start = pos
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("varint runs past the end of its message", start)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _UINT64_MASK, pos
        shift += 7
        if shift >= 7 * _MAX_VARINT_BYTES:
            raise WireError("varint longer than 10 bytes", start)


def as_int32(value: int) -> int:
    """A varint read as unsigned 64-bit, reinterpreted as protobuf's int32 (negatives use 10 bytes)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def as_int64(value: int) -> int:
    """A varint read as unsigned 64-bit, reinterpreted as protobuf's int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def read_field(buf, pos: int, end: int) -> Field:
    """Decode the record (key and value) starting at ``pos``; every wire type, groups included."""
    start = pos
    key, pos = read_varint(buf, pos, end)
    number, wire_type = key >> 3, key & 7
    if number == 0:
        raise WireError("field number 0 is invalid", start)
    if wire_type == VARINT:
        value, after = read_varint(buf, pos, end)
        return Field(number, wire_type, start, pos, after, after, value)
    if wire_type == LEN:
        length, pos = read_varint(buf, pos, end)
        if length > end - pos:
            raise WireError(
                f"field {number} (length-delimited) at byte {start} claims {length} bytes "
                f"but only {end - pos} remain",
                start,
            )
        return Field(number, wire_type, start, pos, pos + length, pos + length, None)
    if wire_type in _FIXED_SIZE:
        size = _FIXED_SIZE[wire_type]
        if size > end - pos:
            raise WireError(f"field {number} ({WIRE_TYPE_NAMES[wire_type]}) runs past the end", start)
        return Field(number, wire_type, start, pos, pos + size, pos + size, None)
    if wire_type == SGROUP:
        contents_end, after = _skip_group(buf, pos, end, number)
        return Field(number, wire_type, start, pos, contents_end, after, None)
    if wire_type == EGROUP:
        raise WireError(f"end-group for field {number} without a matching start-group", start)
    raise WireError(f"invalid wire type {wire_type} (field {number})", start)


def _skip_group(buf, pos: int, end: int, number: int) -> tuple[int, int]:
    """Skip a (deprecated) group's fields, nested groups included; returns (its end-group tag, after it).

    Iterative, with the open groups on a stack: a file nesting groups thousands deep costs time
    linear in its size, never Python's recursion limit.
    """
    open_groups = [number]
    while pos < end:
        key, after_key = read_varint(buf, pos, end)
        inner_number, wire_type = key >> 3, key & 7
        if wire_type == SGROUP:
            if inner_number == 0:
                raise WireError("field number 0 is invalid", pos)
            open_groups.append(inner_number)
            pos = after_key
        elif wire_type == EGROUP:
            if inner_number != open_groups[-1]:
                raise WireError(
                    f"end-group for field {inner_number} closes a group of field {open_groups[-1]}", pos
                )
            open_groups.pop()
            if not open_groups:
                return pos, after_key
            pos = after_key
        else:
            pos = read_field(buf, pos, end).end  # not a group: read_field does not come back here
    raise WireError(f"group of field {open_groups[-1]} has no end-group", pos)


def iter_fields(buf, start: int, end: int) -> Iterator[Field]:
    """The records of the message occupying ``buf[start:end]``, in wire order."""
    pos = start
    while pos < end:
        field = read_field(buf, pos, end)
        yield field
        pos = field.end


def encode_varint(value: int) -> bytes:
    """Varint bytes of ``value``; negatives as 64-bit two's complement, as protobuf writes int32/int64."""
    value &= _UINT64_MASK
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_key(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


def encode_len_prefix(number: int, length: int) -> bytes:
    """Key and length of a length-delimited field whose ``length`` payload bytes follow."""
    return encode_key(number, LEN) + encode_varint(length)
