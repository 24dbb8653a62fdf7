"""Where a net comes from: a prototxt path, a zoo name or a NetParameter, opened in one place.

This module sits above both the converter and the zoo, so that neither needs the other: the converter
takes only net descriptions (NetParameters), the zoo only knows its own nets, and :func:`open_net` is where
a name becomes a net and a net is recognised as a zoo model.  :func:`caffe2torch.load` and
:func:`export_net` start here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caffe2torch.errors import InputError

__all__ = ["OpenedNet", "open_net", "preprocessing_hints", "export_net"]


@dataclass(frozen=True)
class OpenedNet:
    """A net description and what its source says about it besides the layers."""

    net: Any  # caffe_pb2.NetParameter
    zoo_entry: Any  # caffe2torch.zoo.ZooEntry, or None when the net is not one of the zoo's
    # What the prototxt's comments state (see preprocessing_hints); None when the net was not read from a file.
    preprocessing_hints: dict[str, Any] | None = None

    @property
    def zoo_model(self) -> str | None:
        return self.zoo_entry.name if self.zoo_entry is not None else None


def open_net(spec: Any) -> OpenedNet:
    """The net ``spec`` names: an existing prototxt file, else a zoo model name; or a NetParameter as it is.

    A prototxt or NetParameter that is structurally a zoo net (a user's copy of a release prototxt) gets
    that zoo entry too.  An :class:`OpenedNet` is returned unchanged.
    """
    from caffe2torch import zoo

    if isinstance(spec, OpenedNet):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        return OpenedNet(spec, _identified(spec))
    path = Path(spec)
    if path.exists():
        from caffe2torch.caffe_proto import read_prototxt

        net = read_prototxt(path)
        hints = preprocessing_hints(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else None
        return OpenedNet(net, _identified(net), hints)
    if str(spec) in zoo.MODELS:
        entry = zoo.get(str(spec))
        return OpenedNet(entry.build(), entry)
    if path.suffix or len(path.parts) > 1:
        raise InputError(f"{spec}: no such prototxt file")
    raise InputError(f"{spec}: neither a prototxt file nor a zoo model (the zoo has: {', '.join(zoo.MODELS)})")


def _identified(net: Any) -> Any:
    """The zoo entry ``net`` is structurally equal to, or None."""
    from caffe2torch import zoo

    name = zoo.identify(net)
    return zoo.get(name) if name is not None else None


def preprocessing_hints(prototxt_text: str) -> dict[str, Any]:
    """Hints a release states only in comments, such as SENet's ``# mean_value: 104, 117, 123``."""
    hints: dict[str, Any] = {}
    for key, value in re.findall(r"^\s*#\s*(mean_value|scale|crop_size)\s*:\s*(.+)$", prototxt_text, re.M):
        numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", value)]
        hints[key] = numbers if key == "mean_value" else (numbers[0] if numbers else None)
    return hints


def export_net(spec: Any, weights: Any, directory: str | os.PathLike, *, force: bool = False,
               input_shape: tuple[int, ...] | None = None, formats: tuple[str, ...] = ("pytorch",),
               convention: str = "caffe", preset: str | None = None,
               label_order: str | None = None) -> dict[str, Any]:
    """Convert a prototxt / zoo name (+ weights) and export it; returns a summary for the CLI to print."""
    import caffe2torch
    from caffe2torch.converter.export import PREVIOUS_OUTPUT
    from caffe2torch.files import check_output_directory

    check_output_directory(directory, PREVIOUS_OUTPUT, force=force)  # before a conversion that takes seconds
    model = caffe2torch.load(spec, weights, input_shape=input_shape, random_init=weights is None)
    meta: dict[str, Any] = {"source": str(spec), "weights": str(weights) if weights is not None else None,
                            "random_weights": weights is None}
    if model.preprocessing_hints is not None:
        meta["preprocessing"] = model.preprocessing_hints
    if model.zoo_model is not None:
        meta.update(zoo_model=model.zoo_model, preset=model.preset, label_order=model.label_order)
    paths = caffe2torch.export(model, directory, formats=formats, convention=convention, preset=preset,
                               label_order=label_order, meta=meta, force=force)
    return {"model": model, "paths": paths, "meta": meta,
            "parameters": sum(p.numel() for p in model.parameters())}
