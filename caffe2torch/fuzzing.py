"""Seeded fuzzing of every reader and of the converter: a malformed file must end in success or in a
:class:`~caffe2torch.Caffe2TorchError`, quickly and in bounded memory.

Used by ``tests/test_fuzz.py`` (a bounded run in the suite) and ``benchmarks/fuzz.py`` (a long run that
keeps reproducers). Cases run in a worker process so that a crash of a C library (protobuf, HDF5), a
hang or a runaway allocation is observed instead of taking the fuzzer down; the worker reports each
case's outcome and its peak resident memory above what it had when the case started.

Kinds of case:

- ``caffemodel``: a binary caffemodel (current, V1 and V0 forms) mutated byte-wise and field-wise
  (varints of the protobuf records replaced by extreme values), read and then bound to its net;
- ``binaryproto``: a mean-image BlobProto, mutated the same way;
- ``hdf5``: Caffe's HDF5 weights, mutated byte-wise and rebuilt with hostile structure;
- ``prototxt``: a net's text, mutated line- and token-wise, read, converted (random weights) and
  turned into model.py code;
- ``converter``: random nets of every registered layer type with random, often extreme parameters.

A net converted from a prototxt or converter case is also run once when its blobs are small
(:func:`run_forward`): its outputs must have the shapes its shape rules promised, and memory is watched
as for reading.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import random
import re
import resource
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("caffemodel", "binaryproto", "hdf5", "prototxt", "converter")
TIME_LIMIT_S = 10.0
MEMORY_SLACK = 200 << 20  # a case may use 2x its input size plus this much
FUZZ_MEMORY_BUDGET = 64 << 20  # caffe2torch.limits budget inside a case: beyond it, ResourceLimitError
FORWARD_BLOB_BYTES = 16 << 20  # a converted net whose blobs take at most this much is also run once
BOUNDED_OUTPUTS = {"DetectionOutput"}  # layer types whose shape rule gives a bound (rows known after NMS)

INTERESTING_INTS = [0, 1, 2, 3, 7, 16, 255, 256, 1023, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                    2**63 - 1, 2**64 - 1, -1, -2, -(2**31), -(2**63)]
INTERESTING_NUMBERS = ["0", "1", "-1", "2", "3", "7", "64", "1000", "65536", "2147483647", "2147483648",
                       "4294967296", "-2147483648", "99999999999999999999", "0.0", "0.5", "-0.5", "1e-30",
                       "1e30", "1e308", "-1e308", "1e999", "nan", "inf", "-inf"]
HOSTILE_NAMES = ['"', "\\", "\n", "\u2028", "__import__('os').system('true')", "self", "training",
                 "_modules", "forward", "class", "None", "print", "torch", "caffe_names", "", " ", "a/b",
                 "\x00", "0", "é"]


@dataclass(frozen=True)
class Case:
    """One input: ``data`` is the file; ``net`` the prototxt text a weights file is bound to, if any."""

    kind: str
    label: str
    data: bytes
    net: str | None = None

    @property
    def suffix(self) -> str:
        return {"caffemodel": ".caffemodel", "binaryproto": ".binaryproto", "hdf5": ".caffemodel.h5",
                "prototxt": ".prototxt", "converter": ".prototxt"}[self.kind]


@dataclass(frozen=True)
class Outcome:
    """``status``: ok, error (a Caffe2TorchError), crash (any other exception), died (a signal or exit),
    timeout, or memory (over 2x the input plus MEMORY_SLACK)."""

    case: Case
    status: str
    detail: str
    seconds: float
    peak_bytes: int

    @property
    def acceptable(self) -> bool:
        return self.status in ("ok", "error")


# --- seeds -------------------------------------------------------------------------------------------------

SEED_NET = """
name: "fuzzseed"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 1 pad: 1 group: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def _seed_weights(net_text: str) -> dict[str, list[np.ndarray]]:
    from caffe2torch.caffe_proto import parse_prototxt
    from caffe2torch.converter import expected_blob_shapes

    rng = np.random.default_rng(0)
    shapes = expected_blob_shapes(parse_prototxt(net_text))
    return {name: [rng.standard_normal(shape).astype(np.float32) + (1.5 if name.startswith("bn") else 0)
                   for shape in layer_shapes] for name, layer_shapes in shapes.items()}


