"""torch's ceil_mode pooling, used where torch accepts the padding, equals the explicit Caffe computation."""

from __future__ import annotations

import random

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
