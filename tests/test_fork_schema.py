"""Fork fields: kept when no schema knows them, read typed with a user's fork caffe.proto, and read alike from
text and binary files, including the fork numbers BVLC gives to other fields (Interp's 143, BN's 137)."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from google.protobuf import text_format

import caffe2torch
from caffe2torch.caffe_proto import (
    CaffeFormatWarning,
    UntypedMessage,
    load_schema,
    parse_net_binary,
    parse_prototxt,
    read_prototxt,
    using_schema,
)
from caffe2torch.caffe_proto.schema import layer_param
from caffe2torch.cli import main
from caffe2torch.converter import registry
from caffe2torch.errors import InputError
from tests.conftest import ROOT, shared_path

BUILTIN_PROTO = ROOT / "caffe2torch" / "caffe_proto" / "caffe.proto"

FORK_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "up" type: "Upsample" bottom: "data" top: "up" upsample_param { scale: 2 } }
layer { name: "perm" type: "Permute" bottom: "up" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "norm" type: "Normalize" bottom: "up" top: "norm"
        norm_param { across_spatial: false channel_shared: false eps: 1e-6
                     scale_filler { type: "constant" value: 20 } } }
layer { name: "prior" type: "PriorBox" bottom: "norm" bottom: "data" top: "prior"
        prior_box_param { min_size: 10 min_size: 16 max_size: 30 aspect_ratio: 2 flip: true clip: false
                          variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 offset: 0.5 } }
layer { name: "det" type: "DetectionOutput" bottom: "a" bottom: "b" bottom: "prior" top: "det"
        detection_output_param { num_classes: 2 background_label_id: 0 code_type: CENTER_SIZE keep_top_k: 50
                                 confidence_threshold: 0.01 nms_param { nms_threshold: 0.15 top_k: 100 } } }
layer { name: "interp" type: "Interp" bottom: "up" top: "interp"
        interp_param { zoom_factor: 2 pad_beg: 0 pad_end: -1 } }
layer { name: "bn" type: "BN" bottom: "up" top: "bn" bn_param { eps: 1e-4 frozen: true momentum: 0.95 } }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "up" top: "shuffle" shuffle_channel_param { group: 3 } }
layer { name: "reorg" type: "Reorg" bottom: "up" top: "reorg" reorg_param { stride: 2 } }
layer { name: "crop" type: "CropCenter" bottom: "up" top: "crop" crop_center_param { crop_size: 0 crop_size: 0 crop_size: 1 crop_size: 1 } }
"""
FORK_FIELDS = ["upsample_param", "permute_param", "norm_param", "prior_box_param", "detection_output_param",
               "interp_param", "bn_param", "shuffle_channel_param", "reorg_param", "crop_center_param"]


def fork_schema_text(extra_fields: str = "", extra_messages: str = "", *, deeplab_numbers: bool = False) -> str:
    """A fork's caffe.proto, made from the built-in one: extra LayerParameter fields and messages, and with
    ``deeplab_numbers`` Interp and BN at the numbers DeepLab and yjxiong give them (which BVLC uses too)."""
    text = BUILTIN_PROTO.read_text(encoding="utf-8")
    text = text.replace("  repeated KeptField caffe2torch_kept_field = 536870000;\n", "")
    if deeplab_numbers:
        text = text.replace("  optional InputParameter input_param = 143;\n", "")
        text = text.replace("  optional EmbedParameter embed_param = 137;\n", "")
        text = text.replace("interp_param = 2143;", "interp_param = 143;").replace("bn_param = 1137;", "bn_param = 137;")
    anchor = "  optional WindowDataParameter window_data_param = 129;\n"
    return text.replace(anchor, anchor + extra_fields) + extra_messages


@pytest.fixture
def write_schema(tmp_path: Path):
    def write(text: str, name: str = "caffe.proto") -> Path:
        folder = tmp_path / f"schema{len(list(tmp_path.glob('schema*')))}"
        folder.mkdir()
        path = folder / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    with registry.scoped_registry():
        yield


# --- fields no schema knows are kept ------------------------------------------------------------------------


def test_a_layer_field_no_schema_knows_is_kept_and_read_untyped() -> None:
    text = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "x" type: "Mine" bottom: "data" top: "x"
  mine_param { scale: 2 ratio: -0.5 mode: BILINEAR label: "a b" sizes: [1, 2, 3] flag: true
               inner { depth: 4 } inner { depth: 5 } }
  mine_flag: false
  convolution_param { num_output: 3 fork_only_field: 7 }
}
"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = parse_prototxt(text, filename="fork.prototxt")
    messages = [str(w.message) for w in caught if issubclass(w.category, CaffeFormatWarning)]
    assert any('fields "mine_param", "mine_flag" in LayerParameter' in m and "kept for its converter" in m
               for m in messages)
    assert any('"fork_only_field" in ConvolutionParameter' in m and "ignored" in m for m in messages)
    layer = net.layer[1]
    param = layer_param(layer, "mine_param")
    assert isinstance(param, UntypedMessage)
    assert (param.scale, param["ratio"], param.mode, param.label, param.flag) == (2, -0.5, "BILINEAR", "a b", True)
    assert param.values_of("sizes") == [1, 2, 3]
    assert [inner.depth for inner in param.values_of("inner")] == [4, 5]
    assert getattr(param, "missing", 9) == 9
    assert layer_param(layer, "mine_flag") is False
    assert not layer_param(layer, "never_given")
    assert layer_param(layer, "convolution_param").num_output == 3  # known fields stay typed
    # The kept text is the prototxt's own, with its line.
    kept = {field.name: field for field in layer.caffe2torch_kept_field}
    assert kept["mine_flag"].text == "mine_flag: false" and kept["mine_param"].line == 4