def _legacy_caffemodels(weights: dict[str, list[np.ndarray]]) -> list[bytes]:
    """The same weights in the V1 form (legacy 4-D blobs, unpacked and double data) and the V0 form."""
    from caffe2torch.caffe_proto import caffe_pb2

    v1 = caffe_pb2.NetParameter(name="v1")
    v0 = caffe_pb2.NetParameter(name="v0")
    v1_types = {"conv1": caffe_pb2.V1LayerParameter.CONVOLUTION, "fc": caffe_pb2.V1LayerParameter.INNER_PRODUCT}
    for index, (name, arrays) in enumerate(weights.items()):
        if name not in v1_types:
            continue
        layer = v1.layers.add(name=name, type=v1_types[name])
        wrapper = v0.layers.add()
        wrapper.layer.name = name
        wrapper.layer.type = "conv" if name == "conv1" else "innerproduct"
        for blob_index, array in enumerate(arrays):
            legacy = (1,) * (4 - array.ndim) + array.shape
            for target in (layer.blobs.add(), wrapper.layer.blobs.add()):
                target.num, target.channels, target.height, target.width = legacy
                if (index + blob_index) % 2:
                    target.double_data.extend(array.reshape(-1).astype(float).tolist())
                else:
                    target.data.extend(array.reshape(-1).tolist())
    return [v1.SerializeToString(), v0.SerializeToString()]


def seed_corpus(workdir: Path, shared: Path | None = None, *, large: bool = False) -> dict[str, list[Case]]:
    """Small valid files of every kind, made here, plus the real models of ``shared`` when present
    (``large``: also open_nsfw and SE-BN-Inception, whose mutations take up to a second each to convert)."""
    from caffe2torch.caffe_proto import parse_prototxt, write_caffemodel, write_hdf5

    net = parse_prototxt(SEED_NET)
    weights = _seed_weights(SEED_NET)
    caffemodel, hdf5, mean = workdir / "seed.caffemodel", workdir / "seed.caffemodel.h5", workdir / "mean.bp"
    write_caffemodel(net, weights, caffemodel, force=True)
    write_hdf5(net, weights, hdf5, force=True)
    from caffe2torch.caffe_proto import caffe_pb2

    blob = caffe_pb2.BlobProto(num=1, channels=3, height=4, width=4)
    blob.data.extend(np.arange(48, dtype=np.float32).tolist())
    mean.write_bytes(blob.SerializeToString())
    corpus: dict[str, list[Case]] = {
        "caffemodel": [Case("caffemodel", "seed", caffemodel.read_bytes(), SEED_NET)]
        + [Case("caffemodel", f"legacy{i}", data, None) for i, data in enumerate(_legacy_caffemodels(weights))],
        "binaryproto": [Case("binaryproto", "seed", mean.read_bytes())],
        "hdf5": [Case("hdf5", "seed", hdf5.read_bytes(), SEED_NET)],
        "prototxt": [Case("prototxt", "seed", SEED_NET.encode())],
        "converter": [],
    }
    if shared is not None and (shared / "realmodels").is_dir():
        real = shared / "realmodels"
        pairs = [("lenet/lenet.prototxt", "lenet/lenet_iter_10000.caffemodel"),
                 ("cifar10_quick/cifar10_quick.prototxt", "cifar10_quick/cifar10_quick_v1_iter_5000.caffemodel"),
                 ("cifar10_quick/cifar10_quick.prototxt", "cifar10_quick/cifar10_quick_iter_5000.caffemodel.h5")]
        for prototxt, weights_file in pairs:
            text = (real / prototxt).read_text()
            kind = "hdf5" if weights_file.endswith(".h5") else "caffemodel"
            corpus[kind].append(Case(kind, weights_file, (real / weights_file).read_bytes(), text))
            corpus["prototxt"].append(Case("prototxt", prototxt, text.encode()))
        corpus["binaryproto"].append(Case("binaryproto", "cifar mean", (real / "cifar10_quick/mean.binaryproto").read_bytes()))
        large_nets = [*real.glob("open_nsfw/*.prototxt"), *(shared / "senet" / "models").glob("SE-BN-Inception.prototxt")]
        for path in sorted([*real.glob("forks/*/*.prototxt"), *(large_nets if large else [])]):
            corpus["prototxt"].append(Case("prototxt", str(path.relative_to(shared)), path.read_bytes()))
    return corpus


