"""The converter's public surface: load(), outputs=, input shapes, export to files, torch.export, CLI."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import caffe2torch
from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.cli import main
from caffe2torch.converter import convert, expected_blob_shapes
from caffe2torch.converter.export import export, generate_code
from caffe2torch.errors import ConversionError

SMALL_NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "conv1/relu" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def seeded_weights(net, seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    weights = {}
    for layer, shapes in expected_blob_shapes(net).items():
        weights[layer] = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        if layer.endswith("/bn"):
            weights[layer][1] = np.abs(weights[layer][1]) + 0.5
            weights[layer][2] = np.array([3.0], np.float32)
    return weights


def test_load_returns_graph_module_named_after_layers() -> None:
    net = parse_prototxt(SMALL_NET)
    model = convert(net, seeded_weights(net))
    assert isinstance(model, torch.fx.GraphModule)
    assert list(model.caffe_names.values()) == ["conv1", "conv1/bn", "conv1/relu", "pool", "fc", "prob"]
    assert "self.conv1_bn(" in model.code
    out = model(torch.randn(2, 3, 9, 9))
    assert out.shape == (2, 5)
    torch.testing.assert_close(out.sum(1), torch.ones(2))


def test_in_place_chain_matches_manual_computation() -> None:
    net = parse_prototxt(SMALL_NET)
    weights = seeded_weights(net)
    model = convert(net, weights)
    x = torch.randn(2, 3, 9, 9)
    w, b = (torch.from_numpy(a) for a in weights["conv1"])
    mean, var, factor = (torch.from_numpy(a) for a in weights["conv1/bn"])
    y = torch.nn.functional.conv2d(x, w, b, stride=2, padding=1)
    y = (y - (mean / factor).view(1, -1, 1, 1)) / torch.sqrt(var / factor + 1e-5).view(1, -1, 1, 1)
    y = y.clamp_min(0).mean((2, 3))
    fc_w, fc_b = (torch.from_numpy(a) for a in weights["fc"])
    expected = torch.softmax(y @ fc_w.T + fc_b, 1)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_outputs_by_layer_and_blob_name() -> None:
    net = parse_prototxt(SMALL_NET.replace('top: "conv1"', 'top: "feat"').replace('bottom: "conv1"', 'bottom: "feat"'))
    weights = seeded_weights(net)
    model = convert(net, weights, outputs=["conv1/bn", "feat", "conv1", "prob"])
    outs = model(torch.randn(2, 3, 9, 9))
    assert set(outs) == {"conv1/bn", "feat", "conv1", "prob"}
    # the layer conv1/bn's output is before the in-place ReLU; the blob feat's last value after it
    assert (outs["conv1/bn"] < 0).any()
    torch.testing.assert_close(outs["feat"], outs["conv1/bn"].clamp_min(0))
    assert not torch.equal(outs["conv1"], outs["conv1/bn"])  # the layer conv1: before BatchNorm
    with pytest.raises(ConversionError, match="neither a layer nor a blob"):
        convert(net, weights, outputs=["nope"])


def test_input_shape_override_and_other_batch_sizes() -> None:
    net = parse_prototxt(SMALL_NET)
    model = convert(net, seeded_weights(net), input_shape=(1, 3, 17, 17))
    assert model.input_shapes == [(1, 3, 17, 17)]
    assert model(torch.randn(7, 3, 17, 17)).shape == (7, 5)
    with pytest.raises(ConversionError, match="not inputs of the net"):
        convert(net, seeded_weights(net), input_shape={"nope": (1, 3, 9, 9)})


def test_hostile_names_never_become_code(tmp_path) -> None:
    evil = 'x"); import os; os.system("echo pwned'
    text = SMALL_NET.replace('name: "fc"', f"name: {json.dumps(evil)}").replace('name: "small"', 'name: "a\\"\\"\\"b"')
    net = parse_prototxt(text)
    model = convert(net, None, random_init=True)
    code = generate_code(model)
    compile(code, "model.py", "exec")
    assert "os.system" not in code.replace(repr(evil), "")
    assert repr(evil) in code  # kept only as a string in the CAFFE_NAMES table


def test_export_runs_in_a_fresh_process_bit_for_bit(tmp_path) -> None:
    net = parse_prototxt(SMALL_NET)
    model = convert(net, seeded_weights(net))
    export(model, tmp_path)
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import model; "
              "net = model.load(); x = torch.load(sys.argv[1] + '/x.pt', weights_only=True); "
              "torch.save(net(x), sys.argv[1] + '/y.pt')")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=tmp_path)
    assert "caffe2torch" not in (tmp_path / "model.py").read_text().split('"""', 2)[2]
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), model(x))


def test_torch_export_of_a_small_net() -> None:
    net = parse_prototxt(SMALL_NET)
    model = convert(net, seeded_weights(net))
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), model(x), rtol=0, atol=0)


