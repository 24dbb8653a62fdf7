"""``bench``: throughput and latency of a converted net on random inputs of its declared shape.

Each timed iteration is one forward pass fenced by device synchronisation, so the latencies measure the
device's work, not the time to queue it; warm-up iterations first absorb cuDNN autotuning, allocator
growth and ``torch.compile``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from caffe2torch.errors import InputError
from caffe2torch.runtime.device import Inference, failures_named

Shape = tuple[int, ...]


@dataclass(frozen=True)
class BenchResult:
    device: str
    precision: str
    batch_size: int
    iterations: int
    images_per_second: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p99: float
    graph: str = "as given"  # "optimized" (caffe2torch.optimize's), "exact" (the faithful one) or "as given"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def report(self) -> str:
        return (f"{self.device} {self.precision}, {self.graph} graph, batch {self.batch_size}: {self.images_per_second:,.1f} "
                f"images/s; latency per batch p50 {self.latency_ms_p50:.2f} ms, p90 {self.latency_ms_p90:.2f} "
                f"ms, p99 {self.latency_ms_p99:.2f} ms ({self.iterations} iterations)")


def bench(model: nn.Module, input_shapes: list[Shape], inference: Inference, *, batch_size: int = 32,
          iterations: int = 50, warmup: int = 10, seed: int = 0, graph: str = "as given") -> BenchResult:
    """Time ``model`` (already prepared by ``inference``) on random inputs with batch ``batch_size``;
    ``graph`` says which graph it is, for the report."""
    if batch_size < 1 or iterations < 1 or warmup < 0:
        raise InputError("batch size and iterations must be at least 1, warm-up at least 0")
    if not input_shapes:
        raise InputError("the net declares no input shape to benchmark with")
    generator = torch.Generator().manual_seed(seed)
    with failures_named(None, f"making random inputs of batch {batch_size}"):
        inputs = [inference.to_device(torch.randn((batch_size, *shape[1:]), generator=generator))
                  for shape in input_shapes]
    for _ in range(warmup):
        inference(model, *inputs)
    latencies = []
    for _ in range(iterations):
        inference.synchronize()
        start = time.perf_counter()
        inference(model, *inputs)
        inference.synchronize()
        latencies.append(time.perf_counter() - start)
    seconds = np.asarray(latencies)
    p50, p90, p99 = np.percentile(seconds * 1000.0, [50, 90, 99])
    return BenchResult(str(inference.device), inference.precision, batch_size, iterations,
                       batch_size * iterations / float(seconds.sum()), float(p50), float(p90), float(p99), graph)