# --- mutations ---------------------------------------------------------------------------------------------


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """A few byte-level edits: flips, extreme bytes, truncation, insertion, deletion, duplication."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        if not out:
            out += bytes([rng.randrange(256)])
        op = rng.randrange(7)
        pos = rng.randrange(len(out))
        if op == 0:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[pos] = rng.choice((0, 0x7F, 0x80, 0xFF, 0x08, 0x0A, 0x12, 0x1A))
        elif op == 2:
            del out[rng.randrange(len(out)):]
        elif op == 3:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        elif op == 4:
            del out[pos:pos + rng.randrange(1, 64)]
        elif op == 5:
            chunk = out[pos:pos + rng.randrange(1, 256)]
            at = rng.randrange(len(out))
            out[at:at] = chunk
        else:
            from caffe2torch.caffe_proto.wire import encode_varint

            out[pos:pos] = encode_varint(rng.choice(INTERESTING_INTS))
    return bytes(out)


def _varint_spans(data: bytes, start: int, end: int, depth: int, spans: list[tuple[int, int]]) -> None:
    """Where the varint values and length prefixes lie, recursing into nested messages."""
    from caffe2torch.caffe_proto.wire import LEN, VARINT, WireError, iter_fields, read_varint

    try:
        for field in iter_fields(data, start, end):
            if field.wire_type == VARINT:
                spans.append((field.payload_start, field.payload_end))
            elif field.wire_type == LEN:
                _, after_key = read_varint(data, field.start, end)
                spans.append((after_key, field.payload_start))
                if depth < 6 and field.payload_end - field.payload_start < 1 << 16:
                    _varint_spans(data, field.payload_start, field.payload_end, depth + 1, spans)
    except (WireError, IndexError):
        return


def mutate_protobuf(data: bytes, rng: random.Random) -> bytes:
    """Replace one varint value or length prefix of the protobuf records with an extreme value."""
    from caffe2torch.caffe_proto.wire import encode_varint

    spans: list[tuple[int, int]] = []
    _varint_spans(data, 0, len(data), 0, spans)
    if not spans:
        return mutate_bytes(data, rng)
    start, end = rng.choice(spans)
    value = rng.choice(INTERESTING_INTS) if rng.random() < 0.8 else rng.randrange(1 << 20)
    return data[:start] + encode_varint(value) + data[end:]


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|-?\d+(?:\.\d*)?(?:e-?\d+)?|[A-Za-z_][A-Za-z0-9_]*|\S')


def mutate_text(text: str, rng: random.Random, field_names: Sequence[str], layer_types: Sequence[str]) -> str:
    """Line and token edits that keep most of the text parseable, so the converter is reached."""
    lines = text.split("\n")
    for _ in range(rng.choice((1, 1, 2, 4))):
        op = rng.randrange(8)
        i = rng.randrange(len(lines))
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op in (2, 3, 4, 5, 6):
            tokens = list(_TOKEN.finditer(lines[i]))
            if not tokens:
                continue
            token = rng.choice(tokens)
            value = token.group()
            if op == 2 or value[0].isdigit() or value[0] == "-":
                new = rng.choice(INTERESTING_NUMBERS)
            elif op == 3 and value.startswith('"'):
                new = repr(rng.choice(HOSTILE_NAMES + list(layer_types))).replace("'", '"')
            elif op == 4:
                new = rng.choice(field_names)
            elif op == 5:
                new = f'"{rng.choice(layer_types)}"'
            else:
                new = rng.choice(("{", "}", '"', "\\", "#", ":", "<", "[", "]", ",", ""))
            lines[i] = lines[i][:token.start()] + new + lines[i][token.end():]
        else:
            lines.insert(i, rng.choice(('bottom: "data"', 'top: "data"', "group: 0", "kernel_size: 0",
                                        "stride: 0", "axis: -5", "num_output: 0", "global_pooling: true",
                                        "dim: -1", "dim: 0", "dim: 1000000")))
    return "\n".join(lines)


def _param_field_of(layer_type: str) -> str | None:
    from caffe2torch.caffe_proto import caffe_pb2

    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", layer_type).lower() + "_param"
    for candidate in (snake, layer_type.lower() + "_param"):
        if candidate in fields and fields[candidate].message_type is not None:
            return candidate
    return None


def _random_scalar(field, rng: random.Random):
    from google.protobuf.descriptor import FieldDescriptor as FD

    if field.type == FD.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type == FD.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        return rng.choice([0.0, 1.0, -1.0, 0.5, 2.0, 1e-12, 1e30, float("nan"), float("inf"), -3.0])
    if field.type == FD.TYPE_STRING:
        return rng.choice(HOSTILE_NAMES[:6])
    if field.type == FD.TYPE_BYTES:
        return rng.choice(HOSTILE_NAMES[:6]).encode("utf-8", "surrogatepass")
    small = [0, 1, 1, 2, 2, 3, 4, 5, 8, 16, 100]
    if field.type in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64):
        return rng.choice(small + [2**31, 2**32 - 1])
    return rng.choice(small + [-1, -2, -5, 2**31 - 1, -(2**31)])


def _fill_message(message, rng: random.Random, depth: int = 0) -> None:
    """Set a random subset of ``message``'s fields to random, often extreme, values."""
    from google.protobuf.descriptor import FieldDescriptor as FD

    for field in message.DESCRIPTOR.fields:
        if rng.random() > 0.35:
            continue
        if field.type == FD.TYPE_MESSAGE:
            if depth < 2:
                target = getattr(message, field.name)
                _fill_message(target.add() if field.is_repeated else target, rng, depth + 1)
        elif field.is_repeated:
            getattr(message, field.name).extend(_random_scalar(field, rng) for _ in range(rng.randrange(4)))
        else:
            setattr(message, field.name, _random_scalar(field, rng))


