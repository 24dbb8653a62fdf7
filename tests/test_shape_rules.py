"""Output shapes by rule (converter/shapes.py and each module's ``output_shapes``), checked against what the
modules compute.

- Every class of caffe2torch.modules states a rule; the converter never runs them on meta tensors.
- On real tensors, each rule states the shapes its module makes: on every module call of the layer tests
  (run again here with tests/shape_rule_audit.py watching), over seeded random parameters of every layer
  family, and over the fuzzer's random nets of every registered type.
- The zoo's seven SENet nets and the real models get the blob shapes that running each layer on meta tensors
  gives (and the same MAC counts).
- Shapes a layer cannot take are ConversionErrors naming it, in the rule's words.
- A user's module without a rule still converts (run on meta tensors); a load of LeNet, and `caffe2torch info`,
  import neither torch._dynamo nor sympy.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
from torch import nn

import caffe2torch
import caffe2torch.modules as library
from caffe2torch import zoo
from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.converter import build, convert, registered, registered_types, registry
from caffe2torch.converter import shapes
from caffe2torch.converter.layers.common import make
from caffe2torch.converter.stats import count_macs
from caffe2torch.errors import Caffe2TorchError, ConversionError
from caffe2torch.fuzzing import random_net
from caffe2torch.limits import memory_budget
from caffe2torch.modules.convention import NormalizedRGBToCaffe, SelectClasses
from tests.conftest import ROOT, SHARED
from tests.shape_rule_audit import Audit, rule_problem
from tests.test_converter_layers import input_layers, layer

LIBRARY_CLASSES = sorted({cls for module in vars(library).values() if inspect.ismodule(module)
                          for cls in vars(module).values()
                          if inspect.isclass(cls) and issubclass(cls, nn.Module)
                          and cls.__module__.startswith(shapes.LIBRARY)}, key=lambda cls: cls.__qualname__)


# --- every class has a rule -----------------------------------------------------------------------------------


def test_every_library_class_states_a_rule_at_least_as_far_down_as_its_forward() -> None:
    assert len(LIBRARY_CLASSES) >= 45
    missing = []
    for cls in LIBRARY_CLASSES:
        owner = next(base for base in cls.__mro__ if "output_shapes" in vars(base)) \
            if hasattr(cls, "output_shapes") else None
        forward = next(base for base in cls.__mro__ if "forward" in vars(base))
        if owner is None or not issubclass(owner, forward):
            missing.append(cls.__qualname__)
    assert missing == []


def test_the_torch_classes_the_converters_build_have_rules() -> None:
    x = (2, 4, 5, 6)
    assert shapes.output_shapes(nn.Identity(), [x]) == [x]
    assert shapes.output_shapes(nn.Sigmoid(), [x]) == [x]
    assert shapes.output_shapes(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), [x]) == [(2, 6, 3, 3)]
    assert shapes.output_shapes(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1), [x]) == [(2, 6, 9, 11)]
    with pytest.raises(ValueError, match="the input has 4 channels, the convolution 3"):
        shapes.output_shapes(nn.Conv2d(3, 6, 3), [x])
    with pytest.raises(ValueError, match="leave no output"):
        shapes.output_shapes(nn.Conv2d(4, 6, 7), [x])


def test_a_library_class_without_a_rule_is_a_bug_not_a_meta_run() -> None:
    class Ruleless(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    Ruleless.__module__ = "caffe2torch.modules.made_up"
    with pytest.raises(shapes.MissingShapeRule, match="Ruleless has no output_shapes rule"):
        shapes.output_shapes(Ruleless(), [(1, 2)])
    with registered("Ruleless", lambda ctx: make(Ruleless)), pytest.raises(shapes.MissingShapeRule):
        convert(parse_prototxt(input_layers({"data": (1, 2)}) + layer("r", "Ruleless", ["data"], ["r"])))


# --- rules against real tensors -------------------------------------------------------------------------------

AUDITED_TESTS = ("test_converter_layers.py", "test_fork_layers.py", "test_detection_layers.py")


def test_the_rules_state_what_every_module_of_the_layer_tests_makes(tmp_path: Path) -> None:
    """The layer tests again, each module call checked against its rule by a global forward hook."""
    report = tmp_path / "audit.json"
    env = dict(os.environ, SHAPE_RULE_AUDIT=str(report),
               PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "shape_rule_audit", "-p",
                             "no:cacheprovider", *(str(ROOT / "tests" / name) for name in AUDITED_TESTS)],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    audit = json.loads(report.read_text())
    assert audit["problems"] == []
    # What the layer tests leave out, the random parameters below cover.
    assert sum(audit["calls"].values()) > 400
    unseen = {cls.__qualname__ for cls in LIBRARY_CLASSES} - set(audit["calls"])
    assert unseen <= {"NormalizedRGBToCaffe", "SelectClasses", "Silence", "Split"}, unseen


def run_audited(body: str, inputs: dict[str, tuple[int, ...]], audit: Audit) -> bool:
    """Convert (random blobs) and run on real tensors with ``audit`` watching; False when the converter refuses."""
    net = parse_prototxt(input_layers(inputs) + "\n" + body)
    try:
        model = convert(net, None, random_init=True)
    except ConversionError:
        return False
    generator = torch.Generator().manual_seed(0)
    with audit.watching(), torch.no_grad():
        model(*[torch.rand(shape, generator=generator) for shape in inputs.values()])
    return True


def dims(values: list[int], name: str) -> str:
    return " ".join(f"{name}: {v}" for v in values)


def conv_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    spatial = rng.choice((1, 2, 2, 2, 3)) if type_ in ("Convolution", "Deconvolution") else 2
    group = rng.choice((1, 1, 2, 3))
    channels, outputs = group * rng.randint(1, 3), group * rng.randint(1, 3)
    shape = (rng.randint(1, 2), channels, *(rng.randint(1, 9) for _ in range(spatial)))
    kernel = [rng.randint(1, 4) for _ in range(spatial)]
    stride = [rng.randint(1, 3) for _ in range(spatial)]
    pad = [rng.randint(0, 2) for _ in range(spatial)]
    dilation = [rng.randint(1, 2) for _ in range(spatial)]
    per_axis = lambda values: values if rng.random() < 0.5 else values[:1]  # noqa: E731
    fields = [f"num_output: {outputs}", f"group: {group}", f"bias_term: {str(rng.random() < 0.7).lower()}"]
    if spatial == 2 and rng.random() < 0.3:
        fields += [f"kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} stride_w: {stride[1]}",
                   f"pad_h: {pad[0]} pad_w: {pad[1]}"]
    else:
        kernel, stride, pad = per_axis(kernel), per_axis(stride), per_axis(pad)
        fields += [dims(kernel, "kernel_size"), dims(stride, "stride"), dims(pad, "pad")]
    if type_ == "HoleConvolution":
        fields.append(f"hole: {dilation[0]}" if rng.random() < 0.5 else f"hole_h: {dilation[0]} hole_w: {dilation[1]}")
    else:
        fields.append(dims(per_axis(dilation), "dilation"))
    return layer("l", type_, ["data"], ["l"], f"convolution_param {{ {' '.join(fields)} }}"), {"data": shape}


def pooling_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = (rng.randint(1, 2), rng.randint(1, 3), rng.randint(1, 12), rng.randint(1, 12))
    kernel = [rng.randint(1, 5), rng.randint(1, 5)]
    fields = [f"pool: {rng.choice(('MAX', 'AVE'))}", f"round_mode: {rng.choice(('CEIL', 'CEIL', 'FLOOR'))}"]
    if rng.random() < 0.15:
        fields.append("global_pooling: true")
    elif rng.random() < 0.5:
        fields += [f"kernel_size: {kernel[0]}", f"stride: {rng.randint(1, 3)}", f"pad: {rng.randint(0, kernel[0] - 1)}"]
    else:
        fields += [f"kernel_h: {kernel[0]} kernel_w: {kernel[1]}", f"stride_h: {rng.randint(1, 3)}",
                   f"stride_w: {rng.randint(1, 3)}", f"pad_h: {rng.randint(0, kernel[0] - 1)}",
                   f"pad_w: {rng.randint(0, kernel[1] - 1)}"]
    return layer("l", type_, ["data"], ["l"], f"pooling_param {{ {' '.join(fields)} }}"), {"data": shape}


def random_shape(rng: random.Random, low: int = 1, high: int = 4, size: int = 4) -> tuple[int, ...]:
    return tuple(rng.randint(1, size) for _ in range(rng.randint(low, high)))


def inner_product_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = random_shape(rng)
    params = (f"inner_product_param {{ num_output: {rng.randint(1, 5)} axis: {rng.randint(-len(shape), len(shape) - 1)} "
              f"transpose: {str(rng.random() < 0.3).lower()} bias_term: {str(rng.random() < 0.7).lower()} }}")
    return layer("l", type_, ["data"], ["l"], params), {"data": shape}


def reshape_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = random_shape(rng, size=6)
    ndim = len(shape)
    axis = rng.randint(-ndim - 1, ndim)
    start = axis if axis >= 0 else ndim + 1 + axis
    num_axes = rng.choice((-1, -1, *range(0, ndim - start + 1)))
    end = ndim if num_axes == -1 else start + num_axes
    count = math.prod(shape[start:end])
    middle = []
    while count > 1 and len(middle) < 3:  # a random factorisation of the replaced axes' count
        factor = rng.choice([d for d in range(1, count + 1) if count % d == 0])
        middle.append(factor)
        count //= factor
    middle.append(count)
    if rng.random() < 0.4:
        middle[rng.randrange(len(middle))] = -1
    for i, d in enumerate(middle):
        if start + i < ndim and shape[start + i] == d and rng.random() < 0.5:
            middle[i] = 0
    if rng.random() < 0.15:
        middle.append(rng.randint(2, 3))  # a count that no longer fits: refused
    params = f"reshape_param {{ shape {{ {dims(middle, 'dim')} }} axis: {axis} num_axes: {num_axes} }}"
    return layer("l", type_, ["data"], ["l"], params), {"data": shape}


def concat_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = random_shape(rng)
    axis = rng.randint(-len(shape), len(shape) - 1)
    inputs = {}
    for i in range(rng.randint(1, 3)):
        varied = list(shape)
        varied[axis] = rng.randint(1, 4)
        inputs[f"in{i}"] = tuple(varied)
    return layer("l", type_, list(inputs), ["l"], f"concat_param {{ axis: {axis} }}"), inputs


def slice_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = random_shape(rng, size=6)
    axis = rng.randint(-len(shape), len(shape) - 1)
    size = shape[axis]
    if rng.random() < 0.5 and size > 1:
        points = sorted(rng.sample(range(1, size), rng.randint(1, size - 1)))
        params, tops = f"slice_param {{ axis: {axis} {dims(points, 'slice_point')} }}", len(points) + 1
    else:
        tops = rng.choice([d for d in range(1, size + 1) if size % d == 0])
        params = f"slice_param {{ axis: {axis} }}"
    return layer("l", type_, ["data"], [f"t{i}" for i in range(tops)], params), {"data": shape}


def crop_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = random_shape(rng, 2, 4, 6)
    axis = rng.randint(0, len(shape) - 1)
    reference = tuple(d if i < axis else rng.randint(1, d) for i, d in enumerate(shape))
    choice = rng.random()
    if choice < 0.3:
        offsets: list[int] = []
    elif choice < 0.6:
        offsets = [rng.randint(0, min(d - r for d, r in zip(shape[axis:], reference[axis:])))]
    else:
        offsets = [rng.randint(0, d - r) for d, r in zip(shape[axis:], reference[axis:])]
    params = f"crop_param {{ axis: {axis} {dims(offsets, 'offset')} }}"
    return layer("l", type_, ["data", "ref"], ["l"], params), {"data": shape, "ref": reference}


def axis_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    """The layers whose parameters are an axis and a few small numbers."""
    shape = random_shape(rng)
    ndim = len(shape)
    axis = rng.randint(-ndim, ndim - 1)
    params = {
        "Flatten": f"flatten_param {{ axis: {axis} end_axis: {rng.randint(-ndim, ndim - 1)} }}",
        "Tile": f"tile_param {{ axis: {axis} tiles: {rng.randint(1, 3)} }}",
        "Softmax": f"softmax_param {{ axis: {axis} }}",
        "Reduction": f"reduction_param {{ axis: {axis} operation: {rng.choice(('SUM', 'ASUM', 'SUMSQ', 'MEAN'))} }}",
        "ArgMax": (f"argmax_param {{ top_k: {rng.randint(1, 3)} out_max_val: {str(rng.random() < 0.5).lower()} "
                   + (f"axis: {axis} }}" if rng.random() < 0.5 else "}")),
    }[type_]
    return layer("l", type_, ["data"], ["l"], params), {"data": shape}


def broadcast_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = random_shape(rng)
    ndim = len(shape)
    axis = rng.randint(-ndim, ndim - 1)
    start = axis % ndim
    inputs = {"data": shape}
    if rng.random() < 0.4:  # a second bottom: the input's axes from ``axis`` on, one or more of them
        inputs["operand"] = shape[start:rng.randint(start + 1, ndim)]
        bottoms, num_axes = ["data", "operand"], ""
    else:
        bottoms, num_axes = ["data"], f"num_axes: {rng.choice((-1, *range(0, ndim - start + 1)))}"
    name = "scale_param" if type_ == "Scale" else "bias_param"
    bias = f"bias_term: {str(rng.random() < 0.5).lower()}" if type_ == "Scale" else ""
    return layer("l", type_, bottoms, ["l"], f"{name} {{ axis: {axis} {num_axes} {bias} }}"), inputs


def elementwise_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = random_shape(rng, 2, 4)
    if type_ == "Eltwise":
        count = rng.randint(2, 3)
        operation = rng.choice(("SUM", "PROD", "MAX"))
        coeffs = dims([rng.choice((1, -1, 0.5)) for _ in range(count)], "coeff") if operation == "SUM" else ""
        inputs = {f"in{i}": shape for i in range(count)}
        return layer("l", type_, list(inputs), ["l"], f"eltwise_param {{ operation: {operation} {coeffs} }}"), inputs
    if type_ in ("Axpy", "AxpyFast"):
        x = (rng.randint(1, 2), rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 4))
        a = x[:2] if rng.random() < 0.5 else (*x[:2], 1, 1)
        return layer("l", type_, ["a", "x", "y"], ["l"]), {"a": a, "x": x, "y": x}
    params = {
        "PReLU": f"prelu_param {{ channel_shared: {str(rng.random() < 0.3).lower()} }}",
        "BatchNorm": f"batch_norm_param {{ use_global_stats: {str(rng.random() < 0.7).lower()} }}",
        "BN": rng.choice(("", "bn_param { var_eps: 1e-5 moving_average: true }", "bn_param { axis: 2 }")),
        "MVN": (f"mvn_param {{ across_channels: {str(rng.random() < 0.5).lower()} "
                f"normalize_variance: {str(rng.random() < 0.5).lower()} }}"),
        "Normalize": (f"norm_param {{ across_spatial: {str(rng.random() < 0.5).lower()} "
                      f"channel_shared: {str(rng.random() < 0.5).lower()} }}"),
        "LRN": (f"lrn_param {{ local_size: {rng.choice((1, 3, 5))} "
                f"norm_region: {rng.choice(('ACROSS_CHANNELS', 'WITHIN_CHANNEL'))} }}"),
        "ShuffleChannel": f"shuffle_channel_param {{ group: {rng.randint(1, 3)} }}",
        "Embed": f"embed_param {{ num_output: {rng.randint(1, 4)} input_dim: {rng.randint(1, 4)} }}",
        "CropCenter": f"crop_center_param {{ {dims([rng.randint(0, (d - 1) // 2) for d in shape], 'crop_size')} }}",
        "Permute": (f"permute_param {{ {dims(rng.sample(range(len(shape)), rng.randint(0, len(shape))), 'order')} "
                    "}"),
    }.get(type_, "")
    if type_ == "LRN" or type_ == "ShuffleChannel" and rng.random() < 0.7:
        shape = (rng.randint(1, 2), rng.choice((1, 2, 3, 4, 6)), rng.randint(1, 5), rng.randint(1, 5))
    return layer("l", type_, ["data"], ["l"], params), {"data": shape}


def resize_case(rng: random.Random, type_: str) -> tuple[str, dict]:
    shape = (rng.randint(1, 2), rng.randint(1, 3), rng.randint(1, 7), rng.randint(1, 7))
    if type_ == "Upsample":
        params = rng.choice((f"scale: {rng.randint(1, 3)}", f"scale_h: {rng.randint(1, 3)} scale_w: {rng.randint(1, 3)}",
                             f"upsample_h: {rng.randint(1, 9)} upsample_w: {rng.randint(1, 9)}"))
        return layer("l", type_, ["data"], ["l"], f"upsample_param {{ {params} }}"), {"data": shape}
    if type_ == "Reorg":
        stride = rng.randint(1, 3)
        shape = (shape[0], stride * stride * rng.randint(1, 2), stride * rng.randint(1, 3), stride * rng.randint(1, 3))
        params = f"reorg_param {{ stride: {stride} reverse: {str(rng.random() < 0.5).lower()} }}"
        return layer("l", type_, ["data"], ["l"], params), {"data": shape}
    pads = f"pad_beg: {-rng.randint(0, 1)} pad_end: {-rng.randint(0, 1)}" if rng.random() < 0.3 else ""
    if rng.random() < 0.2:
        reference = (1, 1, rng.randint(1, 9), rng.randint(1, 9))
        return layer("l", type_, ["data", "ref"], ["l"], f"interp_param {{ {pads} }}"), {"data": shape, "ref": reference}
    rule = rng.choice((f"zoom_factor: {rng.randint(1, 3)}", f"shrink_factor: {rng.randint(1, 3)}",
                       f"height: {rng.randint(1, 9)} width: {rng.randint(1, 9)}",
                       f"zoom_factor: {rng.randint(1, 3)} shrink_factor: {rng.randint(1, 3)}"))
    return layer("l", type_, ["data"], ["l"], f"interp_param {{ {rule} {pads} }}"), {"data": shape}


FAMILIES: dict[str, tuple[Callable[[random.Random, str], tuple[str, dict]], tuple[str, ...]]] = {
    "convolution": (conv_case, ("Convolution", "Deconvolution", "DepthwiseConvolution", "ConvolutionDepthwise",
                                "HoleConvolution")),
    "pooling": (pooling_case, ("Pooling",)),
    "inner_product": (inner_product_case, ("InnerProduct",)),
    "reshape": (reshape_case, ("Reshape",)),
    "concat": (concat_case, ("Concat",)),
    "slice": (slice_case, ("Slice",)),
    "crop": (crop_case, ("Crop",)),
    "axis": (axis_case, ("Flatten", "Tile", "Softmax", "Reduction", "ArgMax")),
    "broadcast": (broadcast_case, ("Scale", "Bias")),
    "elementwise": (elementwise_case, ("Eltwise", "Axpy", "AxpyFast", "PReLU", "BatchNorm", "BN", "MVN", "Normalize",
                                       "LRN", "ShuffleChannel", "Embed", "CropCenter", "Permute", "ReLU", "ReLU6",
                                       "Sigmoid", "TanH", "Dropout", "AbsVal", "BNLL", "Swish", "Power", "ELU",
                                       "Threshold", "Exp")),
    "resize": (resize_case, ("Upsample", "Interp", "Reorg")),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_rules_state_what_the_modules_make_over_random_parameters(family: str) -> None:
    make_case, types = FAMILIES[family]
    rng = random.Random(f"shape rules {family}")
    audit = Audit()
    converted = refused = 0
    for _ in range(max(80, 24 * len(types))):
        body, inputs = make_case(rng, rng.choice(types))
        audit.where = body
        if run_audited(body, inputs, audit):
            converted += 1
        else:
            refused += 1
    assert audit.problems == []
    assert converted >= refused / 2 and converted >= 40, (converted, refused)


@pytest.mark.parametrize("layer_type", registered_types())
def test_rules_state_what_the_modules_make_in_the_fuzzers_random_nets(layer_type: str) -> None:
    """The fuzzer's nets (random and often extreme parameters, random wiring): each that converts and is small
    runs on real tensors, every call checked."""
    rng = random.Random(f"fuzz {layer_type}")
    audit = Audit()
    stated: list[tuple[int, ...]] = []
    original = build._infer_shapes

    def recording(module: nn.Module, input_shapes: Any) -> list[tuple[int, ...]]:
        result = original(module, input_shapes)
        stated.extend(result)
        return result

    for _ in range(40):
        text = random_net(rng, [layer_type])
        stated.clear()
        try:
            with memory_budget(16 << 20), pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                patch.setattr(build, "_infer_shapes", recording)
                model = convert(parse_prototxt(text), None, random_init=True)
        except Caffe2TorchError:
            continue
        sizes = [math.prod(shape) for shape in [*model.input_shapes, *stated]]
        if max(sizes) > 1 << 16:
            continue
        audit.where = text
        with audit.watching(), torch.no_grad():
            model(*[torch.rand(shape) for shape in model.input_shapes])
    assert audit.problems == []


def test_the_convention_stages_state_their_shapes() -> None:
    stage = NormalizedRGBToCaffe(3, reverse_channels=True)
    x = torch.rand(2, 3, 4, 5)
    assert rule_problem(stage, (x,), stage(x)) is None
    select = SelectClasses(7)
    select.index = torch.tensor([6, 0, 2])
    y = torch.rand(2, 7)
    assert shapes.output_shapes(select, [(2, 7)]) == [(2, 3)] and rule_problem(select, (y,), select(y)) is None
    with pytest.raises(ValueError, match="the input has 4 channels at axis 1, the layer 3"):
        shapes.output_shapes(stage, [(2, 4, 4, 5)])


def test_split_and_silence_state_their_shapes() -> None:
    x = torch.rand(2, 3)
    split = library.Split(3)
    assert rule_problem(split, (x,), split(x)) is None
    assert shapes.output_shapes(library.Silence(), [(2, 3), (4,)]) == []


# --- the zoo and the real models: the shapes of a meta run ----------------------------------------------------


def rule_and_meta_shapes(load: Callable[[], nn.Module]) -> tuple[nn.Module, list[tuple[str, list, list]]]:
    """Each layer's shapes by rule, beside those of running its module on meta tensors; blobs not initialised."""
    calls: list[tuple[nn.Module, list, list]] = []
    original = build._infer_shapes

    def recording(module: nn.Module, input_shapes: Any) -> list[tuple[int, ...]]:
        result = original(module, input_shapes)
        calls.append((module, list(input_shapes), result))
        return result

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patch.setattr(build, "_infer_shapes", recording)
        patch.setattr(registry, "_initial_blob", lambda name, index, shape, init: torch.empty(shape))
        model = load()
    return model, [(type(module).__qualname__, stated, shapes.meta_output_shapes(module, input_shapes))
                   for module, input_shapes, stated in calls]