def test_the_fork_layers_of_the_real_fork_models_parse_without_a_dropped_field() -> None:
    forks = shared_path("realmodels", "forks")
    for prototxt in sorted(forks.glob("*/*.prototxt")):
        with warnings.catch_warnings():
            warnings.simplefilter("error", CaffeFormatWarning)
            net = read_prototxt(prototxt)
        assert not any(layer.caffe2torch_kept_field for layer in net.layer), prototxt


# --- text and binary alike ----------------------------------------------------------------------------------


def test_fork_parameters_read_from_a_binary_net_equal_those_of_the_text(write_schema) -> None:
    """The binary is written as the forks write it: Interp's parameters under 143 and BN's under 137, the
    numbers BVLC gives input_param and embed_param."""
    from_text = parse_prototxt(FORK_NET)
    fork = load_schema(write_schema(fork_schema_text(deeplab_numbers=True)))
    fork_net = fork.net_class()
    text_format.Parse(FORK_NET.replace('input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } }', ""), fork_net)
    data = fork_net.SerializeToString()
    assert b"\xfa\x08" in data and b"\xca\x08" in data  # the tags of fields 143 and 137 (length-delimited)
    from_binary = parse_net_binary(data, "fork.caffemodel")
    text_layers = {layer.name: layer for layer in from_text.layer}
    for layer in from_binary.layer[1:]:
        for field in FORK_FIELDS:
            assert layer_param(layer, field) == layer_param(text_layers[layer.name], field), (layer.name, field)
        assert not layer.HasField("input_param") and not layer.HasField("embed_param")
    assert layer_param(from_binary.layer[6], "interp_param").pad_end == -1
    assert layer_param(from_binary.layer[7], "bn_param").frozen
    # And with the fork's schema active, the same values, typed by it.
    with using_schema(fork):
        typed_binary = parse_net_binary(data, "fork.caffemodel")
        for layer in typed_binary.layer[1:]:
            for field in FORK_FIELDS:
                assert (text_format.MessageToString(layer_param(layer, field))
                        == text_format.MessageToString(layer_param(text_layers[layer.name], field)))


# --- a user's fork schema -----------------------------------------------------------------------------------

SHIFT_SCHEMA = dict(
    extra_fields="  optional ShiftParameter shift_param = 4321;\n",
    extra_messages="\nmessage ShiftParameter {\n  optional float value = 1 [default = 0.25];\n}\n",
)
SHIFT_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "shift" type: "Shift" bottom: "data" top: "shift" %s }
"""


def readme_fork_converter_code() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^### Fork layers and fork schemas\n(.*?)^##", readme, re.M | re.S)
    assert section is not None, "README.md has no 'Fork layers and fork schemas' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.parametrize("given, schema, expected", [
    ("shift_param { value: 0.5 }", False, 0.5),  # untyped, from the text
    ("", False, 0.0),  # untyped and unset: the converter's own default
    ("shift_param { value: 0.5 }", True, 0.5),  # typed by the fork's schema
    ("", True, 0.25),  # typed: the fork's default
])
def test_the_readme_fork_converter_reads_its_parameter(tmp_path: Path, write_schema, scratch_registry,
                                                       given: str, schema: bool, expected: float) -> None:
    plugin = tmp_path / "fork_layers.py"
    plugin.write_text(readme_fork_converter_code(), encoding="utf-8")
    registry.load_plugin(plugin)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(SHIFT_NET % given, encoding="utf-8")
    caffe_proto = write_schema(fork_schema_text(**SHIFT_SCHEMA)) if schema else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CaffeFormatWarning)
        model = caffe2torch.load(prototxt, caffe_proto=caffe_proto)
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(model(x), x + expected, rtol=0, atol=0)


def test_convert_reads_a_fork_layer_with_the_caffe_proto_option(tmp_path: Path, write_schema,
                                                                 scratch_registry) -> None:
    plugin = tmp_path / "fork_layers.py"
    plugin.write_text(readme_fork_converter_code(), encoding="utf-8")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(SHIFT_NET % "", encoding="utf-8")
    schema = write_schema(fork_schema_text(**SHIFT_SCHEMA))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(prototxt), "--plugin", str(plugin), "--caffe-proto",
                                       str(schema), "-o", str(out)])
    assert result.exit_code == 0, result.output
    code = f"""