def random_net(rng: random.Random, layer_types: Sequence[str]) -> str:
    """A random deploy net: an input of random shape and a few layers of random types and parameters."""
    from google.protobuf import text_format

    from caffe2torch.caffe_proto import caffe_pb2

    net = caffe_pb2.NetParameter(name="fuzz")
    rank = rng.choice((1, 2, 2, 3, 4, 4, 4, 4, 5))
    dims = [rng.choice((1, 1, 2, 3, 4, 5, 7, 8, 16)) for _ in range(rank)]
    if rng.random() < 0.05:
        dims[rng.randrange(rank)] = rng.choice((0, -1, 2**31 - 1, 100000))
    net.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(dim=dims)
    blobs = ["data"]
    for index in range(rng.randrange(1, 5)):
        layer_type = rng.choice(layer_types)
        layer = net.layer.add(name=rng.choice([f"l{index}", f"l{index}"] + HOSTILE_NAMES[:8]), type=layer_type)
        bottoms = rng.choice((1, 1, 1, 1, 2, 2, 3, 0))
        layer.bottom.extend(rng.choice(blobs) for _ in range(bottoms))
        tops = rng.choice((1, 1, 1, 1, 1, 2, 0))
        new_tops = [f"b{index}_{t}" if rng.random() < 0.85 else rng.choice(blobs) for t in range(tops)]
        layer.top.extend(new_tops)
        blobs += [t for t in new_tops if t not in blobs]
        param = _param_field_of(layer_type)
        if param is not None and rng.random() < 0.9:
            _fill_message(getattr(layer, param), rng)
        if rng.random() < 0.1:
            _fill_message(layer, rng, depth=2)
            layer.type, layer.name = layer_type, layer.name or f"l{index}"
    return text_format.MessageToString(net)


