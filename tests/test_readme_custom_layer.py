"""The README's custom-layer example, as a user runs it: its code block saved as a plugin file, a net using
``ChannelGain`` converted by the real ``caffe2torch convert --plugin``, and the exported model.py imported in
a fresh process where caffe2torch cannot be imported, computing what the converted module computes."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.caffe_proto import read_prototxt, write_caffemodel
from caffe2torch.converter import registry
from tests.conftest import ROOT

NET = """name: "gained"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "gain" type: "ChannelGain" bottom: "conv" top: "gain" }
layer { name: "relu" type: "ReLU" bottom: "gain" top: "gain" }
"""

# Imports model.py by path with caffe2torch made unimportable, runs it on the saved input, saves the output.
RUN_MODEL_PY = """
import importlib.util, sys
import torch
sys.modules["caffe2torch"] = None  # any import of caffe2torch now fails
spec = importlib.util.spec_from_file_location("exported_model", sys.argv[1])
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)
torch.save(model.load()(torch.load(sys.argv[2])), sys.argv[3])
"""


def readme_custom_layer_code() -> str:
    """The one Python code block of the README's "Custom layers" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^### Custom layers\n(.*?)^##", readme, re.M | re.S)
    assert section is not None, "README.md has no 'Custom layers' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)
    assert len(blocks) == 1, f"expected one Python block in 'Custom layers', found {len(blocks)}"
    return blocks[0]


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """The plugin's converters registered for this test only."""
    with registry.scoped_registry():
        yield


def test_readme_custom_layer_converts_and_exports_a_standalone_model(tmp_path: Path, scratch_registry) -> None:
    plugin = tmp_path / "my_layers.py"
    plugin.write_text(readme_custom_layer_code(), encoding="utf-8")
    prototxt, caffemodel = tmp_path / "gained.prototxt", tmp_path / "gained.caffemodel"
    prototxt.write_text(NET, encoding="utf-8")
    rng = np.random.default_rng(0)
    weights = {"conv": [rng.standard_normal((3, 3, 3, 3), np.float32), rng.standard_normal(3, np.float32)],
               "gain": [np.array([0.5, -2.0, 3.0], np.float32)]}
    write_caffemodel(read_prototxt(prototxt), weights, caffemodel)
    output = tmp_path / "out"

    converted = subprocess.run(
        [sys.executable, "-m", "caffe2torch.cli", "convert", str(prototxt), "--weights", str(caffemodel),
         "--plugin", str(plugin), "-o", str(output)], capture_output=True, text=True, cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    assert "class ChannelGain(nn.Module):" in (output / "model.py").read_text(encoding="utf-8")

    x = torch.from_numpy(rng.standard_normal((2, 3, 4, 5), np.float32))
    torch.save(x, tmp_path / "x.pt")
    ran = subprocess.run([sys.executable, "-c", RUN_MODEL_PY, str(output / "model.py"), str(tmp_path / "x.pt"),
                          str(tmp_path / "y.pt")], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr

    registry.load_plugin(plugin)
    with torch.no_grad():
        expected = caffe2torch.load(prototxt, caffemodel)(x)
    actual = torch.load(tmp_path / "y.pt")
    assert torch.equal(actual, expected)
    assert (expected < 0).sum() == 0 and expected.abs().sum() > 0  # the ReLU after the gain ran on real values
