"""caffe2torch.optimize(): the inference graph computes what the faithful graph computes.

The golden tests hold the optimized graph to OpenCV with the faithful graph's tolerances
(tests/test_golden_senet.py, tests/test_golden_realmodels.py, tests/test_golden_forks.py).  Here: the
NCHW variant on the seven SENet zoo nets with seeded weights (which make the moving-average factor and eps
matter, see caffe2torch.testing) against the faithful graph within those tolerances, what is folded and
fused, and on small nets the folds' edge cases against float64 references computed from Caffe's stored
blobs."""

from __future__ import annotations

import copy
import operator
import platform
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import caffe2torch
from caffe2torch import zoo
from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.converter import expected_blob_shapes
from caffe2torch.modules import BatchNorm, Eltwise, ReLU, Scale
from caffe2torch.optimize import CAFFE_LAYERS, ChannelAffine, FastConv2d, FusedAxpy, InplaceReLU, OptimizedNet
from caffe2torch.testing import max_abs_diff, seeded_weights, smooth_images
from tests import test_golden_senet as golden
from tests.conftest import shared_path


# --- the SENet zoo nets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooNet:
    name: str  # in the zoo
    golden: golden.GoldenNet  # the release net's tolerances, as the golden tests allow against OpenCV


ZOO_NAMES = {zoo.get(name).release_file.removesuffix(".prototxt"): name for name in zoo.MODELS}
NETS = {ZOO_NAMES[net.stem]: ZooNet(ZOO_NAMES[net.stem], net) for net in golden.NETS}
ZOO_NETS = [pytest.param(net, id=name, marks=[pytest.mark.slow] if net.golden.slow else [])
            for name, net in NETS.items()]


@dataclass
class ZooRun:
    net: object  # NetParameter
    weights: dict[str, list[np.ndarray]]
    model: caffe2torch.converter.CaffeNet
    inputs: torch.Tensor
    names: list[str]  # logits, probabilities, intermediate blobs
    faithful: dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def zoo_run():
    """``zoo_run(ZooNet) -> ZooRun``: seeded weights calibrated as the golden tests do, the faithful outputs
    computed once per net."""
    runs: dict[str, ZooRun] = {}

    def run(spec: ZooNet) -> ZooRun:
        if spec.name not in runs:
            net = zoo.get(spec.name).build()
            weights = seeded_weights(net, smooth_images(2, seed=1))
            inputs = torch.from_numpy(smooth_images(2, seed=2))  # not the calibration images
            softmax = [layer for layer in net.layer if layer.type == "Softmax"][-1]
            names = [softmax.bottom[0], softmax.top[0], *spec.golden.intermediate]
            model = caffe2torch.load(net, weights, outputs=names, input_shape=tuple(inputs.shape))
            with torch.no_grad():
                faithful = model(inputs)
            runs.clear()  # one net's weights at a time: SENet-154's are 460 MB
            runs[spec.name] = ZooRun(net, weights, model, inputs, names, faithful)
        return runs[spec.name]

    return run


@pytest.mark.parametrize("spec", ZOO_NETS)
def test_zoo_net_optimized_in_nchw_matches_faithful(zoo_run, spec: ZooNet) -> None:
    """The NCHW graph (F.conv2d, as under autocast, torch.compile or on a GPU); the default channels-last one
    is held to OpenCV by tests/test_golden_senet.py."""
    run = zoo_run(spec)
    optimized = caffe2torch.optimize(run.model, channels_last=False)
    with torch.no_grad():
        ours = optimized(run.inputs)
    reference = {name: value.numpy() for name, value in run.faithful.items()}
    logits, prob, *intermediate = run.names
    assert max_abs_diff(ours, reference, logits) <= spec.golden.logits_tolerance
    assert np.ptp(reference[logits], axis=1).min() > 1.0  # logits that carry signal
    assert max_abs_diff(ours, reference, prob) <= spec.golden.logits_tolerance
    np.testing.assert_array_equal(ours[prob].argmax(1).numpy(), reference[prob].argmax(1))
    diffs = {name: max_abs_diff(ours, reference, name) for name in intermediate}
    assert max(diffs.values()) <= golden.INTERMEDIATE_TOLERANCE, diffs
    assert all(value.is_contiguous() for value in ours.values())


