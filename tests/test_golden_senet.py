"""Golden tests: the seven SENet release nets converted by us against OpenCV's dnn, an independent Caffe
runtime, with seeded weights that exercise Caffe's rules (see ``golden.py``), written to a real
caffemodel that both sides read.

Both graphs are held to the same tolerances: the faithful one (``caffe2torch.load``) and the optimized one
(``caffe2torch.optimize``: BatchNorm and Scale folded into the convolutions, fused ops), which ``verify``,
``predict`` and ``bench`` run.  Tolerances on the logits are the issue's: 1e-3 for the 50-layer nets and SE-BN-Inception, 2e-3 for the
101- and 152-layer nets, 5e-3 for SENet-154; float32 summation order alone accounts for up to 8e-4 and
2.4e-3.  Early intermediate blobs (a global pool, SE gates after their Sigmoid) agree within 1e-4.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import caffe2torch
from caffe2torch.caffe_proto import read_prototxt, write_caffemodel
from caffe2torch.converter.layers.batch_norm import BatchNorm
from caffe2torch.runtime.device import Inference
from caffe2torch.runtime.reference import opencv_forward
from caffe2torch.runtime.session import inference_graph
from caffe2torch.testing import max_abs_diff, seeded_weights, smooth_images
from tests.conftest import shared_path

# The first SE block's global pool and gate, and the first gate of the next stage.  Blobs deep in the
# 150-layer nets carry up to 3e-4 of float32 rounding on both sides (each side differs from a float64
# run of the same net by as much as from the other), so exactness per layer is checked where it shows.
RESNET_BLOBS = ("conv2_1_global_pool", "conv2_1_prob", "conv3_1_prob")
INCEPTION_BLOBS = ("inception_3a_global_pool", "inception_3a_prob", "inception_4a_prob")
INTERMEDIATE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class GoldenNet:
    stem: str  # the release prototxt, without .prototxt
    logits_tolerance: float
    intermediate: tuple[str, ...]
    slow: bool


NETS = [
    GoldenNet("SE-BN-Inception", 1e-3, INCEPTION_BLOBS, slow=False),
    GoldenNet("SE-ResNet-50", 1e-3, RESNET_BLOBS, slow=False),
    GoldenNet("SE-ResNeXt-50", 1e-3, RESNET_BLOBS, slow=False),
    GoldenNet("SE-ResNet-101", 2e-3, RESNET_BLOBS, slow=True),
    GoldenNet("SE-ResNeXt-101", 2e-3, RESNET_BLOBS, slow=True),
    GoldenNet("SE-ResNet-152", 2e-3, RESNET_BLOBS, slow=True),
    GoldenNet("SENet-154", 5e-3, RESNET_BLOBS, slow=True),
]
GOLDEN_NETS = [pytest.param(net, id=net.stem, marks=[pytest.mark.slow] if net.slow else []) for net in NETS]
GRAPHS = ("faithful", "optimized")


def final_softmax(net) -> tuple[str, str]:
    """(logits blob, probability blob): the bottom and top of the net's last Softmax."""
    softmax = [layer for layer in net.layer if layer.type == "Softmax"][-1]
    return softmax.bottom[0], softmax.top[0]


@dataclass
class GoldenRun:
    prototxt: Path
    caffemodel: Path
    inputs: np.ndarray
    names: list[str]
    graphs: dict[str, dict[str, np.ndarray]]  # "faithful" / "optimized" -> our blobs
    reference: dict[str, np.ndarray]

    @property
    def ours(self) -> dict[str, np.ndarray]:
        return self.graphs["faithful"]


@pytest.fixture(scope="session")
def golden_run(tmp_path_factory: pytest.TempPathFactory):
    """``golden_run(GoldenNet) -> GoldenRun``: weights generated, written and run on both sides once per net."""
    runs: dict[str, GoldenRun] = {}

    def run(spec: GoldenNet) -> GoldenRun:
        if spec.stem not in runs:
            prototxt = shared_path("senet", "models", f"{spec.stem}.prototxt")
            net = read_prototxt(prototxt)
            caffemodel = tmp_path_factory.mktemp("golden") / f"{spec.stem}.caffemodel"
            write_caffemodel(net, seeded_weights(net, smooth_images(2, seed=1)), caffemodel)
            inputs = smooth_images(2, seed=2)  # not the calibration images
            names = [*final_softmax(net), *spec.intermediate]
            model = caffe2torch.load(prototxt, caffemodel, outputs=names, input_shape=inputs.shape)
            graphs = {}
            with torch.no_grad():
                for graph, runnable in (("faithful", model), ("optimized", caffe2torch.optimize(model))):
                    graphs[graph] = {name: value.numpy() for name, value in runnable(torch.from_numpy(inputs)).items()}
            reference = opencv_forward(prototxt, caffemodel, inputs, names)
            runs[spec.stem] = GoldenRun(prototxt, caffemodel, inputs, names, graphs, reference)
        return runs[spec.stem]

    return run


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("spec", GOLDEN_NETS)
def test_logits_match_opencv(golden_run, spec: GoldenNet, graph: str) -> None:
    run = golden_run(spec)
    logits = run.names[0]
    assert max_abs_diff(run.graphs[graph], run.reference, logits) <= spec.logits_tolerance
    # The logits must carry signal, or agreeing on them would prove little.
    assert np.ptp(run.reference[logits], axis=1).min() > 1.0


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("spec", GOLDEN_NETS)
def test_probabilities_and_top_class_match_opencv(golden_run, spec: GoldenNet, graph: str) -> None:
    run = golden_run(spec)
    prob, ours = run.names[1], run.graphs[graph]
    assert max_abs_diff(ours, run.reference, prob) <= spec.logits_tolerance
    np.testing.assert_array_equal(ours[prob].argmax(axis=1), run.reference[prob].argmax(axis=1))


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("spec", GOLDEN_NETS)
def test_intermediate_blobs_match_opencv(golden_run, spec: GoldenNet, graph: str) -> None:
    run = golden_run(spec)
    diffs = {name: max_abs_diff(run.graphs[graph], run.reference, name) for name in spec.intermediate}
    assert max(diffs.values()) <= INTERMEDIATE_TOLERANCE, diffs