def assert_meta_shapes(load: Callable[[], nn.Module]) -> nn.Module:
    model, calls = rule_and_meta_shapes(load)
    assert len(calls) > 5
    assert [call for call in calls if call[1] != call[2]] == []
    return model


class Wrapped(nn.Module):
    """A converted net inside a plain module: count_macs cannot use the rules, and runs it on meta tensors."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.net(*xs)


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_zoo_nets_get_the_shapes_and_macs_of_a_meta_run(name: str) -> None:
    entry = zoo.get(name)
    model = assert_meta_shapes(lambda: caffe2torch.load(entry.build(), random_init=True))
    macs = count_macs(model, model.input_shapes)
    assert macs == count_macs(Wrapped(model), model.input_shapes) == entry.macs


REAL_PROTOTXTS = sorted([*SHARED.glob("realmodels/*/*.prototxt"), *SHARED.glob("realmodels/forks/*/*.prototxt"),
                         *SHARED.glob("senet/models/*.prototxt")])


@pytest.mark.skipif(not REAL_PROTOTXTS, reason=f"reference data {SHARED} is absent")
@pytest.mark.parametrize("prototxt", REAL_PROTOTXTS, ids=[p.name for p in REAL_PROTOTXTS])
def test_real_models_get_the_shapes_of_a_meta_run(prototxt: Path) -> None:
    model = assert_meta_shapes(lambda: caffe2torch.load(prototxt, random_init=True))
    assert count_macs(model, model.input_shapes) == count_macs(Wrapped(model), model.input_shapes)


# --- shapes a layer cannot take -------------------------------------------------------------------------------


@pytest.mark.parametrize("module, input_shapes, message", [
    (library.Concat(1), [(1, 2, 3), (1, 3, 4)], r"bottoms differ outside axis 1: \[\[1, 2, 3\], \[1, 3, 4\]\]"),
    (library.Eltwise("SUM", (1.0, 1.0)), [(1, 2), (1, 3)], r"bottoms have different shapes"),
    (library.Eltwise("SUM", (1.0,)), [(1, 2), (1, 2)], r"1 coefficients for 2 inputs"),
    (library.Reshape((5, -1), 0, -1), [(2, 6)], r"the 12 values of shape \[2, 6\] cannot be reshaped to \[5, -1\]"),
    (library.Reshape((5, 2), 0, -1), [(2, 6)], r"cannot be reshaped to \[5, 2\] \(10 values\)"),
    (library.Crop(2, (1, 2)), [(1, 1, 4, 4), (1, 1, 3, 3)], r"crop of axis 3 is out of bounds: size 3 at offset 2"),
    (library.Pooling("MAX", (5, 5), (1, 1), (1, 1), False, True), [(1, 1, 2, 8)],
     r"kernel \(5, 5\) is larger than the input \[2, 8\] padded by \(1, 1\)"),
    (library.InnerProduct(6, 2, True, 3), [(2, 3, 2)], r"axis 3 is out of range for a 3-D input"),
    (library.InnerProduct(7, 2, True, 1), [(2, 3, 2)], r"holds 6 values per row from axis 1, the weight takes 7"),
    (library.Slice(1, (2, 5), 3), [(1, 4)], r"slice_point \[2, 5\] must increase strictly"),
    (library.Axpy(), [(1, 3), (1, 2, 4, 4), (1, 2, 4, 4)], r"a must be N x C x 1 x 1"),
    (library.Reorg(2, False), [(1, 4, 3, 4)], r"stride 2 must divide the height 3"),
    (library.Permute((0, 2)), [(1, 2, 3)], r"order \[0, 2\] is not a permutation of the 3 axes"),
    (library.CropCenter((1, 2)), [(3, 4)], r"crop_size 2 leaves nothing of axis 1 \(size 4\)"),
])
def test_rules_say_what_is_wrong_with_shapes(module: nn.Module, input_shapes: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shapes.output_shapes(module, input_shapes)


def refusal(body: str, inputs: dict[str, tuple[int, ...]]) -> str:
    with pytest.raises(ConversionError) as error:
        convert(parse_prototxt(input_layers(inputs) + "\n" + body), None, random_init=True)
    return str(error.value)


def test_a_reshape_of_the_wrong_count_is_the_layers_error() -> None:
    message = refusal(layer("flat", "Reshape", ["data"], ["flat"], "reshape_param { shape { dim: 0 dim: 5 } }"),
                      {"data": (2, 3, 2)})
    assert message == ("layer 'flat' (Reshape): cannot run on inputs of shape [2, 3, 2]: the 12 values of shape "
                       "[2, 3, 2] cannot be reshaped to [2, 5] (10 values)")


@pytest.mark.parametrize("body, inputs, message", [
    (layer("cat", "Concat", ["a", "b"], ["cat"]), {"a": (1, 2, 3), "b": (1, 3, 4)},
     "layer 'cat' (Concat): bottoms differ outside axis 1"),
    (layer("sum", "Eltwise", ["a", "b"], ["sum"]), {"a": (1, 2), "b": (1, 3)},
     "layer 'sum' (Eltwise): bottoms have different shapes"),
    (layer("crop", "Crop", ["a", "b"], ["crop"], "crop_param { axis: 2 offset: 2 }"),
     {"a": (1, 1, 4, 4), "b": (1, 1, 3, 3)}, "layer 'crop' (Crop): crop of axis 2 is out of bounds"),
    (layer("pool", "Pooling", ["a"], ["pool"], "pooling_param { kernel_size: 5 pad: 1 }"), {"a": (1, 1, 2, 8)},
     "layer 'pool' (Pooling): kernel (5, 5) is larger than the input [2, 8] padded by (1, 1)"),
    (layer("ip", "InnerProduct", ["a"], ["ip"], "inner_product_param { num_output: 2 axis: 3 }"), {"a": (2, 3, 2)},
     "layer 'ip' (InnerProduct): axis 3 is out of range for a 3-D input"),
    (layer("sc", "Scale", ["a", "b"], ["sc"]), {"a": (2, 3, 4), "b": (4,)},
     "layer 'sc' (Scale): operand of shape [4] does not match input shape [2, 3, 4] from axis 1"),
])
def test_shapes_a_layer_cannot_take_are_errors_naming_it(body: str, inputs: dict, message: str) -> None:
    assert message in refusal(body, inputs)


# --- custom layers without a rule -----------------------------------------------------------------------------


class Doubles(nn.Module):
    """A user's layer without a rule: its last axis doubled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], -1)


