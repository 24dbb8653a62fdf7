"""Give a converted net the input and output conventions of torchvision and timm, derived exactly from the
Caffe model's own preprocessing, so that code around it need not know the model came from Caffe.

``caffe`` keeps the net as Caffe runs it (pixels 0..255 in the net's channel order minus its mean, times
its scale; classes in the net's order). ``torchvision`` adds a fixed input stage taking RGB in [0, 1]
normalised by (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) back to those pixels, and reorders the
outputs to sorted-synset order where the net's class order is known. Both stages are graph nodes of the
returned model, so model.py, safetensors and ONNX exports carry them.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import fx

from caffe2torch.converter.layers.common import make
from caffe2torch.errors import InputError
from caffe2torch.modules.convention import NormalizedRGBToCaffe, SelectClasses
from caffe2torch.runtime.labels import label_map
from caffe2torch.runtime.presets import Preset, get_preset

CONVENTIONS = ("caffe", "torchvision")
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
TORCHVISION_LABEL_ORDER = "synset"


def resolve_preset(model: Any, preset: Preset | str | None) -> Preset | None:
    """The preprocessing the net was trained with: the one given, else its zoo entry's."""
    if isinstance(preset, str):
        return get_preset(preset)
    if preset is None and getattr(model, "preset", None):
        return get_preset(model.preset)
    return preset


def apply_convention(model: Any, convention: str, *, preset: Preset | str | None = None,
                     label_order: str | None = None) -> tuple[Any, dict[str, Any]]:
    """``model`` under ``convention``, and the preprocessing a user must apply to feed it (for meta.json).

    ``preset`` is the net's own preprocessing (default: its zoo entry's); ``label_order`` the order of its
    outputs (default: its zoo entry's), which is mapped to sorted-synset order under ``torchvision``.
    """
    if convention not in CONVENTIONS:
        raise InputError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    preset = resolve_preset(model, preset)
    order = label_order or getattr(model, "label_order", None)
    if convention == "caffe":
        return model, _caffe_preprocessing(preset, order)
    if preset is None:
        raise InputError("the torchvision convention needs the net's own preprocessing (channel order, mean, "
                         "scale): name a preset (--preset / preset=) for a net outside the zoo")
    if preset.mean is None or preset.mean_file is not None:
        raise InputError(f"preset {preset.name!r} subtracts a mean image; the torchvision convention needs "
                         "per-channel mean values")
    if len(model.input_names) != 1 or len(model.input_shapes[0]) != 4 or model.input_shapes[0][1] != 3:
        raise InputError("the torchvision convention is for nets with one N x 3 x H x W image input; this net "
                         f"takes {', '.join(str(list(s)) for s in model.input_shapes)}")
    input_stage = _input_stage(preset)
    output_stage = _output_stage(model, order) if order is not None else None
    converted = _with_stages(model, input_stage, output_stage)
    meta = {
        "convention": "torchvision",
        "preprocessing": {
            "channel_order": "RGB", "range": [0, 1], "mean": list(TORCHVISION_MEAN), "std": list(TORCHVISION_STD),
            "resize": preset.resize, "crop_size": preset.crop_size, "interpolation": preset.interpolation,
        },
        "label_order": TORCHVISION_LABEL_ORDER if output_stage is not None else order,
        "caffe_preprocessing": _caffe_preprocessing(preset, order)["preprocessing"],
    }
    return converted, meta


def _caffe_preprocessing(preset: Preset | None, order: str | None) -> dict[str, Any]:
    described = None
    if preset is not None:
        described = {"channel_order": preset.channel_order, "range": [0, 255], "mean": preset.mean,
                     "mean_file": preset.mean_file, "scale": preset.scale, "resize": preset.resize,
                     "crop_size": preset.crop_size, "interpolation": preset.interpolation}
    return {"convention": "caffe", "preprocessing": described, "label_order": order}


def _input_stage(preset: Preset) -> NormalizedRGBToCaffe:
    """Caffe pixel (net order) = (255 * (x_rgb * std + mean) - caffe_mean) * scale, as one affine map."""
    reverse = preset.channel_order == "BGR"
    std = np.array(TORCHVISION_STD[::-1] if reverse else TORCHVISION_STD, dtype=np.float64)
    mean = np.array(TORCHVISION_MEAN[::-1] if reverse else TORCHVISION_MEAN, dtype=np.float64)
    caffe_mean = np.array(preset.mean if len(preset.mean) == 3 else preset.mean * 3, dtype=np.float64)
    stage = make(NormalizedRGBToCaffe, channels=3, reverse_channels=reverse)
    stage.weight = torch.from_numpy(255.0 * std * preset.scale).float()
    stage.bias = torch.from_numpy((255.0 * mean - caffe_mean) * preset.scale).float()
    return stage


def _output_stage(model: Any, order: str) -> SelectClasses | None:
    """Rows permuted from the net's class order to sorted-synset order (None when already so)."""
    to_net = label_map(TORCHVISION_LABEL_ORDER, order)  # synset class i is the net's output to_net[i]
    if to_net is None:
        return None
    if len(model.output_shapes) != 1:
        raise InputError("the torchvision convention reorders the classes of a net with one output; this net "
                         f"has {len(model.output_shapes)}: {', '.join(model.output_shapes)}")
    (shape,) = model.output_shapes.values()
    if len(shape) < 2 or shape[1] != len(to_net):
        raise InputError(f"the net's output has shape {list(shape)}, not {len(to_net)} classes on axis 1 "
                         f"as label order {order!r} has")
    stage = make(SelectClasses, classes=len(to_net))
    stage.index = torch.from_numpy(np.asarray(to_net, dtype=np.int64))
    return stage


def _with_stages(model: Any, input_stage: torch.nn.Module, output_stage: torch.nn.Module | None) -> Any:
    """A copy of ``model`` whose graph runs ``input_stage`` on its input and ``output_stage`` on its output."""
    model = copy.deepcopy(model)
    graph: fx.Graph = model.graph
    taken = {name for name, _ in model.named_children()}

    def add(base: str, module: torch.nn.Module) -> str:
        name, number = base, 1
        while name in taken or hasattr(model, name):
            number += 1
            name = f"{base}_{number}"
        taken.add(name)
        model.add_submodule(name, module)
        return name

    placeholder = next(node for node in graph.nodes if node.op == "placeholder")
    with graph.inserting_after(placeholder):
        converted = graph.call_module(add("convention_input", input_stage), (placeholder,))
    placeholder.replace_all_uses_with(converted, delete_user_cb=lambda user: user is not converted)
    if output_stage is not None:
        output = next(node for node in graph.nodes if node.op == "output")
        (result,) = output.args
        if not isinstance(result, fx.Node):
            raise InputError("the torchvision convention reorders one output tensor; this net returns several")
        with graph.inserting_before(output):
            reordered = graph.call_module(add("convention_output", output_stage), (result,))
        output.args = (reordered,)
    model.recompile()
    return model
