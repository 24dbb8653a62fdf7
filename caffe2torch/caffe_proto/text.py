"""Read Caffe's text prototxt into an upgraded `NetParameter`, with errors that point at file:line:col.

Forks of Caffe add their own fields. Caffe itself would refuse such a file; we read it anyway.
A field of a layer that the schema lacks is kept, with its text, in the layer's
``caffe2torch_kept_field`` list, so that a converter can still read it (``LayerContext.param``); one
warning per layer type and field says so. Unknown fields elsewhere (of the net, or nested in a known
parameter message) are dropped with such a warning. A user's fork ``caffe.proto`` (see schema.py)
makes them known. Everything else that Caffe's parser rejects (bad syntax, unknown enum values,
values of the wrong type, missing required fields) is a CaffeFormatError.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import text_format

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.caffe_proto.schema import Schema, active_schema, keep_field, to_builtin
from caffe2torch.caffe_proto.upgrade import (
    CaffeFormatWarning,
    UnknownField,
    layer_type_and_name,
    upgrade_net,
    warn_unknown_fields,
)
from caffe2torch.errors import CaffeFormatError
from caffe2torch.limits import charge

# Deeper nesting than any real net (which nests 4 levels) means a hostile or broken file.
_MAX_DEPTH = 64
_READ_CHUNK = 1 << 20


def read_prototxt(path: str | os.PathLike[str], schema: Schema | None = None) -> caffe_pb2.NetParameter:
    """Read a .prototxt net, upgraded to the current `layer` form (see upgrade.py).

    ``schema``: a fork's schema (:func:`caffe2torch.caffe_proto.load_schema`) to parse with; by default the
    one :func:`~caffe2torch.caffe_proto.schema.using_schema` made active, else the built-in one."""
    filename = os.fspath(path)
    try:
        data = _read_charged(filename)
    except FileNotFoundError:
        raise CaffeFormatError(f"{filename}: no such file") from None
    except IsADirectoryError:
        raise CaffeFormatError(f"{filename}: is a directory, not a prototxt file") from None
    except OSError as error:
        raise CaffeFormatError(f"{filename}: cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CaffeFormatError(
            f"{filename}: not a text prototxt (byte {error.start} is not UTF-8; "
            "a binary .caffemodel is read with read_weights)"
        ) from None
    # Editors on Windows start UTF-8 files with a byte order mark; protobuf's tokenizer does not skip it.
    return parse_prototxt(text.removeprefix("\ufeff"), filename=filename, schema=schema)


def _read_charged(filename: str) -> bytes:
    """The file's bytes, charged to the memory budget before they are read.

    A pipe or a device has no size to charge first: it is read in chunks, each charged, so that
    ``/dev/zero`` stops at the limit.
    """
    with open(filename, "rb") as file:
        status = os.fstat(file.fileno())
        if stat.S_ISREG(status.st_mode):
            charge(status.st_size, f"{filename}: reading the prototxt")
            return file.read()
        chunks = []
        while True:
            charge(_READ_CHUNK, f"{filename}: reading the prototxt")
            chunk = file.read(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def parse_prototxt(text: str, filename: str = "<string>", schema: Schema | None = None) -> caffe_pb2.NetParameter:
    """Parse prototxt text (as read_prototxt does a file); `filename` is used in messages."""
    schema = schema if schema is not None else active_schema()
    net_class = schema.net_class if schema is not None else caffe_pb2.NetParameter
    net = net_class()
    unknown_fields: list[_UnknownField] = []
    try:
        text_format.Parse(text, net, max_recursion_depth=_MAX_DEPTH)
    except text_format.ParseError as strict_error:
        # Either fields unknown to the schema (kept or tolerated) or a real error: scan to tell which.
        try:
            unknown_fields = _find_unknown_fields(text, net_class.DESCRIPTOR)
        except text_format.ParseError as scan_error:
            raise _format_error(filename, text, scan_error) from None
        if not unknown_fields:
            raise _format_error(filename, text, strict_error) from None
        net = net_class()
        try:
            text_format.Parse(text, net, allow_unknown_field=True, max_recursion_depth=_MAX_DEPTH)
        except text_format.ParseError as error:
            raise _format_error(filename, text, error) from None
    if not net.IsInitialized():
        missing = ", ".join(net.FindInitializationErrors())
        raise CaffeFormatError(f"{filename}: required fields are missing: {missing}")
    kept = _keep_layer_fields(text, unknown_fields)
    net = to_builtin(net, filename, schema) if schema is not None else net
    for index, fields in kept.items():
        for field in fields:
            keep_field(net.layer[index], field, filename, schema)
    upgraded = upgrade_net(net, source=filename)
    if len(upgraded.layer) == 0:
        top_level = sorted({field.name for field in unknown_fields if field.layer_field is None})
        hint = f" (it has fields {', '.join(top_level)}: is it a solver?)" if top_level else ""
        raise CaffeFormatError(f"{filename}: defines no layers{hint}")
    _warn_unknown(filename, net, unknown_fields)
    return upgraded


def _keep_layer_fields(text: str, unknown_fields: list[_UnknownField]) -> dict[int, list[caffe_pb2.KeptField]]:
    """The unknown fields directly in a (current-form) layer, with their text, by layer index."""
    kept: dict[int, list[caffe_pb2.KeptField]] = {}
    starts = _line_offsets(text)
    for field in unknown_fields:
        if field.layer_field != "layer" or field.message_type != "caffe.LayerParameter":
            continue
        begin = starts[field.line - 1] + field.column - 1
        end = len(text) if field.end is None else starts[field.end[0] - 1] + field.end[1] - 1
        kept.setdefault(field.layer_index, []).append(caffe_pb2.KeptField(
            name=field.name, text=text[begin:end].rstrip().rstrip(",;"), line=field.line, column=field.column))
    return kept


def _line_offsets(text: str) -> list[int]:
    """Offset of each line's first character (tokenizer positions are line, column)."""
    offsets = [0]
    for line in text.split("\n"):
        offsets.append(offsets[-1] + len(line) + 1)
    return offsets