import importlib.util, torch
spec = importlib.util.spec_from_file_location("m", {str(out / 'model.py')!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
x = torch.ones(1, 2, 3, 3)
print(float((m.load({str(out / 'model.safetensors')!r})(x) - x).max()))
"""
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(shown) == pytest.approx(0.25)


def test_a_fork_number_that_clashes_with_caffe_is_read_by_name(write_schema) -> None:
    """DeepLab's schema has interp_param at 143, Caffe's input_param: both read right in one net."""
    fork = load_schema(write_schema(fork_schema_text(deeplab_numbers=True)))
    net_text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }\n'
                'layer { name: "i" type: "Interp" bottom: "data" top: "i" interp_param { zoom_factor: 3 } }\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaffeFormatWarning)  # input_param: unknown to the fork, known to Caffe
        with using_schema(fork):
            net = parse_prototxt(net_text)
            typed = layer_param(net.layer[1], "interp_param")
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 1, 2, 2]
    assert type(typed).DESCRIPTOR.file.pool is not type(net.layer[1]).DESCRIPTOR.file.pool  # the fork's type
    assert typed.zoom_factor == 3 and net.layer[1].interp_param.zoom_factor == 3
    model = caffe2torch.load(parse_prototxt(net_text), random_init=True)
    assert model(torch.zeros(1, 1, 2, 2)).shape == (1, 1, 4, 4)


def test_a_fork_number_that_clashes_inside_a_parameter_message_is_read_by_name(write_schema) -> None:
    """PSPNet-style: the fork gives ConvolutionParameter's number 3 (Caffe's pad) to its own field. Caffe's
    reading gets the convolution's other fields; the fork's typed reading gets its field."""
    text = fork_schema_text().replace("  optional bool bias_term = 2 [default = true];\n  repeated uint32 pad = 3;",
                                      "  optional bool bias_term = 2 [default = true];\n  optional float pad_ratio = 3;")
    fork = load_schema(write_schema(text))
    net_text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }\n'
                'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
                '        convolution_param { num_output: 2 kernel_size: 3 pad_ratio: 0.5 } }\n')
    with using_schema(fork):
        net = parse_prototxt(net_text)
        typed = layer_param(net.layer[1], "convolution_param")
    assert typed.pad_ratio == 0.5 and typed.num_output == 2
    assert list(net.layer[1].convolution_param.pad) == [] and net.layer[1].convolution_param.kernel_size[0] == 3
    data = fork.net_class()
    text_format.Parse(net_text, data)
    with using_schema(fork):
        from_binary = parse_net_binary(data.SerializeToString(), "fork.caffemodel")
        assert layer_param(from_binary.layer[1], "convolution_param").pad_ratio == 0.5
    assert list(from_binary.layer[1].convolution_param.pad) == []


def test_a_descriptor_set_serves_as_the_schema(write_schema, tmp_path: Path) -> None:
    proto = write_schema(fork_schema_text(**SHIFT_SCHEMA))
    descriptor_set = tmp_path / "fork.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={proto.parent}", "--include_imports",
                    f"--descriptor_set_out={descriptor_set}", str(proto)], check=True)
    schema = load_schema(descriptor_set)
    with using_schema(schema):
        net = parse_prototxt(SHIFT_NET % "")
        assert layer_param(net.layer[1], "shift_param").value == pytest.approx(0.25)


@pytest.mark.parametrize("contents, name, message", [
    ('syntax = "proto2";\npackage other;\nmessage NetParameter {}\n', "caffe.proto", "not a Caffe schema"),
    ("message {", "caffe.proto", "protoc rejected the schema"),
    ("\x00\xff garbage", "schema.pb", "neither a .proto file nor a protoc descriptor set"),
])
def test_a_schema_that_is_not_a_caffe_schema_is_a_clear_error(write_schema, contents: str, name: str,
                                                              message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_schema(write_schema(contents, name))


def test_the_caffe_proto_option_names_a_bad_schema_without_a_traceback(tmp_path: Path, write_schema) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(SHIFT_NET % "", encoding="utf-8")
    bad = write_schema("message {")
    result = CliRunner().invoke(main, ["info", str(prototxt), "--caffe-proto", str(bad)])
    assert result.exit_code != 0
    assert "protoc rejected the schema" in result.output and "Traceback" not in result.output


def test_fork_parameter_values_survive_the_conversion_of_a_real_fork_model() -> None:
    forks = shared_path("realmodels", "forks")
    net = read_prototxt(forks / "yufacedetectnet_v2" / "yufacedetectnet-open-v2.prototxt")
    detection = next(layer for layer in net.layer if layer.type == "DetectionOutput")
    param = layer_param(detection, "detection_output_param")
    assert (param.num_classes, param.keep_top_k, param.nms_param.top_k) == (2, 50, 100)
    assert param.nms_param.nms_threshold == pytest.approx(0.15)
    assert param.code_type == 2  # CENTER_SIZE
    assert np.isclose(param.confidence_threshold, 0.01)
