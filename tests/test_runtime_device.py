"""Device choice, exact fp32, autocast, channels-last and the batch helper (GPU parts skip without one)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from caffe2torch.errors import InputError
from caffe2torch.runtime.device import Inference, check_precision, choose_device, infer_batches


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