def _warn_unknown(filename: str, net: Any, unknown_fields: list[_UnknownField]) -> None:
    """One warning per unknown net field, and per (layer type, field) for the fields in layers."""
    in_layers: list[UnknownField] = []
    warned_net_fields: set[str] = set()
    for field in unknown_fields:
        location = f"{field.line}:{field.column}"
        if field.layer_field is None:
            if field.name not in warned_net_fields:
                warned_net_fields.add(field.name)
                warnings.warn(
                    f'{filename}:{location}: unknown net field "{field.name}" ignored '
                    "(not in caffe2torch's schema)",
                    CaffeFormatWarning,
                    stacklevel=3,  # the caller of parse_prototxt
                )
            continue
        layer = getattr(net, field.layer_field)[field.layer_index]
        layer_type, layer_name = layer_type_and_name(layer)
        message = field.message_type.removeprefix("caffe.")
        kept = field.layer_field == "layer" and message == "LayerParameter"
        if kept and field.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name:
            continue  # unknown to the fork's schema only: read as Caffe's (keep_field)
        in_layers.append(UnknownField(f'"{field.name}"', message, layer_type, layer_name, location, kept=kept))
    warn_unknown_fields(filename, in_layers, stacklevel=3)


def _format_error(filename: str, text: str, error: text_format.ParseError) -> CaffeFormatError:
    """One clean line: file:line:col: what is wrong (no echo of the line, no protobuf package)."""
    line, column = error.GetLine(), error.GetColumn()
    message = str(error)
    if line is None:
        return CaffeFormatError(f"{filename}: {message}")
    location = f"{line}:{column}" if column is not None else f"{line}"
    message = message.removeprefix(f"{location} : ")
    # The tokenizer quotes the line it is on (empty at the end of the text); drop the echo.
    lines = text.split("\n")
    echoed_line = lines[line - 1] if 0 < line <= len(lines) else ""
    for echo in (f"'{echoed_line}': ", "'': "):
        message = message.removeprefix(echo)
    message = message.replace('"caffe.', '"')
    return CaffeFormatError(f"{filename}:{location}: {message}")


@dataclass(frozen=True)
class _UnknownField:
    """A field our schema lacks, where it is, and which top-level entry (layer) holds it."""

    name: str
    line: int
    column: int
    message_type: str
    layer_field: str | None  # "layer" or "layers" (V1/V0) when inside a layer, else None
    layer_index: int
    end: tuple[int, int] | None = None  # line, column of the token after the field; None: the end of the text


def _find_unknown_fields(text: str, net_descriptor: _descriptor.Descriptor) -> list[_UnknownField]:
    """Walk the text with the schema, as protobuf's parser does, listing the fields it lacks."""
    tokenizer = text_format.Tokenizer(text.split("\n"))
    found: list[_UnknownField] = []
    _Scanner(tokenizer, found, net_descriptor).scan_net()
    return found


