"""converter.deploy: the deploy form a converted model carries for reference runtimes, checked on its text
(no runtime needed): the TEST phase only, one Input layer, every blob written once."""

from __future__ import annotations

import copy
import warnings

import pytest

from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.converter import convert, deploy_form
from caffe2torch.errors import InputError

TRAINING = """
name: "training"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
layer { name: "mnist_test" type: "Data" top: "data" top: "label" include { phase: TEST } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "slice" type: "Slice" bottom: "ip" top: "first" top: "rest" slice_param { slice_point: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "train_only" type: "ReLU" bottom: "ip" top: "relu2" include { phase: TRAIN } }
"""


def test_the_deploy_text_is_the_test_phase_with_every_blob_written_once() -> None:
    form = deploy_form(parse_prototxt(TRAINING), (4, 6))
    net = parse_prototxt(form.prototxt())
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("input", "Input"), ("ip", "InnerProduct"), ("relu", "ReLU"), ("slice", "Slice")]
    assert list(net.layer[0].top) == ["data"] and list(net.layer[0].input_param.shape[0].dim) == [4, 6]
    wiring = [(list(layer.bottom), list(layer.top)) for layer in net.layer[1:]]
    assert wiring == [(["data"], ["ip"]), (["ip"], ["relu"]), (["relu"], ["slice", "slice:1"])]
    assert not any(layer.include or layer.exclude for layer in net.layer)
    assert form.layers == (("ip", "InnerProduct"), ("relu", "ReLU"), ("slice", "Slice"))
    assert form.input_shapes == {"data": (4, 6)}


def test_names_mean_what_they_mean_to_the_converter() -> None:
    form = deploy_form(parse_prototxt(TRAINING), (4, 6))
    assert form.output("ip").blob == "ip"  # the layer's output, before the in-place ReLU
    assert form.output("relu").blob == "relu" and form.output("first").blob == "slice"  # a blob: its last value
    assert (form.output("rest").blob, form.output("rest").layer, form.output("rest").index) == ("slice:1", "slice", 1)
    assert (form.output("data").layer, form.output("data").index) == (None, 0)
    with pytest.raises(InputError, match="neither a layer nor a blob"):
        form.output("train_only")


def test_shapes_and_layer_types_are_chosen_when_the_text_is_written() -> None:
    text = """
    layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 4 dim: 1 dim: 1 } } }
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 dim: 5 dim: 5 } } }
    layer { name: "input" type: "Axpy" bottom: "a" bottom: "x" bottom: "x" top: "out" }
    """
    form = convert(parse_prototxt(text), random_init=True).deploy
    net = parse_prototxt(form.prototxt({"x": (3, 4, 5, 5), "a": (3, 4, 1, 1)}, layer_types={"Axpy": "Stand-in"}))
    assert [(layer.name, layer.type) for layer in net.layer] == [("input_2", "Input"), ("input", "Stand-in")]
    assert [list(shape.dim) for shape in net.layer[0].input_param.shape] == [[3, 4, 1, 1], [3, 4, 5, 5]]
    assert parse_prototxt(form.prototxt()).layer[0].input_param.shape[0].dim == [1, 4, 1, 1]
    assert parse_prototxt(form.prototxt()).layer[1].type == "Axpy"  # the form itself is unchanged


def test_a_renamed_layer_carries_its_parameters_as_text() -> None:
    """A stand-in's runtime may read fields it does not know lossily (OpenCV: the last of repeated values, no
    minus signs): a renamed layer also gets them whole in python_param.param_str, fields no schema here
    knows as the prototxt wrote them."""
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
    layer { name: "crop" type: "CropCenter" bottom: "data" top: "crop"
            crop_center_param { crop_size: 0 crop_size: 0 crop_size: 1 crop_size: 2 } }
    layer { name: "interp" type: "Interp" bottom: "crop" top: "interp" interp_param { zoom_factor: 2 pad_beg: -1 } }
    layer { name: "relu6" type: "ReLU6" bottom: "interp" top: "relu6" relu6_param { negative_slope: -0.5 } }
    layer { name: "relu" type: "ReLU" bottom: "relu6" top: "relu" }
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # relu6_param is no field of our schema
        form = convert(parse_prototxt(text), random_init=True).deploy
    written = form.prototxt(layer_types={"CropCenter": "A", "Interp": "B", "ReLU6": "C"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = {layer.name: layer for layer in parse_prototxt(written).layer}
    assert [layers[name].type for name in ("crop", "interp", "relu6", "relu")] == ["A", "B", "C", "ReLU"]
    assert layers["crop"].python_param.param_str == ("crop_center_param { crop_size: 0 crop_size: 0 crop_size: 1 "
                                                     "crop_size: 2 }")
    assert layers["interp"].python_param.param_str == "interp_param { zoom_factor: 2 pad_beg: -1 }"
    assert " ".join(layers["relu6"].python_param.param_str.split()) == "relu6_param { negative_slope: -0.5 }"
    assert not layers["relu"].HasField("python_param")
    assert "python_param" not in form.prototxt()  # only renamed layers carry it


def test_a_net_a_reference_could_not_read_converts_but_has_no_deploy_text() -> None:
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "twice" type: "ReLU" bottom: "data" top: "a" }
    layer { name: "twice" type: "ReLU" bottom: "a" top: "b" }
    """
    model = convert(parse_prototxt(text), random_init=True)
    assert "'twice' has the name of another layer" in model.deploy.problem
    with pytest.raises(InputError, match="'twice' has the name of another layer"):
        model.deploy.prototxt()


def test_the_deploy_form_survives_a_deepcopy() -> None:
    model = convert(parse_prototxt(TRAINING), random_init=True, input_shape=(2, 6))
    copied = copy.deepcopy(model)
    assert copied.deploy == model.deploy and copied.deploy.prototxt() == model.deploy.prototxt()
    assert copied.output_types == model.output_types == {"first": "Slice", "rest": "Slice"}
