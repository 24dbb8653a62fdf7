"""Hostile and broken nets: the converter answers with a Caffe2TorchError naming the layer, never a
traceback from torch or Python, allocates nothing the memory budget has not allowed, and names from the
file never become code.

Each test builds its own small reproducer of a failure that a fuzzing campaign found.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from torch import nn

import caffe2torch
from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.converter import build_graph, convert, registered, registry
from caffe2torch.converter.build import Identifiers, reserved_names
from caffe2torch.converter.export import _literal, export, generate_code
from caffe2torch.converter.layers.common import make
from caffe2torch.modules.pooling import average_divisors
from caffe2torch.errors import ConversionError, InputError, ResourceLimitError
from caffe2torch.limits import memory_budget


def input_layer(shape: tuple[int, ...] = (1, 4, 8, 8), name: str = "data") -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}'


def net(*layers: str, shape: tuple[int, ...] = (1, 4, 8, 8)):
    return parse_prototxt("\n".join([input_layer(shape), *layers]))


def layer(name: str, type_: str, bottoms: list[str], tops: list[str], params: str = "") -> str:
    wiring = " ".join([*(f'bottom: "{b}"' for b in bottoms), *(f'top: "{t}"' for t in tops)])
    return f'layer {{ name: "{name}" type: "{type_}" {wiring} {params} }}'


def convert_random(network, **kwargs):
    return convert(network, None, random_init=True, **kwargs)


# --- 1. preconditions checked before anything is built ------------------------------------------------------


@pytest.mark.parametrize("type_, bottoms, tops, params, message", [
    ("Concat", [], ["out"], "", r"needs at least 1 bottom\(s\), got 0"),
    ("Pooling", ["data", "data"], ["out"], "pooling_param { kernel_size: 2 }", r"needs exactly 1 bottom\(s\), got 2"),
    ("Softmax", [], ["out"], "", r"needs exactly 1 bottom\(s\), got 0"),
    ("InnerProduct", [], ["out"], "inner_product_param { num_output: 2 }", r"needs exactly 1 bottom"),
    ("ArgMax", [], ["out"], "", r"needs exactly 1 bottom"),
    ("Scale", ["data", "data", "data"], ["out"], "", r"needs 1 to 2 bottom\(s\), got 3"),
    ("Convolution", [], ["out"], "convolution_param { num_output: 2 kernel_size: 1 }", r"needs exactly 1 bottom"),
    ("Pooling", ["data"], ["out", "mask"], "pooling_param { kernel_size: 2 }", r"needs exactly 1 top\(s\), got 2"),
    ("Slice", ["data"], [], "", r"needs at least 1 top\(s\), got 0"),
    ("Silence", ["data"], ["out"], "", r"needs exactly 0 top\(s\), got 1"),
    ("Crop", ["data"], ["out"], "", r"needs exactly 2 bottom\(s\), got 1"),
])
def test_bottom_and_top_counts_are_checked_before_the_converter_runs(type_, bottoms, tops, params, message) -> None:
    with pytest.raises(ConversionError, match=rf"layer 'bad' \({type_}\): {message}"):
        convert_random(net(layer("bad", type_, bottoms, tops, params)))


@pytest.mark.parametrize("type_, params, message", [
    ("Convolution", "num_output: 4 kernel_size: 3 group: 0", "group 0 does not divide"),
    ("Convolution", "num_output: 4 kernel_size: 3 group: 3", "group 3 does not divide the 4 input"),
    ("Convolution", "num_output: 3 kernel_size: 3 group: 2", "group 2 does not divide .* 3 output"),
    ("Convolution", "num_output: 4 kernel_size: 0", "kernel size must be given and positive"),
    ("Convolution", "num_output: 4 kernel_size: 3 stride: 0", r"stride \(0, 0\) and dilation \(1, 1\) must be"),
    ("Convolution", "num_output: 4 kernel_size: 3 dilation: 0", r"stride \(1, 1\) and dilation \(0, 0\) must"),
    ("Convolution", "num_output: 0 kernel_size: 3", "num_output must be positive, got 0"),
    ("Deconvolution", "num_output: 4 kernel_size: 3 group: 0", "group 0 does not divide"),
    ("Deconvolution", "num_output: 4 kernel_size: 2 pad: 5", r"kernel \(2, 2\), stride \(1, 1\), pad \(5, 5\) "
     r"and dilation \(1, 1\) leave no output for an input of \[8, 8\]"),
    ("Convolution", "num_output: 4 kernel_size: 9", r"kernel \(9, 9\), .* leave no output"),
    ("Convolution", "num_output: 4 kernel_size: 3 dilation: 4", r"kernel \(3, 3\), .* dilation \(4, 4\) leave no output"),
    ("Pooling", "kernel_size: 2 stride: 0", r"stride \(0, 0\) must be positive"),
    ("Pooling", "kernel_size: 9", r"kernel \(9, 9\) is larger than the input \[8, 8\] padded by \(0, 0\)"),
    ("Pooling", "pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 4294967295 stride_w: 1",
     r"stride \(4294967295, 1\) exceeds 2147483647, the largest Caffe holds"),
    ("Convolution", "num_output: 4 kernel_size: 3 pad: 3000000000", r"pad \(3000000000, 3000000000\) exceeds"),
    ("InnerProduct", "num_output: 0", "num_output must be positive, got 0"),
    ("LRN", "local_size: 4294967295", "local_size 4294967295 exceeds 2147483647"),
])
def test_bad_parameters_are_refused_naming_the_layer(type_: str, params: str, message: str) -> None:
    field = {"Deconvolution": "convolution", "InnerProduct": "inner_product"}.get(type_, type_.lower())
    body = layer("bad", type_, ["data"], ["out"], f"{field}_param {{ {params} }}")
    with pytest.raises(ConversionError, match=rf"layer 'bad' \({type_}\): {message}"):
        convert_random(net(body))


@pytest.mark.parametrize("shape, message", [
    ((1, -3, 8, 8), r"has shape \[1, -3, 8, 8\]: every dimension must be positive"),
    ((1, 0, 8, 8), r"has shape \[1, 0, 8, 8\]: every dimension must be positive"),
    ((1,) * 33, r"has shape \[1(, 1)*\]: a blob has at most 32 axes"),
    ((1, 2**31), r"has shape \[1, 2147483648\]: a dimension exceeds 2147483647"),
])
def test_net_input_shapes_are_validated(shape: tuple[int, ...], message: str) -> None:
    body = layer("conv", "Convolution", ["data"], ["conv"], "convolution_param { num_output: 2 kernel_size: 1 }")
    with pytest.raises(ConversionError, match=rf"input 'data' \(from Input layer 'data'\) {message}"):
        convert_random(net(body, shape=shape))


def test_input_shape_argument_is_validated_as_well() -> None:
    network = net(layer("relu", "ReLU", ["data"], ["relu"]))
    with pytest.raises(ConversionError, match=r"input 'data' .* \[1, -1\]: every dimension must be positive"):
        convert_random(network, input_shape=(1, -1))
    with pytest.raises(ConversionError, match=r"input 'data' .* is not a list of integers"):
        convert_random(network, input_shape=(1, 2.5))


def test_input_layer_with_a_shape_count_that_fits_no_top() -> None:
    text = ('layer { name: "in" type: "Input" top: "a" top: "b" top: "c" '
            'input_param { shape { dim: 1 } shape { dim: 2 } } }')
    with pytest.raises(ConversionError, match=r"Input layer 'in' gives 2 shapes for 3 tops"):
        convert_random(parse_prototxt(text))


# --- 2. anything else a converter or shape inference raises is wrapped ---------------------------------------


class DividesByZero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (1 // 0)


def raises_key_error(ctx: registry.LayerContext) -> nn.Module:
    return {}["missing"]


def fails_in_forward(ctx: registry.LayerContext) -> nn.Module:
    return make(DividesByZero)


@pytest.fixture
def failing_types() -> Iterator[tuple[str, str]]:
    with registered("TestKeyError", raises_key_error), registered("TestForwardFails", fails_in_forward):
        yield "TestKeyError", "TestForwardFails"


def test_unexpected_errors_become_conversion_errors_that_keep_the_cause(failing_types) -> None:
    in_converter, in_forward = failing_types
    with pytest.raises(ConversionError, match=r"layer 'odd' \(TestKeyError\): cannot be converted: "
                                              r"KeyError: 'missing'") as error:
        convert_random(net(layer("odd", in_converter, ["data"], ["out"])))
    assert isinstance(error.value.__cause__, KeyError)
    with pytest.raises(ConversionError, match=r"layer 'odd' \(TestForwardFails\): cannot run on inputs of shape "
                                              r"\[1, 4, 8, 8\]: ZeroDivisionError") as error:
        convert_random(net(layer("odd", in_forward, ["data"], ["out"])))
    assert isinstance(error.value.__cause__, ZeroDivisionError)


@pytest.mark.parametrize("blob, message", [
    (np.ones(2, np.complex64), "blob 0 holds complex64 values, not real numbers"),
    (np.array(["1", "2"]), "blob 0 holds <U1 values, not real numbers"),
    ([[1.0], [1.0, 2.0]], "cannot be converted: ValueError"),  # ragged: numpy refuses it
])
def test_blobs_that_are_not_arrays_of_numbers(blob, message: str) -> None:
    with pytest.raises(ConversionError, match=rf"layer 'prelu' \(PReLU\): {re.escape(message)}"):
        convert(net(layer("prelu", "PReLU", ["data"], ["prelu"]), shape=(1, 2)), {"prelu": [blob]})


def test_summary_of_a_net_whose_reshape_spells_out_the_batch() -> None:
    from caffe2torch.converter.summary import summarize

    body = [layer("r", "Reshape", ["data"], ["r"], "reshape_param { shape { dim: 4 dim: 3 } }"),
            layer("ip", "InnerProduct", ["r"], ["ip"], "inner_product_param { num_output: 2 }")]
    summary = summarize(net(*body, shape=(2, 6)))  # MACs at batch 1 were a RuntimeError from torch
    assert summary["conversion_error"] is None
    assert summary["macs"] == 4 * 3 * 2 // 2  # the batch of 2 as given, per sample


# --- 3. reserved names ----------------------------------------------------------------------------------------


def test_identifiers_avoid_every_name_the_module_or_model_py_uses() -> None:
    reserved = reserved_names()
    for name in ("training", "_modules", "_parameters", "_buffers", "caffe_names", "net_name", "input_names",
                 "self", "forward", "state_dict", "print", "len", "class", "torch", "nn", "F", "os", "Net",
                 "load", "NET_NAME", "CAFFE_NAMES", "INPUTS", "INPUT_SHAPES", "Pooling", "caffe_pool2d"):
        assert name in reserved
    identifier = Identifiers()
    names = ("training", "training", "training_", "1x", "a b", "", "é", "self", "__init__", "__x", "__x")
    made = [identifier(name) for name in names]
    assert made == ["training_", "training_2", "training_3", "_1x", "a_b", "_", "_2", "self_", "_init__", "_x",
                    "_x_2"]
    assert not set(made) & reserved and all(name.isidentifier() for name in made)
    assert not any(name.startswith("__") for name in made)  # self.__x in class Net would be name-mangled


def test_same_names_are_numbered_in_linear_time() -> None:
    identifier = Identifiers()
    start = time.perf_counter()
    names = [identifier("relu") for _ in range(10000)]
    assert len(set(names)) == 10000 and names[-1] == "relu_10000"
    assert time.perf_counter() - start < 2  # well under 0.1 s; trying every suffix from 2 took over 10 s


# --- 4. memory: every allocation sized by the net is charged first -------------------------------------------


def test_random_init_of_a_huge_convolution_is_refused_before_allocating() -> None:
    body = layer("huge", "Convolution", ["data"], ["out"],
                 "convolution_param { num_output: 4194304 kernel_size: 4096 pad: 2047 }")
    with pytest.raises(ResourceLimitError, match=r"layer 'huge' \(Convolution\): blob 0 of shape "
                                                 r"\[4194304, 4, 4096, 4096\] would need 1024.0 TiB"):
        convert_random(net(body))


def test_one_budget_for_all_layers_of_a_conversion() -> None:
    # two inner products of 4 x 3,000,000 floats: 48 MB each, fine alone under 64 MB, not together
    body = [layer(f"ip{i}", "InnerProduct", ["data"], [f"ip{i}"], "inner_product_param { num_output: 4 "
                  "bias_term: false }") for i in (1, 2)]
    network = net(*body, shape=(1, 3_000_000))
    with memory_budget(64 << 20):
        convert_random(net(body[0], shape=(1, 3_000_000)))
    with memory_budget(64 << 20), pytest.raises(ResourceLimitError, match=r"layer 'ip2' .* on top of 45.8 MiB"):
        convert_random(network)


def test_weights_from_the_caller_are_charged_for_their_float32_copy() -> None:
    body = layer("ip", "InnerProduct", ["data"], ["ip"], "inner_product_param { num_output: 4 bias_term: false }")
    weights = {"ip": [np.zeros((4, 3_000_000), np.float64)]}
    with memory_budget(32 << 20), pytest.raises(ResourceLimitError, match=r"layer 'ip' \(InnerProduct\): blob 0"):
        convert(net(body, shape=(1, 3_000_000)), weights)


def test_load_reads_the_weights_and_converts_under_one_budget(tmp_path: Path, monkeypatch) -> None:
    from caffe2torch.caffe_proto import read_weights, write_hdf5

    body = layer("ip", "InnerProduct", ["data"], ["ip"], "inner_product_param { num_output: 4 bias_term: false }")
    text = "\n".join([input_layer((1, 100_000)), body])
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    weights = tmp_path / "net.caffemodel.h5"
    write_hdf5(parse_prototxt(text), {"ip": [np.ones((4, 100_000), np.float32)]}, weights)  # 1.6 MB
    monkeypatch.setenv("CAFFE2TORCH_MAX_MEMORY", "2M")
    assert convert(parse_prototxt(text), read_weights(weights))(torch.ones(1, 100_000)).shape == (1, 4)
    with pytest.raises(ResourceLimitError, match=r"layer 'ip' \(InnerProduct\): blob 0 .* on top of"):
        caffe2torch.load(prototxt, weights)  # reading and the float32 copy together exceed 2 MiB


# --- 5. AVE pooling divisors are computed by torch -------------------------------------------------------------


def test_average_divisors_are_one_tensor_even_for_huge_maps() -> None:
    divisors = average_divisors(2**31 - 1, 3, 1, 1, 2**31 - 1, device="meta")
    assert divisors.shape == (2**31 - 1,) and divisors.device.type == "meta"
    size, kernel, stride, pad = 6, 3, 2, 1  # the last window is clipped to the padded input
    expected = [min(i * stride - pad + kernel, size + pad) - (i * stride - pad) for i in range(4)]
    assert average_divisors(size, kernel, stride, pad, 4).tolist() == expected == [3, 3, 3, 2]


def test_ave_pooling_of_a_big_map_builds_no_python_list() -> None:
    body = layer("pool", "Pooling", ["data"], ["pool"], "pooling_param { pool: AVE kernel_size: 3 stride: 1 pad: 1 }")
    network = net(body, shape=(1, 1, 2**22, 2**22))
    convert_random(network)  # once before measuring: torch's meta kernels load lazily
    tracemalloc.start()
    try:
        model = convert_random(network)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert model.output_shapes == {"pool": (1, 1, 2**22, 2**22)}
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB"  # a list of 2**22 divisors per axis: 32 MiB each


# --- 6. graph building is linear in the number of layers ---------------------------------------------------------


def chain(length: int) -> str:
    return "\n".join([input_layer((1, 2), "b0"), *(layer(f"relu{i}", "ReLU", [f"b{i}"], [f"b{i + 1}"])
                                                   for i in range(length))])


def test_graph_of_a_long_chain_takes_linear_memory() -> None:
    network = parse_prototxt(chain(3000))
    tracemalloc.start()
    try:
        graph = build_graph(network)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(graph.layers) == 3000
    assert peak < 20 << 20, f"{peak / 2**20:.0f} MiB"  # the quadratic version: over 200 MiB (6,000: 900)


# --- 7. generated code: every constructor argument is a literal ----------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 0.1, -0.0, 1e-310, 2**70, True,
                                   None, "a'\"\n\u2028", (1,), (), [float("nan"), (float("inf"),)],
                                   {"k": -float("inf")}])
def test_literals_evaluate_back_to_an_equal_value(value) -> None:
    text = _literal(value)
    again = eval(text, {"__builtins__": {"float": float}})
    assert type(again) is type(value)
    assert json.dumps(again) == json.dumps(value) and repr(again) == repr(value)  # NaN-aware equality


@pytest.mark.parametrize("value", [np.float32(1.0), np.int64(1), object(), {1, 2}, [np.float64(2.0)]])
def test_values_without_a_safe_literal_are_refused(value) -> None:
    with pytest.raises(TypeError, match="is not plain data"):
        _literal(value)


def test_non_finite_parameters_export_and_import(tmp_path: Path) -> None:
    body = [
        layer("relu", "ReLU", ["data"], ["relu"], "relu_param { negative_slope: nan }"),
        layer("clip", "Clip", ["data"], ["clip"], "clip_param { min: -inf max: inf }"),
        layer("weighted", "Eltwise", ["clip", "data"], ["weighted"], "eltwise_param { coeff: inf coeff: -inf }"),
        layer("threshold", "Threshold", ["data"], ["threshold"], "threshold_param { threshold: -inf }"),
    ]
    model = convert_random(net(*body, shape=(2, 3)))
    assert math.isnan(model.relu.negative_slope) and model.clip.low == -math.inf
    namespace: dict = {}
    exec(compile(generate_code(model), "model.py", "exec"), namespace)
    standalone = namespace["Net"]()
    assert math.isnan(standalone.relu.negative_slope) and standalone.weighted.coeffs == (math.inf, -math.inf)
    x = torch.tensor([[1.0, -2.0, 0.0], [3.0, -0.5, 4.0]])
    expected, actual = model(x), standalone(x)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, equal_nan=True)


def test_transposed_single_output_inner_product_exports_bit_for_bit() -> None:
    body = layer("ip", "InnerProduct", ["data"], ["ip"], "inner_product_param { num_output: 1 axis: 0 transpose: true }")
    model = convert_random(net(body, shape=(8, 3, 6, 8)))
    assert model.ip.weight.stride() == (1152, 1)  # as load_state_dict leaves it in model.py, not (1, 1)
    namespace: dict = {}
    exec(compile(generate_code(model), "model.py", "exec"), namespace)
    standalone = namespace["Net"]()
    standalone.load_state_dict(model.state_dict())
    x = torch.randn(8, 3, 6, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(standalone(x), model(x))


def test_export_refuses_an_argument_that_is_not_plain_data() -> None:
    model = convert_random(net(layer("prob", "Softmax", ["data"], ["prob"])))
    model.prob._init_kwargs["axis"] = np.int64(1)
    with pytest.raises(InputError, match=r"cannot export layer 'prob': argument 'axis' of its Softmax cannot be "
                                         r"written as code: .* is not plain data"):
        generate_code(model)


# --- 8. hostile names end to end ----------------------------------------------------------------------------------


HOSTILE_NAMES = [
    'quote"d', "single'quote", "new\nline", "back\\slash", "line\u2028separator", "__import__('os').system('touch PWNED')",
    "class", "lambda", "print", "len", "torch", "self", "training", "forward", "_modules", "state_dict",
    "caffe_names", "net_name", "input_names", "_parameters", "F", "nn", "Net", "load", "INPUTS", "CAFFE_NAMES",
    "", "0digit", "é",
]


def prototxt_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid prototxt string for these characters


def hostile_net() -> str:
    """Two inputs and a chain of layers with parameters (so that a submodule name export got wrong shows in
    the state dict), every input, layer and top named by one of HOSTILE_NAMES."""
    first, second = HOSTILE_NAMES[:2]
    lines = [f"layer {{ name: {prototxt_string(name)} type: \"Input\" top: {prototxt_string(name)} "
             f"input_param {{ shape {{ dim: 2 dim: 3 }} }} }}" for name in (first, second)]
    previous = first
    for name in HOSTILE_NAMES[2:]:
        lines.append(f"layer {{ name: {prototxt_string(name)} type: \"PReLU\" bottom: {prototxt_string(previous)} "
                     f"top: {prototxt_string(name)} }}")
        previous = name
    lines.append(f"layer {{ name: \"join\" type: \"Eltwise\" bottom: {prototxt_string(previous)} "
                 f"bottom: {prototxt_string(second)} top: \"joined\" }}")
    return "\n".join(lines)


def test_hostile_names_convert_select_outputs_and_export_to_a_fresh_process(tmp_path: Path) -> None:
    prototxt = tmp_path / "hostile.prototxt"
    prototxt.write_text(hostile_net(), encoding="utf-8")
    selected = HOSTILE_NAMES[2:]
    model = caffe2torch.load(prototxt, outputs=selected + ["joined"])
    assert model.input_names == HOSTILE_NAMES[:2]
    assert sorted(model.caffe_names.values()) == sorted(selected + ["join"])
    assert not set(model.caffe_names) & reserved_names()
    assert "def forward(self, " in model.code  # the fx module itself prints and runs
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    y = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x, y)
    assert list(expected) == selected + ["joined"]
    torch.testing.assert_close(expected["joined"], expected[selected[-1]] + y, rtol=0, atol=0)

    export(model, tmp_path / "out")
    torch.save((x, y), tmp_path / "xy.pt")
    script = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import model; net = model.load(); "
              "x, y = torch.load(sys.argv[2], weights_only=True); "
              "torch.save((model.INPUTS, model.CAFFE_NAMES, net(x, y)), sys.argv[3])")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "out"), str(tmp_path / "xy.pt"),
                    str(tmp_path / "result.pt")], check=True, cwd=tmp_path)
    inputs, caffe_names, actual = torch.load(tmp_path / "result.pt", weights_only=True)
    assert inputs == HOSTILE_NAMES[:2] and caffe_names == model.caffe_names
    assert list(actual) == list(expected)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert not list(tmp_path.rglob("PWNED")) and not Path("PWNED").exists()