def _hostile_hdf5(rng: random.Random, workdir: Path) -> bytes:
    """A Caffe-shaped HDF5 file with odd structure: odd dtypes, ranks, names, empty or huge datasets."""
    import h5py

    path = workdir / f"h{rng.randrange(1 << 30)}.h5"
    with h5py.File(path, "w") as file:
        data = file.create_group("data") if rng.random() < 0.95 else file
        for layer in range(rng.randrange(1, 4)):
            group_name = (rng.choice(["conv1", "fc", "bn1", f"x{layer}", "scale1"]) + f"{layer}"
                          if rng.random() < 0.2 else ["conv1", "bn1", "scale1", "fc"][layer % 4])
            if group_name in data:
                continue
            group = data.create_group(group_name)
            for blob in range(rng.randrange(0, 4)):
                name = str(blob) if rng.random() < 0.9 else rng.choice(["a", "-1", "10", "01"])
                if name in group:
                    continue
                shape = tuple(rng.choice((0, 1, 2, 3, 4, 5)) for _ in range(rng.randrange(0, 5)))
                dtype = rng.choice(["f4", "f8", "i4", "u1", "f2", "S3", "c8"])
                kwargs = {}
                if rng.random() < 0.2:
                    kwargs = {"compression": "gzip", "chunks": True} if shape and 0 not in shape else {}
                if rng.random() < 0.1 and shape:
                    group.create_dataset(name, shape=tuple(d * 1000 + 1 for d in shape), dtype="f4",
                                         **kwargs)  # declared, never written
                else:
                    values = np.ones(shape) if dtype[0] != "S" else np.full(shape, b"abc")
                    group.create_dataset(name, data=values.astype(dtype), **kwargs)
    data_bytes = path.read_bytes()
    path.unlink()
    return data_bytes


def generate_cases(kind: str, seeds: Sequence[Case], rng: random.Random, workdir: Path) -> Iterator[Case]:
    """An endless stream of mutated cases of one kind."""
    from caffe2torch.caffe_proto import caffe_pb2
    from caffe2torch.converter import registered_types

    layer_types = registered_types()
    field_names = sorted({f.name for m in caffe_pb2.DESCRIPTOR.message_types_by_name.values() for f in m.fields})
    for number in range(1 << 62):
        if kind == "converter":
            yield Case(kind, f"random net {number}", random_net(rng, layer_types).encode())
            continue
        seed = rng.choice(seeds)
        if kind == "prototxt":
            text = mutate_text(seed.data.decode("utf-8", "replace"), rng, field_names, layer_types)
            yield Case(kind, f"{seed.label} #{number}", text.encode("utf-8", "surrogatepass"))
        elif kind == "hdf5" and rng.random() < 0.3:
            yield Case(kind, f"structured #{number}", _hostile_hdf5(rng, workdir), SEED_NET)
        else:
            mutate = mutate_protobuf if kind != "hdf5" and rng.random() < 0.5 else mutate_bytes
            yield Case(kind, f"{seed.label} #{number}", mutate(seed.data, rng), seed.net)


# --- running a case ----------------------------------------------------------------------------------------


def _proc_status(key: str) -> int:
    """A ``VmXXX`` figure of /proc/self/status, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def run_case(case: Case, path: Path) -> None:
    """What a user's command does with the file; raises what it raises."""
    from caffe2torch.caffe_proto import parse_prototxt, read_blob, read_prototxt, read_weights
    from caffe2torch.converter import convert
    from caffe2torch.converter.export import generate_code
    from caffe2torch.limits import memory_budget

    path.write_bytes(case.data)
    with memory_budget(FUZZ_MEMORY_BUDGET):
        if case.kind == "binaryproto":
            read_blob(path)
            return
        if case.kind in ("caffemodel", "hdf5"):
            weights = read_weights(path)
            if case.net is not None:
                convert(parse_prototxt(case.net), weights)
            return
        model = convert(read_prototxt(path), None, random_init=True)
        compile(generate_code(model), "model.py", "exec")
    run_forward(model)


