"""What ``caffe2torch info`` shows: the layer table, totals by type, parameters, MACs, the zoo match."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from caffe2torch.errors import Caffe2TorchError

# Layers whose blobs are running statistics, not learned parameters.
STATISTICS_TYPES = {"BatchNorm"}


def summarize(net: Any, weights: Mapping[str, Sequence[np.ndarray]] | None = None, *,
              zoo_model: str | None = None) -> dict[str, Any]:
    """A JSON-ready description of ``net``; blob shapes come from ``weights`` when given, else from the
    shapes the converter needs.  ``zoo_model``: the zoo model the net is (caffe2torch.nets knows)."""
    from caffe2torch.converter import convert
    from caffe2torch.converter.stats import count_macs, count_parameters

    model, conversion_error = None, None
    try:
        model = convert(net, None, random_init=True)
    except Caffe2TorchError as error:
        conversion_error = str(error)
    expected = model.blob_shapes if model is not None else {}
    rows = []
    for layer in net.layer:
        if weights is not None:
            shapes = [list(np.shape(b)) for b in weights.get(layer.name, [])]
        else:
            shapes = [list(s) for s in expected.get(layer.name, [])]
        rows.append({"name": layer.name, "type": layer.type, "bottoms": list(layer.bottom),
                     "tops": list(layer.top), "blobs": shapes})
    if weights is not None:
        types = {layer.name: layer.type for layer in net.layer}
        parameters = sum(int(np.prod(np.shape(b))) for name, blobs in weights.items()
                         if name in types and types[name] not in STATISTICS_TYPES for b in blobs)
    else:
        parameters = count_parameters(model) if model is not None else None
    return {
        "name": net.name,
        "layers": rows,
        "layer_types": dict(Counter(layer.type for layer in net.layer).most_common()),
        "parameters": parameters,
        "macs": count_macs(model, model.input_shapes) if model is not None else None,
        "inputs": {n: list(s) for n, s in zip(model.input_names, model.input_shapes)} if model else None,
        "outputs": {n: list(s) for n, s in model.output_shapes.items()} if model else None,
        "zoo_model": zoo_model,
        "conversion_error": conversion_error,
    }


def format_table(summary: dict[str, Any]) -> str:
    """The summary as aligned text for a terminal."""
    rows = [("#", "name", "type", "bottoms -> tops", "blobs")]
    for i, layer in enumerate(summary["layers"]):
        flow = f"{', '.join(layer['bottoms'])} -> {', '.join(layer['tops'])}".strip()
        blobs = ", ".join("x".join(map(str, s)) or "scalar" for s in layer["blobs"])
        rows.append((str(i), layer["name"], layer["type"], flow, blobs))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows]
    lines.append("")
    lines.append(f"net {summary['name']!r}: {len(summary['layers'])} layers")
    lines.append("  " + ", ".join(f"{t} {n}" for t, n in summary["layer_types"].items()))
    if summary["parameters"] is not None:
        lines.append(f"  learnable parameters: {summary['parameters']:,}")
    if summary["macs"] is not None:
        lines.append(f"  multiply-accumulates (conv + inner product, one sample): {summary['macs'] / 1e9:.2f} G")
    if summary["inputs"]:
        lines.append("  inputs: " + ", ".join(f"{n} {s}" for n, s in summary["inputs"].items()))
        lines.append("  outputs: " + ", ".join(f"{n} {s}" for n, s in summary["outputs"].items()))
    if summary["zoo_model"]:
        lines.append(f"  this is zoo model {summary['zoo_model']}")
    if summary["conversion_error"]:
        lines.append(f"  not convertible as is: {summary['conversion_error']}")
    return "\n".join(lines)