@pytest.mark.slow
def test_torch_export_of_a_release_net() -> None:
    model = caffe2torch.load("se_bn_inception")
    x = torch.randn(1, 3, 224, 224)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), model(x), rtol=0, atol=0)


def test_convert_cli_writes_three_files_and_refuses_to_overwrite(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "se"
    result = runner.invoke(main, ["convert", "se_resnext50", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "27,559,896 learnable parameters" in result.output
    assert "deterministic random" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.py", "model.safetensors"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["zoo_model"] == "se_resnext50" and meta["inputs"][0]["shape"] == [1, 3, 224, 224]
    before = (out / "model.safetensors").stat().st_mtime_ns
    result = runner.invoke(main, ["convert", "se_resnext50", "-o", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert runner.invoke(main, ["convert", "se_resnext50", "-o", str(out), "--force"]).exit_code == 0


def test_info_cli_reports_totals() -> None:
    result = CliRunner().invoke(main, ["info", "se_resnext50"])
    assert result.exit_code == 0, result.output
    assert "learnable parameters: 27,559,896" in result.output
    assert "this is zoo model se_resnext50" in result.output
    assert "conv2_1_3x3" in result.output and "128x4x3x3" in result.output
    data = json.loads(CliRunner().invoke(main, ["info", "se_resnext50", "--json"]).output)
    assert data["layer_types"]["Axpy"] == 16 and data["macs"] == pytest.approx(4.25e9, rel=0.01)


def test_deepcopy_keeps_the_caffe_description() -> None:
    import copy

    net = parse_prototxt(SMALL_NET)
    model = convert(net, seeded_weights(net))
    copied = copy.deepcopy(model)
    assert copied.caffe_names == model.caffe_names and copied.input_shapes == model.input_shapes
    x = torch.randn(2, 3, 9, 9)
    assert torch.equal(copied(x), model(x))


@pytest.mark.slow
def test_convert_se_resnext50_with_weights_runs_bit_for_bit_in_a_fresh_process(tmp_path) -> None:
    from caffe2torch import zoo
    from caffe2torch.caffe_proto import write_caffemodel
    from caffe2torch.testing import seeded_weights, smooth_images

    net = zoo.get("se_resnext50").build()
    caffemodel = tmp_path / "se_resnext50.caffemodel"
    write_caffemodel(net, seeded_weights(net, smooth_images(1, seed=1)), caffemodel)
    out = tmp_path / "converted"
    result = CliRunner().invoke(main, ["convert", "se_resnext50", "--weights", str(caffemodel), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "deterministic random" not in result.output
    x = torch.from_numpy(smooth_images(2, seed=2))
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch; sys.path.insert(0, sys.argv[1]); import model; net = model.load(); "
              "x = torch.load(sys.argv[2], weights_only=True); torch.save(net(x), sys.argv[3])")
    subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, cwd=tmp_path)
    with torch.no_grad():
        expected = caffe2torch.load("se_resnext50", caffemodel)(x)
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), expected)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path) -> None:
    from caffe2torch.caffe_proto import write_caffemodel

    broken = tmp_path / "broken.prototxt"
    broken.write_text(SMALL_NET.replace("num_output: 5 }", "num_output: 5"))
    net = parse_prototxt(SMALL_NET)
    caffemodel = tmp_path / "small.caffemodel"
    write_caffemodel(net, seeded_weights(net), caffemodel)
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(caffemodel.read_bytes()[: caffemodel.stat().st_size // 2])
    good = tmp_path / "small.prototxt"
    good.write_text(SMALL_NET)
    cases = {
        (str(broken),): f"{broken}:",
        (str(good), "--weights", str(truncated)): str(truncated),
        (str(tmp_path / "missing.prototxt"),): "missing.prototxt",
    }
    for args, expected in cases.items():
        result = CliRunner().invoke(main, ["info", *args])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and expected in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("enabled", [True, False], ids=["collector-on", "collector-off"])
@pytest.mark.parametrize("fails", [False, True], ids=["loads", "fails"])
def test_load_pauses_the_garbage_collector_and_restores_it(monkeypatch, enabled: bool, fails: bool) -> None:
    """The cyclic collector is off during a load (it would rescan the load's tens of thousands of new objects
    again and again) and as it was afterwards, also when the load fails."""
    import gc

    import caffe2torch.converter

    during = []
    real_convert = caffe2torch.converter.convert

    def convert(*args, **kwargs):
        during.append(gc.isenabled())
        if fails:
            raise caffe2torch.ConversionError("no")
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(caffe2torch.converter, "convert", convert)
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(caffe2torch.ConversionError) if fails else contextlib.nullcontext():
            caffe2torch.load(parse_prototxt(
                'layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1 dim: 2 } } }\n'
                'layer { name: "r" type: "ReLU" bottom: "d" top: "r" }'))
        assert during == [False] and gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