def test_se_resnext50_graph_is_folded_and_fused(zoo_run) -> None:
    """Nothing of BatchNorm or Scale remains; every SE block's Axpy is one addcmul written into the
    shortcut; a convolution carries the names of the layers folded into it."""
    run = zoo_run(NETS["se_resnext50"])
    optimized = caffe2torch.optimize(run.model)
    kinds = [type(module) for module in optimized.children()]
    assert BatchNorm not in kinds and Scale not in kinds and ChannelAffine not in kinds
    axpys = [module for module in optimized.modules() if isinstance(module, FusedAxpy)]
    assert len(axpys) == 16 and all(axpy.inplace for axpy in axpys)
    first = next(node for node in optimized.graph.nodes if node.op == "call_module")
    layers = ["conv1/7x7_s2", "conv1/7x7_s2/bn", "conv1/7x7_s2/bn/scale", "conv1/relu_7x7_s2"]
    assert first.meta[CAFFE_LAYERS] == layers
    module = optimized.get_submodule(first.target)
    assert isinstance(module, FastConv2d) and module.relu and list(module.caffe_layers) == layers
    assert list(optimized.caffe_layers[first.target]) == layers
    # every layer of the faithful net is computed by exactly one node (none removed: no Dropout/Split here)
    recorded = [layer for layers in optimized.caffe_layers.values() for layer in layers]
    assert sorted(recorded) == sorted(run.model.caffe_names.values())
    assert optimized.removed_layers == ()
    faithful_calls = sum(node.op == "call_module" for node in run.model.graph.nodes)
    optimized_calls = sum(node.op == "call_module" for node in optimized.graph.nodes)
    assert optimized_calls < faithful_calls / 2


def test_optimized_net_with_the_default_output_keeps_the_description(zoo_run) -> None:
    run = zoo_run(NETS["se_resnext50"])
    single = caffe2torch.load(run.net, run.weights, input_shape=tuple(run.inputs.shape))  # the probabilities
    optimized = caffe2torch.optimize(single)
    assert isinstance(optimized, OptimizedNet) and isinstance(optimized, torch.fx.GraphModule)
    with torch.no_grad():
        ours = optimized(run.inputs)
    assert isinstance(ours, torch.Tensor) and ours.is_contiguous()
    assert max_abs_diff({"prob": ours}, {"prob": run.faithful["prob"].numpy()}, "prob") <= NETS["se_resnext50"].golden.logits_tolerance
    for name in ("input_names", "input_shapes", "output_shapes", "output_types", "zoo_model", "preset",
                 "label_order"):
        assert getattr(optimized, name) == getattr(single, name)
    assert optimized.zoo_model == "se_resnext50"


# --- the real models: held to OpenCV by tests/test_golden_realmodels.py on both graphs -----------------


def test_open_nsfw_is_folded_completely() -> None:
    """ResNet-50 1by2: every BatchNorm + Scale folds into its convolution."""
    folder = shared_path("realmodels", "open_nsfw")
    model = caffe2torch.load(folder / "deploy.prototxt", folder / "resnet_50_1by2_nsfw.caffemodel")
    optimized = caffe2torch.optimize(model)
    assert not any(isinstance(module, (BatchNorm, Scale, ChannelAffine)) for module in optimized.modules())
    assert sum(isinstance(module, FastConv2d) for module in optimized.modules()) == \
        sum(isinstance(module, nn.Conv2d) for module in model.modules())


# --- small nets: the folds' edge cases --------------------------------------------------------------------


