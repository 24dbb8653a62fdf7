"""Python layers: every one has the Caffe type ``Python``; its converter is registered per class, as
``"Python:<module>.<layer>"``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.converter import convert, registered
from caffe2torch.converter.layers.common import make
from caffe2torch.converter.registry import LayerContext, python_layer_type
from caffe2torch.errors import ConversionError
from tests.test_converter_layers import layer, rand, run


# --- Python layers --------------------------------------------------------------------------------------------


class Doubler(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def convert_doubler(ctx: LayerContext) -> nn.Module:
    assert ctx.layer.python_param.param_str == "{'factor': 2}"
    return make(Doubler)


PYTHON_LAYER = layer("double", "Python", ["data"], ["double"],
                     "python_param { module: 'my_layers' layer: 'Doubler' param_str: \"{'factor': 2}\" }")


def test_python_layer_without_a_converter_names_its_module_and_class() -> None:
    with pytest.raises(ConversionError) as error:
        run(PYTHON_LAYER, {"data": rand(1, 2)})
    message = str(error.value)
    assert "layer 'double' is a Python layer (python_param module 'my_layers', layer 'Doubler')" in message
    assert "@caffe2torch.converter.register('Python:my_layers.Doubler')" in message


def test_python_layer_converter_is_registered_per_class() -> None:
    assert python_layer_type("my_layers", "Doubler") == "Python:my_layers.Doubler"
    x = rand(2, 3, seed=90)
    other = layer("other", "Python", ["double"], ["other"], "python_param { module: 'my_layers' layer: 'Other' }")
    with registered("Python:my_layers.Doubler", convert_doubler, bottoms=1, tops=1):
        _, y = run(PYTHON_LAYER, {"data": x})
        np.testing.assert_array_equal(y.numpy(), 2 * x)
        with pytest.raises(ConversionError, match="python_param module 'my_layers', layer 'Other'"):
            run(PYTHON_LAYER + "\n" + other, {"data": x})
        with pytest.raises(ConversionError, match=r"\(Python:my_layers.Doubler\): needs exactly 1 top"):
            run(layer("double", "Python", ["data"], ["a", "b"], "python_param { module: 'my_layers' "
                      "layer: 'Doubler' param_str: \"{'factor': 2}\" }"), {"data": x})
    with pytest.raises(ConversionError, match="is a Python layer"):  # forgotten outside the block
        run(PYTHON_LAYER, {"data": x})


def test_python_layer_without_bottoms_is_a_data_layer() -> None:
    net = parse_prototxt('layer { name: "feed" type: "Python" top: "data" top: "label" '
                         'python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" } }\n'
                         + layer("relu", "ReLU", ["data"], ["relu"]))
    model = convert(net, {}, input_shape=(1, 2, 3, 3))
    x = rand(1, 2, 3, 3, seed=91)
    np.testing.assert_array_equal(model(torch.from_numpy(x)).numpy(), np.maximum(x, 0))
