"""The seven nets of the SENet release, built from code, with their published accuracy and presets.

Each entry's ``build()`` returns a ``NetParameter`` equal, layer for layer, to the release prototxt
as :func:`caffe2torch.caffe_proto.read_prototxt` reads it, so a zoo name can stand wherever a prototxt
is accepted (:func:`caffe2torch.nets.open_net` turns names into nets).  Preprocessing and label order are
referred to by name; the runtime owns their values.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.errors import InputError
from caffe2torch.files import atomic_output
from caffe2torch.zoo import inception, resnet

__all__ = ["ZooEntry", "MODELS", "get", "identify", "registered_model", "export_prototxt"]


@dataclass(frozen=True)
class ZooEntry:
    """One release model: how to build its net, its size and cost, and its row of Table 1 of the release."""

    name: str
    title: str
    build: Callable[[], caffe_pb2.NetParameter]
    top1_error: float  # percent, single 224 crop of the image resized to 256
    top5_error: float
    preset: str  # preprocessing preset name in caffe2torch.runtime.presets
    label_order: str  # class order of the 1000 outputs
    caffemodel_mb: int  # size of the released .caffemodel
    release_file: str  # deploy prototxt of the release
    # Counted by caffe2torch.converter.stats on the converted net (tests recount them); stored because
    # converting all seven nets takes about a minute, too long for `caffe2torch zoo list`.
    parameters: int  # learnable parameters
    macs: int  # multiply-accumulates of convolutions and inner products, one 224x224 image


def _entry(name: str, title: str, build: Callable[[], caffe_pb2.NetParameter], table1: tuple[float, float],
           caffemodel_mb: int, release_file: str, parameters: int, macs: int) -> ZooEntry:
    return ZooEntry(name, title, build, *table1, preset="senet", label_order="senet", caffemodel_mb=caffemodel_mb,
                    release_file=release_file, parameters=parameters, macs=macs)


def _family(family: resnet.Family) -> Callable[[], caffe_pb2.NetParameter]:
    return functools.partial(resnet.build, family)


MODELS: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        _entry("se_bn_inception", "SE-BN-Inception", inception.build, (23.62, 7.04), 46,
               "SE-BN-Inception.prototxt", 11_931_622, 2_033_239_424),
        _entry("se_resnet50", "SE-ResNet-50", _family(resnet.SE_RESNET_50), (22.37, 6.36), 107,
               "SE-ResNet-50.prototxt", 28_088_024, 3_860_488_192),
        _entry("se_resnet101", "SE-ResNet-101", _family(resnet.SE_RESNET_101), (21.75, 5.72), 189,
               "SE-ResNet-101.prototxt", 49_326_872, 7_574_937_600),
        _entry("se_resnet152", "SE-ResNet-152", _family(resnet.SE_RESNET_152), (21.34, 5.54), 256,
               "SE-ResNet-152.prototxt", 66_821_848, 11_288_993_792),
        _entry("se_resnext50", "SE-ResNeXt-50 (32 x 4d)", _family(resnet.SE_RESNEXT_50), (20.97, 5.54), 105,
               "SE-ResNeXt-50.prototxt", 27_559_896, 4_232_994_816),
        _entry("se_resnext101", "SE-ResNeXt-101 (32 x 4d)", _family(resnet.SE_RESNEXT_101), (19.81, 4.96), 187,
               "SE-ResNeXt-101.prototxt", 48_955_416, 7_974_739_968),
        _entry("senet154", "SENet-154", _family(resnet.SENET_154), (18.68, 4.47), 440,
               "SENet-154.prototxt", 115_088_984, 20_688_363_520),
    )
}


def get(name: str) -> ZooEntry:
    """The zoo entry called ``name``."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown zoo model {name!r}; the zoo has: {', '.join(MODELS)}") from None


@contextlib.contextmanager
def registered_model(entry: ZooEntry) -> Iterator[ZooEntry]:
    """``entry`` is in the zoo, named and identified like the release nets, inside the ``with`` block only;
    on exit the entry it replaced, if any, is back.  For a test net standing in for a release model."""
    previous = MODELS.get(entry.name)
    MODELS[entry.name] = entry
    _zoo_structure.cache_clear()
    try:
        yield entry
    finally:
        if previous is None:
            MODELS.pop(entry.name, None)
        else:
            MODELS[entry.name] = previous
        _zoo_structure.cache_clear()


def _layers_only(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """The net's structure: its layers with their names cleared, and no net name."""
    structure = caffe_pb2.NetParameter()
    structure.layer.extend(net.layer)
    for layer in structure.layer:
        layer.ClearField("name")
    return structure


@functools.cache
def _zoo_structure(name: str) -> caffe_pb2.NetParameter:
    return _layers_only(MODELS[name].build())


def identify(net: caffe_pb2.NetParameter) -> str | None:
    """The zoo name of ``net`` if it is structurally one of the zoo nets, else None.

    Structure is every layer's type, bottoms, tops and parameters in order; the net's and the layers'
    names are labels and do not count.  Used to pick the preset of a user's copy of a release prototxt.
    """
    candidates = [name for name in MODELS if len(_zoo_structure(name).layer) == len(net.layer)]
    if not candidates:
        return None
    structure = _layers_only(net)
    return next((name for name in candidates if _zoo_structure(name) == structure), None)


def export_prototxt(name: str, path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write zoo model ``name`` as a text prototxt at ``path`` (atomically; an existing file only if ``force``)."""
    entry = get(name)
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such directory")
    text = f"# {entry.title}, built by caffe2torch from the SENet release's {entry.release_file}\n"
    text += text_format.MessageToString(entry.build())
    with atomic_output(path, force=force) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path
