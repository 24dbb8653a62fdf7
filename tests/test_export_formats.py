"""Exports that stand alone: model.py + model.safetensors in a process that cannot import caffe2torch, ONNX
through onnxruntime at batch 1 and 3 from one file, the torchvision convention and timm state dicts, and no
pickle anywhere in the output."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.errors import InputError
from caffe2torch.zoo import MODELS

# Runs model.py where caffe2torch cannot be imported: only torch and safetensors are there to help it.
FRESH_PROCESS = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "caffe2torch" or name.startswith("caffe2torch."):
            raise ImportError(f"{name} is blocked: the export must stand alone")
sys.meta_path.insert(0, Blocked())
import torch
from safetensors.torch import load_file, save_file
sys.path.insert(0, sys.argv[1])
import model
net = model.load()
inputs = load_file(sys.argv[2])
with torch.no_grad():
    out = net(*[inputs[f"x{i}"] for i in range(len(inputs))])
outs = out if isinstance(out, dict) else {"out": out}
save_file({k: v.contiguous() for k, v in outs.items()}, sys.argv[3])
"""

REAL_NETS = {  # name -> (prototxt, weights) under ../shared/realmodels
    "lenet": ("lenet/lenet.prototxt", "lenet/lenet_iter_10000.caffemodel"),
    "cifar10_quick": ("cifar10_quick/cifar10_quick.prototxt", "cifar10_quick/cifar10_quick_iter_5000.caffemodel.h5"),
    "open_nsfw": ("open_nsfw/deploy.prototxt", "open_nsfw/resnet_50_1by2_nsfw.caffemodel"),
}
RELEASE = [pytest.param(name, marks=pytest.mark.slow) for name in MODELS]


def _real_model(realmodels: Path, name: str):
    prototxt, weights = REAL_NETS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # open_nsfw's CaffeOnSpark data-layer fields
        return caffe2torch.load(realmodels / prototxt, realmodels / weights)


def _inputs(model, batch: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn((batch, *shape[1:]), generator=generator) * 50 for shape in model.input_shapes]


def _run_fresh(directory: Path, inputs: list[torch.Tensor], tmp_path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file, save_file

    save_file({f"x{i}": x for i, x in enumerate(inputs)}, tmp_path / "inputs.safetensors")
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(directory), str(tmp_path / "inputs.safetensors"),
                    str(tmp_path / "outputs.safetensors")], check=True, cwd=tmp_path, timeout=600)
    return load_file(tmp_path / "outputs.safetensors")


def _check_pytorch_export(model, tmp_path: Path) -> None:
    out = tmp_path / "out"
    caffe2torch.export(model, out)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.py", "model.safetensors"]
    assert "torch.load" not in (out / "model.py").read_text()
    inputs = _inputs(model, 2)
    with torch.no_grad():
        expected = model(*inputs)
    expected = expected if isinstance(expected, dict) else {"out": expected}
    actual = _run_fresh(out, inputs, tmp_path)
    assert actual.keys() == expected.keys()
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


@pytest.mark.parametrize("name", list(REAL_NETS))
def test_real_models_export_and_run_bit_for_bit_without_caffe2torch(realmodels: Path, name: str,
                                                                   tmp_path: Path) -> None:
    _check_pytorch_export(_real_model(realmodels, name), tmp_path)


@pytest.mark.parametrize("name", RELEASE)
def test_release_nets_export_and_run_bit_for_bit_without_caffe2torch(name: str, tmp_path: Path) -> None:
    _check_pytorch_export(caffe2torch.load(name, random_init=True), tmp_path)


def _check_onnx(model, tmp_path: Path, images: np.ndarray | None = None) -> None:
    """ONNX Runtime against the module at batch 1 and 3 from one file; ``images`` (3 inputs) for nets whose
    seeded weights were calibrated on image-like inputs (on noise their activations grow without bound)."""
    import onnxruntime

    out = tmp_path / "onnx"
    caffe2torch.export(model, out, formats=("onnx",))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == model.input_names
    assert [o.name for o in session.get_outputs()] == list(model.output_shapes)
    for batch in (1, 3):
        inputs = _inputs(model, batch, seed=batch) if images is None else [torch.from_numpy(images[:batch])]
        with torch.no_grad():
            expected = model(*inputs)
        expected = list(expected.values()) if isinstance(expected, dict) else [expected]
        got = session.run(None, {name: x.numpy() for name, x in zip(model.input_names, inputs)})
        for e, g in zip(expected, got):
            e = e.numpy()
            assert g.shape == e.shape
            assert np.abs(g - e).max() <= 1e-4 * np.abs(e).max(), (batch, np.abs(g - e).max(), np.abs(e).max())


@pytest.mark.parametrize("name", list(REAL_NETS))
def test_real_models_in_onnx_runtime(realmodels: Path, name: str, tmp_path: Path) -> None:
    _check_onnx(_real_model(realmodels, name), tmp_path)


@pytest.mark.parametrize("name", RELEASE)
def test_release_nets_in_onnx_runtime(name: str, tmp_path: Path) -> None:
    from caffe2torch.converter import convert
    from caffe2torch.testing import seeded_weights, smooth_images

    net = MODELS[name].build()
    model = convert(net, seeded_weights(net, smooth_images(2, seed=11)), outputs=["classifier"])
    _check_onnx(model, tmp_path, smooth_images(3, seed=12))


def test_onnx_without_the_package_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    model = caffe2torch.load("se_resnet50", random_init=True)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(InputError, match=r"pip install 'caffe2torch\[onnx\]'"):
        caffe2torch.export(model, tmp_path / "out", formats=("onnx",))
    assert not (tmp_path / "out").exists()


def test_torchvision_convention_export_records_what_to_feed(tmp_path: Path) -> None:
    model = caffe2torch.load("se_resnet50", random_init=True)
    caffe2torch.export(model, tmp_path / "out", convention="torchvision", formats=("pytorch", "onnx"))
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["convention"] == "torchvision" and meta["label_order"] == "synset"
    assert meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["caffe_preprocessing"]["mean"] == [104.0, 117.0, 123.0]
    assert "convention_input" in (tmp_path / "out" / "model.py").read_text()


def test_convert_cli_to_timm_writes_a_timm_state_dict(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run = subprocess.run([sys.executable, "-m", "caffe2torch.cli", "convert", "se_resnext50", "--to", "timm",
                          "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["timm"]["model"] == "legacy_seresnext50_32x4d"
    state = load_file(tmp_path / "out" / "timm.safetensors")
    assert len(state) == 384 and state["layer0.conv1.weight"].shape == (64, 3, 7, 7)


def test_nothing_in_an_export_is_a_pickle(tmp_path: Path) -> None:
    model = caffe2torch.load("se_resnet50", random_init=True)
    caffe2torch.export(model, tmp_path / "out", formats=("pytorch", "onnx"))
    for path in (tmp_path / "out").iterdir():
        head = path.read_bytes()[:4]
        assert not head.startswith(b"\x80") and not head.startswith(b"PK"), path  # pickle / torch.save zip