def run_forward(model: Any) -> None:
    """One forward pass on inputs in [0, 1) (valid indices for Embed) where the net's blobs, as shape
    inference gives them, are small: a layer must compute what its shape rule promised, without an error and
    without temporaries beyond its blobs (the case's memory is watched)."""
    import torch

    from caffe2torch.converter.shapes import module_calls

    calls = module_calls(model, model.input_shapes)
    if calls is None:
        return
    blobs = [*model.input_shapes, *(shape for *_, outputs in calls for shape in outputs)]
    if 4 * sum(math.prod(shape) for shape in blobs) > FORWARD_BLOB_BYTES:
        return
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(shape, generator=generator) for shape in model.input_shapes]
    with torch.inference_mode():
        result = model(*inputs)
    results = result if isinstance(result, dict) else {next(iter(model.output_shapes)): result}
    for name, value in results.items():
        shape, promised = tuple((value[0] if isinstance(value, tuple) else value).shape), model.output_shapes[name]
        bound = model.output_types.get(name) in BOUNDED_OUTPUTS
        if not (shape == tuple(promised) or bound and len(shape) == len(promised)
                and all(d <= p for d, p in zip(shape, promised))):
            raise AssertionError(f"output {name!r} has shape {list(shape)}, shape inference said "
                                 f"{'at most ' if bound else ''}{list(promised)}")


def _send(channel, message: dict) -> None:
    data = json.dumps(message).encode()
    channel.write(len(data).to_bytes(8, "little") + data)
    channel.flush()


def _load_runner(spec: str) -> Callable[[Case, Path], None]:
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _worker(manifest: Path, first: int, runner_spec: str) -> None:
    """Run the cases of ``manifest`` from ``first`` on, announcing each on stdout before it starts.

    A fresh interpreter, not a fork of the caller: torch's OpenMP pool does not survive fork (a forked
    child of a process that has run torch ops hangs in its first parallel region). Before each case the
    peak-RSS mark is reset (Linux clear_refs) and the address space capped at what the case may use plus
    slack, so a runaway allocation fails here instead of on the machine.
    """
    import warnings

    from caffe2torch.errors import Caffe2TorchError

    warnings.simplefilter("ignore")
    runner = _load_runner(runner_spec)
    entries = json.loads(manifest.read_text())
    if runner is run_case:
        _warm_up(manifest.parent)
    channel = sys.stdout.buffer
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    for index in range(first, len(entries)):
        entry = entries[index]
        data_path = Path(entry["file"])
        case = Case(entry["kind"], entry["label"], data_path.read_bytes(), entry["net"])
        _send(channel, {"start": index})
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        baseline = _proc_status("VmRSS")
        allowed = 2 * len(case.data) + MEMORY_SLACK
        resource.setrlimit(resource.RLIMIT_AS, (_proc_status("VmSize") + allowed + (512 << 20), hard))
        try:
            runner(case, data_path.with_name(f"run{case.suffix}"))
            status, detail = "ok", ""
        except Caffe2TorchError as error:
            status, detail = "error", (str(error).splitlines() or [type(error).__name__])[0][:300]
        except BaseException:  # noqa: BLE001 - every other outcome is what the fuzzer looks for
            status, detail = "crash", traceback.format_exc()
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        peak = max(0, _proc_status("VmHWM") - baseline)
        _send(channel, {"done": index, "status": status, "detail": detail, "peak": peak})


def _warm_up(workdir: Path) -> None:
    """Run each valid seed once, so that the first case is not charged with the imports and caches that
    every run pays once (torch's meta kernels, h5py)."""
    warm = workdir / "warm-up"
    warm.mkdir(exist_ok=True)
    for cases in seed_corpus(warm).values():
        for case in cases:
            run_case(case, warm / f"seed{case.suffix}")


def _read_message(fd: int, deadline: float) -> dict | None:
    """The next message of a worker; None when it ended; TimeoutError when ``deadline`` passes."""
    buffer = b""
    needed, length = 8, None
    while len(buffer) < needed:
        remaining = deadline - time.perf_counter()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        chunk = os.read(fd, needed - len(buffer))
        if not chunk:
            return None
        buffer += chunk
        if length is None and len(buffer) == 8:
            length = int.from_bytes(buffer, "little")
            buffer, needed = b"", length
    return json.loads(buffer)


