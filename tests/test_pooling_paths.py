"""torch's ceil_mode pooling, used where torch accepts the padding, equals the explicit Caffe computation, which
equals Caffe's loops for any padding Caffe accepts, in memory bounded by the output."""

from __future__ import annotations

import itertools
import random
import resource

import pytest
import torch

from caffe2torch.modules.pooling import caffe_pool2d, padded_pool2d, pooled_size


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("round_up", [True, False])
def test_native_pooling_equals_caffes_explicit_rules(method: str, round_up: bool) -> None:
    rng = random.Random(7)
    checked = 0
    while checked < 300:
        kernel = (rng.randint(1, 7), rng.randint(1, 7))
        stride = (rng.randint(1, 4), rng.randint(1, 4))
        pad = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
        size = (rng.randint(1, 17), rng.randint(1, 17))
        if any(s + 2 * p < k for s, p, k in zip(size, pad, kernel)):
            continue
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        native = caffe_pool2d(x, method, kernel, stride, pad, round_up)
        explicit = padded_pool2d(x, method, kernel, stride, pad, round_up)
        expected_size = tuple(pooled_size(*args, round_up) for args in zip(size, kernel, stride, pad))
        assert native.shape[-2:] == explicit.shape[-2:] == expected_size, (kernel, stride, pad, size)
        assert torch.allclose(native, explicit, rtol=1e-12, atol=1e-12, equal_nan=True), (kernel, stride, pad, size)
        checked += 1


def caffe_loops(x: torch.Tensor, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                pad: tuple[int, int], round_up: bool) -> torch.Tensor:
    """PoolingLayer::Forward_cpu, window by window: MAX over the window clipped to the input (-inf where it
    holds nothing), AVE the clipped window's sum over the window clipped to the padded input."""
    (height, width), (k_h, k_w), (s_h, s_w), (p_h, p_w) = x.shape[-2:], kernel, stride, pad
    out_h, out_w = pooled_size(height, k_h, s_h, p_h, round_up), pooled_size(width, k_w, s_w, p_w, round_up)
    y = torch.empty(*x.shape[:-2], out_h, out_w, dtype=x.dtype)
    for i, j in itertools.product(range(out_h), range(out_w)):
        h0, w0 = i * s_h - p_h, j * s_w - p_w
        window = x[..., max(h0, 0):max(min(h0 + k_h, height), 0), max(w0, 0):max(min(w0 + k_w, width), 0)]
        if method == "MAX":
            y[..., i, j] = window.amax((-2, -1)) if window.numel() else float("-inf")
        else:
            divisor = (min(h0 + k_h, height + p_h) - h0) * (min(w0 + k_w, width + p_w) - w0)
            y[..., i, j] = window.sum((-2, -1)) / divisor
    return y


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_explicit_pooling_equals_caffes_loops_for_any_padding(method: str) -> None:
    """Padding up to kernel - 1 (all Caffe accepts), kernels and strides past the input, empty axes: both ways of
    laying an axis out (padding it, gathering its windows) are taken."""
    rng = random.Random(11)
    checked = 0
    while checked < 300:
        kernel = (rng.randint(1, 12), rng.randint(1, 12))
        stride = (rng.randint(1, 12), rng.randint(1, 12))
        pad = (rng.randint(0, kernel[0] - 1), rng.randint(0, kernel[1] - 1))
        size = (rng.randint(0, 9), rng.randint(0, 9))  # an empty axis: every window holds the fill alone
        round_up = rng.random() < 0.7
        if any(pooled_size(s, k, st, p, round_up) < 1 for s, k, st, p in zip(size, kernel, stride, pad)):
            continue
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        explicit = padded_pool2d(x, method, kernel, stride, pad, round_up)
        expected = caffe_loops(x, method, kernel, stride, pad, round_up)
        assert torch.allclose(explicit, expected, rtol=1e-12, atol=1e-12, equal_nan=True), \
            (kernel, stride, pad, size, round_up)  # nan: AVE of a window past the input, 0 / 0 as in Caffe
        checked += 1


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_explicit_pooling_memory_does_not_grow_with_kernel_and_padding(method: str) -> None:
    """A 2e9 kernel padded by 1.5e9 (a valid Caffe layer) pools a 4 x 4 map to 2 x 2 windows; laid out by
    padding it would need 3e9 x 3e9 values per channel."""
    kernel, stride, pad = (2_000_000_000,) * 2, (1_000_000_000,) * 2, (1_500_000_000,) * 2
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    y = padded_pool2d(x, method, kernel, stride, pad)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB
    assert y.shape[-2:] == (2, 2)
    assert torch.allclose(y, caffe_loops(x, method, kernel, stride, pad, True), rtol=1e-12, atol=1e-12)
