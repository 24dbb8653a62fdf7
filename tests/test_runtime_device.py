"""Device choice, exact fp32, autocast, channels-last, the batch helper (GPU parts skip without one), and
failures named by their Caffe layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import caffe2torch
from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.errors import InputError, RunError
from caffe2torch.runtime.device import Inference, check_precision, choose_device, failures_named, infer_batches


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 10))


def test_explicit_cpu_and_bad_devices() -> None:
    assert choose_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        choose_device("gpu0")
    with pytest.raises(InputError, match="unsupported device 'meta'"):
        choose_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu() -> None:
    expected = "mps" if torch.backends.mps.is_available() else "cpu"
    assert choose_device(None).type == expected
    with pytest.raises(InputError, match="torch sees no CUDA GPU"):
        choose_device("cuda")


def test_precision_names() -> None:
    assert check_precision("bf16") == "bf16"
    with pytest.raises(InputError, match="unknown precision 'fp64'; use one of fp32, bf16, fp16"):
        check_precision("fp64")


def test_fp32_turns_tf32_off() -> None:
    Inference(torch.device("cpu"), "fp32")
    assert torch.get_float32_matmul_precision() == "highest"
    if hasattr(torch.backends, "fp32_precision"):
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    else:
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_bf16_autocast_is_close_but_not_exact() -> None:
    model, x = _conv_net().eval(), torch.rand(4, 3, 16, 16) * 255
    exact = Inference(torch.device("cpu"), "fp32")(model, x)
    with torch.inference_mode():
        assert torch.equal(exact, model(x))
    rounded = Inference(torch.device("cpu"), "bf16")(model, x)
    assert rounded.dtype == torch.float32 and not torch.equal(rounded, exact)
    assert torch.allclose(rounded, exact, rtol=0.05, atol=0.05 * exact.abs().max().item())


def test_channels_last_runs_the_same_net() -> None:
    model, x = _conv_net(), torch.rand(2, 3, 8, 8)
    inference = Inference(torch.device("cpu"), channels_last=True)
    prepared = inference.prepare(model)
    assert prepared[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert inference.to_device(x).is_contiguous(memory_format=torch.channels_last)
    reference = Inference(torch.device("cpu"))(_conv_net().eval(), x)
    assert torch.allclose(inference(prepared, x), reference, rtol=1e-5, atol=1e-6)


def test_infer_batches_keeps_order_and_labels() -> None:
    inference = Inference(torch.device("cpu"))
    model = inference.prepare(_conv_net())
    batches = [(torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2])), (torch.rand(1, 3, 8, 8), torch.tensor([7]))]
    results = list(infer_batches(model, batches, inference))
    assert [tuple(out.shape) for out, _ in results] == [(3, 10), (1, 10)]
    assert [labels.tolist() for _, labels in results] == [[0, 1, 2], [7]]
    assert inference.pin_memory is False


@pytest.mark.slow
def test_compile_gives_the_same_outputs() -> None:
    x = torch.rand(2, 3, 8, 8)
    compiled = Inference(torch.device("cpu"), compile=True)
    reference = Inference(torch.device("cpu"))(_conv_net().eval(), x)
    assert torch.allclose(compiled(compiled.prepare(_conv_net()), x), reference, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_cuda_default_pinning_and_exact_fp32() -> None:
    device = choose_device(None)
    assert device == torch.device("cuda", 0)
    inference = Inference(device, "fp32")
    assert inference.pin_memory
    model, x = _conv_net().eval(), torch.rand(8, 3, 32, 32) * 255
    on_gpu = inference(inference.prepare(model), x.pin_memory()).cpu()
    on_cpu = Inference(torch.device("cpu"))(_conv_net().eval(), x)
    # TF32 would leave errors near 1e-3 of the output scale; IEEE float32 agrees to rounding
    assert torch.allclose(on_gpu, on_cpu, rtol=1e-5, atol=1e-5 * on_cpu.abs().max().item())


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast(precision: str) -> None:
    inference = Inference(choose_device("cuda"), precision, channels_last=True)
    x = torch.rand(8, 3, 32, 32)
    out = inference(inference.prepare(_conv_net()), x).cpu()
    reference = Inference(torch.device("cpu"))(_conv_net().eval(), x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, reference, rtol=0.05, atol=0.05 * reference.abs().max().item())


_CONV_RELU = """
name: "conv_relu"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv/1" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu/1" type: "ReLU" bottom: "conv" top: "conv" }
"""


def test_a_layer_refusing_its_input_is_named() -> None:
    """A batch with the wrong number of channels fails in the convolution: the error names the Caffe layer
    (the optimized graph's node names every layer fused into it) and keeps torch's words and error."""
    model = caffe2torch.load(parse_prototxt(_CONV_RELU))
    wrong = torch.zeros(1, 5, 8, 8)
    inference = Inference(torch.device("cpu"))
    with pytest.raises(RunError, match=r"running the net failed in layer 'conv/1': .*channels") as raised:
        inference(model, wrong)
    assert isinstance(raised.value.__cause__, RuntimeError)
    with pytest.raises(RunError, match=r"failed in layers 'conv/1', 'relu/1': "):
        inference(caffe2torch.optimize(model), wrong)
    assert inference(model, torch.zeros(1, 3, 8, 8)).shape == (1, 4, 6, 6)


class _Asks(nn.Module):
    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


@pytest.mark.parametrize("error, reason", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                  "you tried to allocate 123480309760 bytes. Error code 12 (Cannot allocate memory)"),
     r"out of memory \(115\.0 GiB asked for\); a smaller batch needs less"),
    (MemoryError(), r"out of memory \(MemoryError\); a smaller batch needs less"),
    (RuntimeError("something else\nand more"), r"something else$"),
])
def test_memory_running_out_is_said_plainly(error: BaseException, reason: str) -> None:
    model = nn.Sequential(nn.Identity(), _Asks(error))
    model.caffe_names = {"0": "data", "1": "big/layer"}
    with pytest.raises(RunError, match=rf"^running the net failed in layer 'big/layer': {reason}"):
        Inference(torch.device("cpu"))(model, torch.zeros(1))
    with pytest.raises(RunError, match=rf"^making inputs failed: {reason}"):
        with failures_named(None, "making inputs"):
            raise error
    with pytest.raises(ValueError):  # not torch's failure: left alone
        with failures_named(model):
            raise ValueError("a bug")
