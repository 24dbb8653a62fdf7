"""Fork schemas: a user's own ``caffe.proto``, and the fork fields a file holds, read by name.

Caffe forks add parameter messages to ``LayerParameter`` (``upsample_param``, ``permute_param``, ...).
The built-in schema knows the widely used ones (see caffe.proto, "Fork layers"); for the rest a user
names their fork's ``caffe.proto`` (:func:`load_schema`; ``caffe2torch.load(..., caffe_proto=FILE)``,
``--caffe-proto FILE``). The net is read with their schema and carried into the built-in one by field
*name* (through text), so a fork that numbers a field differently from Caffe, or reuses a number Caffe
gives another field (DeepLab's interp_param = 143, Caffe's input_param), is read right on both sides.
Each layer also keeps its bytes in the fork's schema (``caffe2torch_fork_layer``), from which a converter
reads the fork's fields typed: :func:`layer_param`.

:func:`layer_param` reads a layer's field by name: typed when a schema knows it, else an
:class:`UntypedMessage` of the text the prototxt gave (fields no schema knows are kept, not dropped).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.message import DecodeError, Message

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.errors import CaffeFormatError, InputError

__all__ = ["Schema", "UntypedMessage", "active_schema", "layer_param", "load_schema", "parse_net_binary",
           "keep_field", "to_builtin", "using_schema"]

_MAX_SCHEMA_BYTES = 16 << 20  # a caffe.proto is some 100 KB

# Fork fields whose number BVLC gives to another field: in a binary file the fork's value arrives under the
# BVLC field, and is read back by layer type. (layer type, BVLC field holding it, built-in fork field)
BORROWED_NUMBERS = (
    ("Interp", "input_param", "interp_param"),  # DeepLab v2 / PSPNet: interp_param = 143
    ("BN", "embed_param", "bn_param"),  # yjxiong/caffe, PSPNet: bn_param = 137
)


@dataclass(frozen=True)
class Schema:
    """A fork's schema: its NetParameter and LayerParameter classes."""

    source: str
    net_class: type[Message]
    layer_class: type[Message]


def load_schema(path: str | os.PathLike[str]) -> Schema:
    """A fork's ``caffe.proto`` (compiled with protoc, from the ``grpcio-tools`` package), or a
    ``FileDescriptorSet`` made by ``protoc --include_imports --descriptor_set_out`` (needs nothing more)."""
    source = os.fspath(path)
    try:
        size = os.path.getsize(source)
    except OSError as error:
        raise InputError(f"{source}: cannot read the schema: {error.strerror or error}") from None
    if size > _MAX_SCHEMA_BYTES:
        raise InputError(f"{source}: {size} bytes is not a caffe.proto (at most {_MAX_SCHEMA_BYTES})")
    if source.endswith(".proto"):
        descriptor_set = _compile(source)
    else:
        descriptor_set = descriptor_pb2.FileDescriptorSet()
        try:
            descriptor_set.ParseFromString(Path(source).read_bytes())
        except DecodeError:
            raise InputError(f"{source}: neither a .proto file nor a protoc descriptor set") from None
    pool = descriptor_pool.DescriptorPool()
    try:
        for file in descriptor_set.file:
            pool.Add(file)
        net_descriptor = pool.FindMessageTypeByName("caffe.NetParameter")
        layer_descriptor = pool.FindMessageTypeByName("caffe.LayerParameter")
    except KeyError as error:
        raise InputError(f"{source}: not a Caffe schema (it defines no {error.args[0]})") from None
    except TypeError as error:
        raise InputError(f"{source}: not a usable schema: {error}") from None
    return Schema(source, message_factory.GetMessageClass(net_descriptor),
                  message_factory.GetMessageClass(layer_descriptor))


def _compile(source: str) -> descriptor_pb2.FileDescriptorSet:
    try:
        import grpc_tools
    except ImportError:
        raise InputError(f"{source}: compiling a .proto needs protoc: pip install 'caffe2torch[proto]' (or pass "
                         "a descriptor set made by protoc --include_imports --descriptor_set_out)") from None
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "schema.pb"
        command = [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={Path(source).parent}",
                   f"--proto_path={well_known}", "--include_imports", f"--descriptor_set_out={out}", source]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InputError(f"{source}: protoc rejected the schema:\n{result.stderr.strip()}")
        descriptor_set = descriptor_pb2.FileDescriptorSet()
        descriptor_set.ParseFromString(out.read_bytes())
    return descriptor_set