def _input(name: str, shape: tuple[int, ...]) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def _weights(net, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Random blobs; BatchNorm statistics stored with a moving-average factor of 3 and variances above eps."""
    rng = np.random.default_rng(seed)
    layer_types = {layer.name: layer.type for layer in net.layer}
    weights = {}
    for layer, shapes in expected_blob_shapes(net).items():
        blobs = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
        if layer_types[layer] == "BatchNorm":
            blobs[1] = (rng.uniform(0.5, 2.0, shapes[1]) * 3).astype(np.float32)
            blobs[0] = blobs[0] * 3
            blobs[2] = np.array([3.0], np.float32)
        weights[layer] = blobs
    return weights


def _run(model, *inputs: torch.Tensor):
    with torch.no_grad():
        return model(*inputs)


CONV_BN_SCALE = _input("data", (2, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { eps: %(eps)s } }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: %(bias)s } }
layer { name: "conv1/relu" type: "ReLU" bottom: "conv1" top: "conv1" }
"""


def _caffe_reference(x: np.ndarray, weights: dict[str, list[np.ndarray]], eps: float, bias: bool) -> np.ndarray:
    """Caffe's forward in float64 from the stored blobs: convolution, BatchNorm with the moving-average
    factor (0 means the statistics are zero) and eps, Scale (with or without bias), ReLU."""
    w, b = (torch.from_numpy(a).double() for a in weights["conv1"])
    y = nn.functional.conv2d(torch.from_numpy(x).double(), w, b, padding=1).numpy()
    mean, var, factor = (a.astype(np.float64) for a in weights["conv1/bn"])
    scale = 0.0 if factor[0] == 0 else 1 / factor[0]
    view = (1, -1, 1, 1)
    y = (y - (mean * scale).reshape(view)) / np.sqrt(var * scale + eps).reshape(view)
    y = y * weights["conv1/scale"][0].astype(np.float64).reshape(view)
    if bias:
        y = y + weights["conv1/scale"][1].astype(np.float64).reshape(view)
    return np.maximum(y, 0)


@pytest.mark.parametrize("factor, below_eps, bias", [
    pytest.param(0.0, False, True, id="factor-0"),
    pytest.param(3.0, True, True, id="variance-below-eps"),
    pytest.param(0.25, False, False, id="scale-without-bias"),
    pytest.param(1000.0, True, False, id="below-eps-without-bias"),
])
def test_conv_batchnorm_scale_relu_fold_follows_caffe(factor: float, below_eps: bool, bias: bool) -> None:
    eps = 1e-3
    net = parse_prototxt(CONV_BN_SCALE % {"eps": eps, "bias": "true" if bias else "false"})
    weights = _weights(net)
    mean, var, _ = weights["conv1/bn"]
    var = var / 3 * factor
    if below_eps:
        var[::2] = eps * np.array([0.01, 0.3, 0.9], np.float32) * factor  # channels 0, 2, 4 below eps
    weights["conv1/bn"] = [(mean / 3 * factor).astype(np.float32), var.astype(np.float32),
                           np.array([factor], np.float32)]
    model = caffe2torch.load(net, weights)
    optimized = caffe2torch.optimize(model)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = _caffe_reference(x, weights, eps, bias)
    ours = _run(optimized, torch.from_numpy(x)).numpy()
    faithful = _run(model, torch.from_numpy(x)).numpy()
    size = np.abs(expected).max()
    assert np.abs(ours - expected).max() <= 2e-6 * size
    assert np.abs(faithful - expected).max() <= 2e-6 * size
    if factor == 0:  # zero statistics: x / sqrt(eps), a large output
        assert size > 10
    (module,) = optimized.children()
    assert isinstance(module, FastConv2d) and module.relu
    assert module.caffe_layers == ("conv1", "conv1/bn", "conv1/scale", "conv1/relu")


BN_READ_TWICE = _input("data", (2, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" }
layer { name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "bn1" bottom: "conv2" top: "sum" }
"""


def test_batchnorm_whose_input_is_read_twice_is_one_affine_op() -> None:
    net = parse_prototxt(BN_READ_TWICE)
    weights = _weights(net)
    model = caffe2torch.load(net, weights)
    optimized = caffe2torch.optimize(model)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(_run(optimized, x), _run(model, x), rtol=1e-5, atol=1e-5)
    modules = dict(optimized.named_children())
    assert isinstance(modules["conv1"], FastConv2d) and not modules["conv1"].relu  # not folded: conv2 reads it
    torch.testing.assert_close(modules["conv1"].weight, torch.from_numpy(weights["conv1"][0]), rtol=0, atol=0)
    affine = [module for module in modules.values() if isinstance(module, ChannelAffine)]
    assert len(affine) == 1 and affine[0].caffe_layers == ("bn1", "scale1")
    assert isinstance(modules["relu1"], InplaceReLU)  # the affine op's output is read by the ReLU alone


AFTER_INNER_PRODUCT = _input("data", (3, 5, 2, 2)) + """
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "fc/bn" type: "BatchNorm" bottom: "fc" top: "fc" }
layer { name: "fc/scale" type: "Scale" bottom: "fc" top: "fc" scale_param { bias_term: true } }
"""

AFTER_DECONVOLUTION = _input("data", (2, 4, 5, 5)) + """
layer { name: "up" type: "Deconvolution" bottom: "data" top: "up"
        convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 bias_term: false } }
layer { name: "up/bn" type: "BatchNorm" bottom: "up" top: "up" }
layer { name: "up/scale" type: "Scale" bottom: "up" top: "up" scale_param { bias_term: false } }
layer { name: "up/bias" type: "Bias" bottom: "up" top: "up" }
"""


@pytest.mark.parametrize("text, producer", [(AFTER_INNER_PRODUCT, "fc"), (AFTER_DECONVOLUTION, "up")],
                         ids=["inner-product", "grouped-deconvolution"])
def test_batchnorm_scale_fold_into_inner_product_and_deconvolution(text: str, producer: str) -> None:
    net = parse_prototxt(text)
    model = caffe2torch.load(net, _weights(net))
    optimized = caffe2torch.optimize(model)
    shape = model.input_shapes[0]
    x = torch.from_numpy(np.random.default_rng(2).standard_normal(shape).astype(np.float32))
    torch.testing.assert_close(_run(optimized, x), _run(model, x), rtol=1e-5, atol=1e-5)
    (module,) = optimized.children()
    assert module.caffe_layers[0] == producer and len(module.caffe_layers) == len(net.layer) - 1
    assert module.bias is not None


SCALE_ALONE = _input("data", (2, 3, 4, 4)) + """
layer { name: "scale" type: "Scale" bottom: "data" top: "scaled" scale_param { bias_term: %s } }
layer { name: "pool" type: "Pooling" bottom: "scaled" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


@pytest.mark.parametrize("bias", [True, False], ids=["with-bias", "without-bias"])
def test_scale_without_a_convolution_is_one_affine_op(bias: bool) -> None:
    net = parse_prototxt(SCALE_ALONE % ("true" if bias else "false"))
    model = caffe2torch.load(net, _weights(net))
    optimized = caffe2torch.optimize(model)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(_run(optimized, x), _run(model, x), rtol=1e-6, atol=1e-6)
    affine = optimized.get_submodule("scale")
    assert isinstance(affine, ChannelAffine) and (affine.shift is not None) == bias
    assert torch.equal(x, x.clone())  # the input was not written over


def test_in_place_relu_is_not_applied_where_the_pre_activation_is_an_output() -> None:
    net = parse_prototxt(CONV_BN_SCALE % {"eps": 1e-5, "bias": "true"})
    weights = _weights(net)
    model = caffe2torch.load(net, weights, outputs=["conv1/scale", "conv1/relu"])
    optimized = caffe2torch.optimize(model)
    x = torch.randn(2, 3, 8, 8)
    faithful, ours = _run(model, x), _run(optimized, x)
    assert (faithful["conv1/scale"] < 0).any()
    for name in faithful:
        torch.testing.assert_close(ours[name], faithful[name], rtol=1e-5, atol=1e-5)
    modules = dict(optimized.named_children())
    assert not modules["conv1"].relu and type(modules["conv1_relu"]) is ReLU
    assert modules["conv1"].caffe_layers == ("conv1", "conv1/bn", "conv1/scale")
    # the net's input is never written over either
    alone = caffe2torch.optimize(caffe2torch.load(parse_prototxt(_input("data", (2, 3)) + """
        layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }"""), {}))
    data = torch.randn(2, 3)
    kept = data.clone()
    _run(alone, data)
    assert torch.equal(data, kept)


SPLIT_AND_DROPOUT = _input("data", (2, 3, 6, 6)) + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "split" type: "Split" bottom: "conv" top: "a" top: "b" }
layer { name: "drop" type: "Dropout" bottom: "a" top: "a" dropout_param { dropout_ratio: 0.5 } }
layer { name: "relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
"""


def test_dropout_and_split_are_removed() -> None:
    net = parse_prototxt(SPLIT_AND_DROPOUT)
    model = caffe2torch.load(net, _weights(net))
    optimized = caffe2torch.optimize(model)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(_run(optimized, x), _run(model, x), rtol=1e-6, atol=1e-6)
    assert set(optimized.removed_layers) == {"split", "drop"}
    assert not any(node.op == "call_function" and node.target is operator.getitem for node in optimized.graph.nodes)
    assert [type(module) for module in optimized.children()] == [FastConv2d, ReLU, Eltwise]


SE_BLOCK = _input("data", (2, 4, 6, 6)) + """
layer { name: "x" type: "Convolution" bottom: "data" top: "x"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "y" type: "Convolution" bottom: "data" top: "y" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "pool" type: "Pooling" bottom: "x" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "gate" type: "Convolution" bottom: "pool" top: "gate" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "prob" type: "Sigmoid" bottom: "gate" top: "gate" }
layer { name: "axpy" type: "Axpy" bottom: "gate" bottom: "x" bottom: "y" top: "axpy" }
layer { name: "relu" type: "ReLU" bottom: "axpy" top: "axpy" }
"""


@pytest.mark.parametrize("y_read_after", [False, True], ids=["shortcut-dead", "shortcut-read-after"])
def test_axpy_is_one_op_in_place_only_when_the_shortcut_is_dead(y_read_after: bool) -> None:
    text = SE_BLOCK + ('layer { name: "sum" type: "Eltwise" bottom: "axpy" bottom: "y" top: "sum" }'
                       if y_read_after else "")
    net = parse_prototxt(text)
    model = caffe2torch.load(net, _weights(net))
    optimized = caffe2torch.optimize(model)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(_run(optimized, x), _run(model, x), rtol=1e-5, atol=1e-5)
    axpy = optimized.get_submodule("axpy")
    assert isinstance(axpy, FusedAxpy) and axpy.inplace != y_read_after
    assert isinstance(optimized.get_submodule("relu"), InplaceReLU)


def test_batchnorm_with_batch_statistics_is_not_folded() -> None:
    net = parse_prototxt(CONV_BN_SCALE.replace("eps: %(eps)s", "use_global_stats: false") % {"bias": "true"})
    model = caffe2torch.load(net, _weights(net))
    optimized = caffe2torch.optimize(model)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(_run(optimized, x), _run(model, x), rtol=1e-5, atol=1e-5)
    assert type(optimized.get_submodule("conv1_bn")) is BatchNorm


def test_optimize_leaves_the_faithful_model_unchanged_and_copies_run() -> None:
    net = parse_prototxt(SE_BLOCK)
    model = caffe2torch.load(net, _weights(net))
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    code = model.code
    optimized = caffe2torch.optimize(model)
    x = torch.randn(2, 4, 6, 6)
    expected = _run(model, x)
    assert model.code == code
    assert all(torch.equal(tensor, state[name]) for name, tensor in model.state_dict().items())
    copied = copy.deepcopy(optimized)
    assert copied.caffe_layers == optimized.caffe_layers
    torch.testing.assert_close(_run(copied, x), expected, rtol=1e-5, atol=1e-5)
    # with autograd recording (no oneDNN fast path) the values are the same
    with torch.enable_grad():
        torch.testing.assert_close(optimized(x.requires_grad_()), expected, rtol=1e-5, atol=1e-5)
    assert not any(parameter.requires_grad for parameter in optimized.parameters())


@pytest.mark.parametrize("text", [CONV_BN_SCALE % {"eps": 1e-5, "bias": "true"}, SE_BLOCK, AFTER_INNER_PRODUCT,
                                  AFTER_DECONVOLUTION], ids=["folded-conv", "plain-convs", "folded-ip", "folded-deconv"])
def test_the_optimized_nets_tensors_are_its_own(text: str) -> None:
    """Folded or copied, no tensor of the optimized net shares memory with the faithful net's (folds multiply
    in place, and FastConv2d takes a folded module's tensors over)."""
    net = parse_prototxt(text)
    model = caffe2torch.load(net, _weights(net))
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimized = caffe2torch.optimize(model)
    faithful = {tensor.untyped_storage().data_ptr() for tensor in model.state_dict().values()}
    assert not any(tensor.untyped_storage().data_ptr() in faithful for tensor in optimized.state_dict().values())
    assert all(torch.equal(tensor, state[name]) for name, tensor in model.state_dict().items())


def test_every_node_records_its_caffe_layers() -> None:
    net = parse_prototxt(CONV_BN_SCALE % {"eps": 1e-5, "bias": "true"} + """
        layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool"
                pooling_param { pool: MAX global_pooling: true } }""")
    optimized = caffe2torch.optimize(caffe2torch.load(net, _weights(net)))
    calls = [node for node in optimized.graph.nodes if node.op == "call_module"]
    assert [node.meta[CAFFE_LAYERS] for node in calls] == [["conv1", "conv1/bn", "conv1/scale", "conv1/relu"],
                                                           ["pool"]]
    for node in calls:
        assert list(optimized.get_submodule(node.target).caffe_layers) == node.meta[CAFFE_LAYERS]
    assert optimized.caffe_names == {"conv1": "conv1/relu", "pool": "pool"}


def test_optimize_is_callable_from_the_package_whatever_was_imported() -> None:
    """Importing the module caffe2torch.optimize rebinds the package attribute of that name to the module;
    the module is callable, so caffe2torch.optimize(model) works either way."""
    import caffe2torch.optimize as module  # noqa: F401  (binds caffe2torch.optimize to the module)

    net = parse_prototxt(SCALE_ALONE % "true")
    optimized = caffe2torch.optimize(caffe2torch.load(net, _weights(net)), channels_last=False)
    assert isinstance(optimized, OptimizedNet) and not optimized.channels_last
    with pytest.raises(TypeError, match="converted net"):
        caffe2torch.optimize(nn.Linear(2, 2))


FAULTS = """
import resource, sys
import torch
from caffe2torch.optimize import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 * 2**20).fill_(1)  # 64 MiB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
# torch's aligned allocations leave small remainders that its own small objects then pin: depending on the
# heap's layout (address randomisation), glibc may take up to about 9 more blocks before it reuses freed ones
counts = [faults() for _ in range(16)]
print(max(counts[-4:]), min(counts[-4:]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_reuses_large_blocks_without_page_faults() -> None:
    """By default glibc returns a freed 64 MiB block to the kernel, and every next one is faulted in anew
    (16,384 pages); once freed memory is kept, blocks are reused after a bounded warm-up."""
    counts = {mode: [int(v) for v in subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True,
                                                    text=True, check=True).stdout.split()[-2:]]
              for mode in ("default", "keep")}
    most_kept, least_default = counts["keep"][0], counts["default"][1]
    assert least_default > 10_000 and most_kept < 1_000, counts