class _Scanner:
    """Follows the text-format grammar (that of text_format._Parser) without building messages."""

    def __init__(self, tokenizer: text_format.Tokenizer, found: list[_UnknownField],
                 net_descriptor: _descriptor.Descriptor) -> None:
        self.tokenizer = tokenizer
        self.found = found
        self.net_descriptor = net_descriptor
        self.layer_counts = {"layer": 0, "layers": 0}

    def scan_net(self) -> None:
        while not self.tokenizer.AtEnd():
            self._field(self.net_descriptor, layer_field=None, layer_index=0)

    def _position(self) -> tuple[int, int]:
        probe = self.tokenizer.ParseError("")
        return probe.GetLine(), probe.GetColumn()

    def _field(
        self,
        owner: _descriptor.Descriptor | None,
        layer_field: str | None,
        layer_index: int,
        depth: int = 1,
    ) -> None:
        """Consume one `name: value` or `name { ... }`."""
        tokenizer = self.tokenizer
        if depth > _MAX_DEPTH:
            raise tokenizer.ParseError(f"messages nested deeper than {_MAX_DEPTH} levels")
        line, column = self._position()
        if tokenizer.TryConsume("["):
            name = "[" + tokenizer.ConsumeIdentifier()
            while tokenizer.TryConsume(".") or tokenizer.TryConsume("/"):
                name += "." + tokenizer.ConsumeIdentifier()
            tokenizer.Consume("]")
            name += "]"
            field = None
        else:
            name = tokenizer.ConsumeIdentifierOrNumber()
            field = owner.fields_by_name.get(name) if owner is not None else None
        if owner is None or field is None:
            self._skip_contents(depth)
        else:
            self._known_contents(field, layer_field, layer_index, depth)
        if not tokenizer.TryConsume(","):
            tokenizer.TryConsume(";")
        if owner is not None and field is None:
            end = None if tokenizer.AtEnd() else self._position()
            self.found.append(
                _UnknownField(name, line, column, owner.full_name, layer_field, layer_index, end)
            )

    def _known_contents(
        self,
        field: _descriptor.FieldDescriptor,
        layer_field: str | None,
        layer_index: int,
        depth: int,
    ) -> None:
        tokenizer = self.tokenizer
        is_message = field.message_type is not None
        if is_message:
            tokenizer.TryConsume(":")
        else:
            tokenizer.Consume(":")
        if field.is_repeated and tokenizer.TryConsume("["):
            if tokenizer.TryConsume("]"):
                return
            while True:
                self._value(field, layer_field, layer_index, depth)
                if tokenizer.TryConsume("]"):
                    return
                tokenizer.Consume(",")
        else:
            self._value(field, layer_field, layer_index, depth)

    def _value(
        self,
        field: _descriptor.FieldDescriptor,
        layer_field: str | None,
        layer_index: int,
        depth: int,
    ) -> None:
        if field.message_type is None:
            self._skip_scalar()
            return
        if field.containing_type is self.net_descriptor and field.name in self.layer_counts:
            # Each net-level layer entry is the context of the unknown fields found inside it.
            layer_field, layer_index = field.name, self.layer_counts[field.name]
            self.layer_counts[field.name] += 1
        self._message(field.message_type, layer_field, layer_index, depth)

    def _message(
        self,
        message_type: _descriptor.Descriptor | None,
        layer_field: str | None,
        layer_index: int,
        depth: int,
    ) -> None:
        """`{ fields }` or `< fields >`; message_type None skips the body without recording."""
        tokenizer = self.tokenizer
        end = ">" if tokenizer.TryConsume("<") else None
        if end is None:
            tokenizer.Consume("{")
            end = "}"
        while not tokenizer.TryConsume(end):
            if tokenizer.AtEnd():
                raise tokenizer.ParseError(f'Expected "{end}".')
            self._field(message_type, layer_field, layer_index, depth + 1)

    def _skip_contents(self, depth: int) -> None:
        """The value of an unknown field: a scalar, a [list], or a message (text_format's rules)."""
        tokenizer = self.tokenizer
        if tokenizer.TryConsume(":") and not tokenizer.LookingAt("{") and not tokenizer.LookingAt("<"):
            if tokenizer.TryConsume("["):
                if tokenizer.TryConsume("]"):
                    return
                while True:
                    if tokenizer.LookingAt("{") or tokenizer.LookingAt("<"):
                        self._message(None, None, 0, depth)
                    else:
                        self._skip_scalar()
                    if tokenizer.TryConsume("]"):
                        return
                    tokenizer.Consume(",")
            else:
                self._skip_scalar()
        else:
            self._message(None, None, 0, depth)

    def _skip_scalar(self) -> None:
        """A string (adjacent strings concatenate), identifier, integer or float."""
        tokenizer = self.tokenizer
        if not (
            tokenizer.TryConsumeByteString()
            or tokenizer.TryConsumeIdentifier()
            or tokenizer.TryConsumeInteger()
            or tokenizer.TryConsumeFloat()
        ):
            raise tokenizer.ParseError(f"Expected a value, got {tokenizer.token or 'end of text'}.")