class Stretched(library.ReLU):
    """A user's subclass of a library class computing another shape: the inherited rule would be wrong."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x], 1)


@pytest.mark.parametrize("converter", [lambda ctx: make(Doubles), lambda ctx: make(Stretched, negative_slope=0.0)])
def test_a_users_module_without_a_rule_is_run_on_meta_tensors(converter: Callable) -> None:
    with registered("Custom", converter, bottoms=1, tops=1):
        model = convert(parse_prototxt(input_layers({"data": (2, 3)}) + layer("c", "Custom", ["data"], ["c"])))
    assert model.output_shapes["c"] == tuple(model(torch.rand(2, 3)).shape) == (2, 6)


def test_a_users_subclass_that_keeps_forward_keeps_the_rule() -> None:
    class Named(library.ReLU):
        pass

    class Padded(nn.Conv2d):  # may compute otherwise through _conv_forward: torch's rule is not taken for it
        pass

    assert shapes.shape_rule(Named(0.0)) is not None and shapes.shape_rule(nn.Conv2d(1, 1, 1)) is not None
    assert shapes.shape_rule(Stretched(0.0)) is None and shapes.shape_rule(Doubles()) is None
    assert shapes.shape_rule(Padded(1, 1, 1)) is None


# --- the load path imports no meta machinery ------------------------------------------------------------------

HEAVY = ("torch._dynamo", "sympy")


def fresh_process(code: str) -> list[str]:
    script = code + f"\nimport sys\nprint(repr([name for name in {HEAVY!r} if name in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return eval(result.stdout.strip().splitlines()[-1])


def test_loading_lenet_imports_neither_dynamo_nor_sympy(realmodels: Path) -> None:
    lenet = realmodels / "lenet"
    assert fresh_process(f"import caffe2torch\nmodel = caffe2torch.load({str(lenet / 'lenet.prototxt')!r}, "
                         f"{str(lenet / 'lenet_iter_10000.caffemodel')!r})\nassert model.output_shapes") == []


def test_info_imports_neither_dynamo_nor_sympy(realmodels: Path) -> None:
    prototxt = realmodels / "lenet" / "lenet.prototxt"
    code = ("from click.testing import CliRunner\nfrom caffe2torch.cli import main\n"
            f"result = CliRunner().invoke(main, ['info', {str(prototxt)!r}])\n"
            "assert result.exit_code == 0 and 'multiply-accumulates' in result.output, result.output")
    assert fresh_process(code) == []


def test_the_check_would_see_a_meta_run() -> None:
    """Positive control: one op on meta tensors is enough to import them."""
    assert set(fresh_process("import torch\ntorch.relu(torch.empty(2, device='meta'))")) == set(HEAVY)