_ACTIVE: list[Schema] = []


def active_schema() -> Schema | None:
    """The schema nets are read with when none is named: the innermost :func:`using_schema`."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def using_schema(schema: Schema | str | os.PathLike[str] | None) -> Iterator[Schema | None]:
    """Read nets, and their layers' fields, with ``schema`` (a Schema or a path for load_schema) inside the
    block; None changes nothing."""
    if schema is None:
        yield active_schema()
        return
    loaded = schema if isinstance(schema, Schema) else load_schema(schema)
    _ACTIVE.append(loaded)
    try:
        yield loaded
    finally:
        _ACTIVE.pop()


def to_builtin(net: Message, source: str, schema: Schema) -> caffe_pb2.NetParameter:
    """``net`` (a message of ``schema``) in the built-in schema, field by field by name; each layer keeps its
    bytes in the fork's schema (blobs left out: the weights are read separately)."""
    stripped = schema.net_class()
    stripped.CopyFrom(net)
    fork_layers = []
    for layer in stripped.layer:
        layer.ClearField("blobs")
        fork_layers.append(layer.SerializeToString())
    for layer in getattr(stripped, "layers", ()):
        layer.ClearField("blobs")
    builtin = caffe_pb2.NetParameter()
    try:
        # Fields only the fork knows are read from the fork's bytes; the built-in reading skips them.
        text_format.Parse(text_format.MessageToString(stripped), builtin, allow_unknown_field=True)
    except text_format.ParseError as error:
        raise CaffeFormatError(f"{source}: the fork's schema and Caffe's disagree on a field's type or values, "
                               f"so it cannot be read as Caffe's: {error}") from None
    for layer, fork_layer in zip(builtin.layer, fork_layers):
        layer.caffe2torch_fork_layer = fork_layer
    return builtin


def keep_field(layer: caffe_pb2.LayerParameter, field: caffe_pb2.KeptField, source: str,
               schema: Schema | None) -> None:
    """Keep a field the reading schema could not place in ``layer``: one the built-in schema knows by name
    is set there (a fork's schema may lack a field Caffe has); one no schema knows is kept as text."""
    if field.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name:
        try:
            text_format.Merge(field.text, layer, allow_unknown_field=True)
        except text_format.ParseError as error:
            where = f"{source}:{field.line}" if field.line else source
            raise CaffeFormatError(f"{where}: layer {layer.name!r}: {field.name}: {error}") from None
        return
    layer.caffe2torch_kept_field.append(field)


def parse_net_binary(data: bytes, source: str = "<bytes>", schema: Schema | None = None) -> caffe_pb2.NetParameter:
    """A net's layers and their parameters from binary NetParameter bytes (a .caffemodel holds them), read
    with ``schema`` (default: the active one, else the built-in one); fork fields arrive as in text."""
    schema = schema if schema is not None else active_schema()
    try:
        if schema is None:
            net = caffe_pb2.NetParameter.FromString(data)
        else:
            net = to_builtin(schema.net_class.FromString(data), source, schema)
    except DecodeError as error:
        raise CaffeFormatError(f"{source}: not a binary Caffe net: {error}") from None
    if schema is None:
        for layer in net.layer:
            _move_borrowed_numbers(layer)
    return net


def _move_borrowed_numbers(layer: caffe_pb2.LayerParameter) -> None:
    """A fork field that arrived under the BVLC field of its number, moved back (see BORROWED_NUMBERS)."""
    for layer_type, bvlc_field, fork_field in BORROWED_NUMBERS:
        if layer.type == layer_type and layer.HasField(bvlc_field) and not layer.HasField(fork_field):
            getattr(layer, fork_field).MergeFromString(getattr(layer, bvlc_field).SerializeToString())
            layer.ClearField(bvlc_field)