def run_cases(cases: Sequence[Case], workdir: Path, time_limit: float = TIME_LIMIT_S,
              runner: str = "caffe2torch.fuzzing:run_case") -> Iterator[Outcome]:
    """Run ``cases`` in worker processes, a new worker after a case that hangs or kills its process.

    ``runner`` ("module:function") is what a worker does with each case (tests give a misbehaving one).
    """
    entries = []
    for index, case in enumerate(cases):
        path = workdir / f"case{index}{case.suffix}"
        path.write_bytes(case.data)
        entries.append({"kind": case.kind, "label": case.label, "net": case.net, "file": str(path)})
    manifest = workdir / "manifest.json"
    manifest.write_text(json.dumps(entries))
    index = 0
    while index < len(cases):
        worker = subprocess.Popen([sys.executable, "-m", "caffe2torch.fuzzing", str(manifest), str(index), runner],
                                  stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        fd = worker.stdout.fileno()
        started, current = time.perf_counter(), None
        timed_out = False
        try:
            while True:
                # A worker's start (imports) may take a while on a busy machine; a case has time_limit.
                message = _read_message(fd, time.perf_counter() + (time_limit if current is not None else 300))
                if message is None:
                    break
                if "start" in message:
                    started, current = time.perf_counter(), message["start"]
                    continue
                case, status, detail, peak = cases[current], message["status"], message["detail"], message["peak"]
                if status in ("ok", "error") and peak > 2 * len(case.data) + MEMORY_SLACK:
                    status, detail = "memory", f"peak {peak >> 20} MiB above its start ({status}: {detail})"
                yield Outcome(case, status, detail, time.perf_counter() - started, peak)
                current, index = None, current + 1
        except TimeoutError:
            timed_out = True
            worker.kill()
        finally:  # also when the caller stops early (GeneratorExit): the worker must not outlive it
            if worker.poll() is None and (timed_out or current is not None or index < len(cases)):
                worker.kill()
            worker.stdout.close()
            worker.wait()
        if current is None and index < len(cases) and not timed_out:
            raise RuntimeError(f"fuzz worker exited with status {worker.returncode} before case {index}")
        if current is not None:  # the case that was running never finished
            seconds = time.perf_counter() - started
            if timed_out:
                yield Outcome(cases[current], "timeout", f"over {time_limit:.0f} s", seconds, 0)
            else:
                how = (f"killed by signal {-worker.returncode}" if worker.returncode < 0
                       else f"exited with status {worker.returncode}")
                yield Outcome(cases[current], "died", how, seconds, 0)
            index = current + 1


def fuzz(kinds: Sequence[str], *, seed: int, cases_per_kind: int | None = None, seconds: float | None = None,
         shared: Path | None = None, on_outcome: Callable[[Outcome], None] | None = None,
         chunk: int = 1000) -> list[Outcome]:
    """Run mutated cases of each kind, by count per kind (one worker) or until ``seconds`` pass (a worker
    per ``chunk`` cases of each kind, with the large seeds too); returns every outcome that is not success
    or a Caffe2TorchError (``on_outcome`` sees all of them)."""
    from caffe2torch.converter import registered_types

    registered_types()
    rng = random.Random(seed)
    bad: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="caffe2torch-fuzz-") as temporary:
        workdir = Path(temporary)
        corpus = seed_corpus(workdir, shared, large=seconds is not None)
        streams = {kind: generate_cases(kind, corpus[kind], random.Random(rng.random()), workdir) for kind in kinds}
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            per_kind = cases_per_kind if cases_per_kind is not None else chunk
            batch = [next(streams[kind]) for _ in range(per_kind) for kind in kinds]
            for outcome in run_cases(batch, workdir):
                if on_outcome is not None:
                    on_outcome(outcome)
                if not outcome.acceptable:
                    bad.append(outcome)
                if deadline is not None and time.monotonic() > deadline:
                    return bad
            if cases_per_kind is not None:
                return bad


if __name__ == "__main__":  # a worker of run_cases: MANIFEST FIRST_INDEX RUNNER
    # The module's own functions, not this __main__ copy's, so that run_case is the runner's identity.
    from caffe2torch import fuzzing

    fuzzing._worker(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