def _run_on_cuda(run: GoldenRun, precision: str, graph: str) -> dict[str, np.ndarray]:
    """Our blobs on the GPU, from the graph ``verify`` would run there."""
    inference = Inference(torch.device("cuda"), precision=precision)
    model = caffe2torch.load(run.prototxt, run.caffemodel, outputs=run.names[:2], input_shape=run.inputs.shape)
    runnable = inference.prepare(model if graph == "faithful" else inference_graph(model, inference))
    return {name: value.cpu().numpy() for name, value in inference(runnable, torch.from_numpy(run.inputs)).items()}


@pytest.mark.cuda
@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("spec", GOLDEN_NETS)
def test_logits_match_opencv_on_cuda_fp32(golden_run, spec: GoldenNet, graph: str) -> None:
    """On the GPU with TF32 off, fp32 is as exact as on the CPU."""
    run = golden_run(spec)
    assert max_abs_diff(_run_on_cuda(run, "fp32", graph), run.reference, run.names[0]) <= spec.logits_tolerance


@pytest.mark.cuda
@pytest.mark.parametrize("spec", GOLDEN_NETS)
def test_bf16_on_cuda_keeps_the_top_class(golden_run, spec: GoldenNet) -> None:
    run = golden_run(spec)
    prob = run.names[1]
    ours = _run_on_cuda(run, "bf16", "optimized")
    np.testing.assert_array_equal(ours[prob].argmax(axis=1), run.reference[prob].argmax(axis=1))


SE_RESNET_50 = NETS[1]


def _with_axpy_bottoms_swapped(prototxt: Path):
    net = read_prototxt(prototxt)
    for layer in net.layer:
        if layer.type == "Axpy":
            layer.bottom[1], layer.bottom[2] = layer.bottom[2], layer.bottom[1]
    return net


def test_axpy_on_the_wrong_branch_is_caught(golden_run) -> None:
    """Negative control: an Axpy that scales the shortcut instead of the residual branch must fail the
    logits test by far more than its tolerance."""
    run = golden_run(SE_RESNET_50)
    logits = run.names[0]
    wrong = caffe2torch.load(_with_axpy_bottoms_swapped(run.prototxt), run.caffemodel, outputs=[logits],
                             input_shape=run.inputs.shape)
    with torch.no_grad():
        ours = wrong(torch.from_numpy(run.inputs))
    assert max_abs_diff(ours, run.reference, logits) > 100 * SE_RESNET_50.logits_tolerance


def test_opencv_builtin_axpy_scales_the_wrong_bottom(golden_run) -> None:
    """Why runtime.reference replaces OpenCV's own Axpy: OpenCV's importer computes a * bottom[2] +
    bottom[1], which is exactly our net with the Axpy bottoms swapped, not the release's net."""
    cv2 = pytest.importorskip("cv2")
    run = golden_run(SE_RESNET_50)
    logits = run.names[0]
    image = run.inputs[:1]
    cv_net = cv2.dnn.readNetFromCaffe(str(run.prototxt), str(run.caffemodel))
    cv_net.enableFusion(False)
    cv_net.enableWinograd(False)
    cv_net.setInput(image)
    builtin = {logits: cv_net.forward(logits)}
    swapped = caffe2torch.load(_with_axpy_bottoms_swapped(run.prototxt), run.caffemodel, outputs=[logits])
    with torch.no_grad():
        ours_swapped = swapped(torch.from_numpy(image))
    assert max_abs_diff(ours_swapped, builtin, logits) <= SE_RESNET_50.logits_tolerance
    assert max_abs_diff({logits: run.ours[logits][:1]}, builtin, logits) > 100 * SE_RESNET_50.logits_tolerance


def test_seeded_weights_make_moving_average_factor_and_eps_matter(golden_run) -> None:
    """Negative controls for the weights: a converter that forgot to divide by the moving-average factor,
    or that dropped eps, would fail the logits test by far more than its tolerance."""
    run = golden_run(SE_RESNET_50)
    logits = run.names[0]
    model = caffe2torch.load(run.prototxt, run.caffemodel, outputs=[logits])
    from caffe2torch.caffe_proto import read_weights

    weights = read_weights(run.caffemodel)
    no_factor, no_eps = copy.deepcopy(model), copy.deepcopy(model)
    for ident, module in no_factor.named_children():
        if isinstance(module, BatchNorm):
            factor = float(weights[no_factor.caffe_names[ident]][2][0])
            module.mean, module.var = module.mean * factor, module.var * factor
    for module in no_eps.children():
        if isinstance(module, BatchNorm):
            module.eps = 0.0
    for broken in (no_factor, no_eps):
        with torch.no_grad():
            result = broken(torch.from_numpy(run.inputs))
        assert max_abs_diff(result, run.reference, logits) > 100 * SE_RESNET_50.logits_tolerance