def layer_param(layer: caffe_pb2.LayerParameter, name: str, schema: Schema | None = None) -> Any:
    """The layer's field ``name``, as typed as a schema allows.

    A user's schema (``schema``, else the active one) that knows ``name`` reads it as its own message; else
    the built-in schema's field; else what a prototxt gave for it, untyped; else an empty
    :class:`UntypedMessage` (unset fields of a typed message give their defaults, as protobuf's do).
    """
    schema = schema if schema is not None else active_schema()
    kept = {field.name: field for field in layer.caffe2torch_kept_field}
    if schema is not None and name in schema.layer_class.DESCRIPTOR.fields_by_name:
        if layer.HasField("caffe2torch_fork_layer"):
            return getattr(schema.layer_class.FromString(layer.caffe2torch_fork_layer), name)
        # Read before the schema was named: carried over by name.
        typed = schema.layer_class()
        single = caffe_pb2.LayerParameter()
        if name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name and layer.HasField(name):
            getattr(single, name).CopyFrom(getattr(layer, name))
            text_format.Parse(text_format.MessageToString(single), typed, allow_unknown_field=True)
        elif name in kept:
            text_format.Merge(kept[name].text, typed)
        return getattr(typed, name)
    if name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name:
        return getattr(layer, name)
    if name in kept:
        return UntypedMessage.parse(kept[name].text).get(name, UntypedMessage({}))
    return UntypedMessage({})


class UntypedMessage(Mapping[str, Any]):
    """A message read from text without its schema: ``m.scale`` or ``m["scale"]`` is the field's last value
    (as protobuf reads a singular field), ``m.values_of("min_size")`` all of a repeated field's; nested messages are
    UntypedMessages. Values are as the text spells them: numbers, strings, ``True``/``False``, and enum
    names as strings. Empty (false) when the field was not given."""

    def __init__(self, fields: dict[str, list[Any]]) -> None:
        self._fields = fields

    @classmethod
    def parse(cls, text: str) -> UntypedMessage:
        tokenizer = text_format.Tokenizer(text.split("\n"))
        return cls._parse_fields(tokenizer, end=None)

    @classmethod
    def _parse_fields(cls, tokenizer: text_format.Tokenizer, end: str | None) -> UntypedMessage:
        fields: dict[str, list[Any]] = {}
        while not (tokenizer.AtEnd() if end is None else tokenizer.TryConsume(end)):
            name = tokenizer.ConsumeIdentifierOrNumber()
            values = fields.setdefault(name, [])
            if tokenizer.TryConsume(":") and not (tokenizer.LookingAt("{") or tokenizer.LookingAt("<")):
                if tokenizer.TryConsume("["):
                    while not tokenizer.TryConsume("]"):
                        values.append(cls._value(tokenizer))
                        tokenizer.TryConsume(",")
                else:
                    values.append(cls._value(tokenizer))
            else:
                values.append(cls._message(tokenizer))
            if not tokenizer.TryConsume(","):
                tokenizer.TryConsume(";")
        return cls(fields)

    @classmethod
    def _message(cls, tokenizer: text_format.Tokenizer) -> UntypedMessage:
        end = ">" if tokenizer.TryConsume("<") else None
        if end is None:
            tokenizer.Consume("{")
            end = "}"
        return cls._parse_fields(tokenizer, end)

    @classmethod
    def _value(cls, tokenizer: text_format.Tokenizer) -> Any:
        if tokenizer.LookingAt("{") or tokenizer.LookingAt("<"):
            return cls._message(tokenizer)
        token = tokenizer.token
        if token[:1] in ("'", '"'):
            return tokenizer.ConsumeString()
        if token in ("true", "True", "t"):
            tokenizer.NextToken()
            return True
        if token in ("false", "False", "f"):
            tokenizer.NextToken()
            return False
        if token[:1].isalpha() and token.lower() not in ("inf", "infinity", "nan"):
            return tokenizer.ConsumeIdentifier()  # an enum value's name
        try:
            return tokenizer.ConsumeInteger()
        except text_format.ParseError:
            return tokenizer.ConsumeFloat()

    def __getitem__(self, name: str) -> Any:
        return self._fields[name][-1]

    def __getattr__(self, name: str) -> Any:
        """``m.scale`` as protobuf spells it, so ``getattr(param, "scale", 1)`` reads typed and untyped
        parameters alike (a field named like a Mapping method is read with ``m["keys"]``)."""
        fields = self.__dict__.get("_fields", {})
        if name in fields:
            return fields[name][-1]
        raise AttributeError(f"the prototxt gave no field {name!r}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def values_of(self, name: str) -> list[Any]:
        """Every value a repeated field was given, in order; [] when none."""
        return list(self._fields.get(name, ()))

    def __repr__(self) -> str:
        return f"UntypedMessage({self._fields!r})"
