"""Top-1/top-5 error of a net on labelled images, and the decision whether it reproduces a published row.

Counting follows Caffe's Accuracy layer: an image is correct at k when fewer than k+1 outputs are ``>=``
the true class's output (ties count against it); a non-finite true-class output is always wrong.

The uncertainty of an error measured on n images is the 95% **Wilson score** interval of a binomial
proportion: closed form, and unlike the plain normal interval it stays inside [0, 100] and keeps its
coverage at small n and error rates near 0.

The decision (:func:`check_reproduction`): on the full 50,000-image validation set the measurement is exact, so
reproduced means both errors within 0.1 points of the published ones (differences that size come from
preprocessing and floating-point order); on a subset (``--limit``, a smaller folder) reproduced means each
published error lies inside the Wilson interval of the measured one.

Data-parallel runs: under ``torchrun`` (``WORLD_SIZE`` > 1) each process evaluates every
``WORLD_SIZE``-th image from its rank and the counts are summed with one all-reduce (nccl on CUDA, gloo
otherwise).
"""

from __future__ import annotations

import math
import os
from contextlib import closing
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from caffe2torch.errors import InputError
from caffe2torch.runtime.data import BatchLoader, LabeledImage, Progress, default_workers, \
    opencv_threads_stopped, shard
from caffe2torch.runtime.device import Inference, infer_batches

FULL_VALIDATION_SET = 50_000
TOLERANCE_POINTS = 0.1
Z_95 = 1.959963984540054  # two-sided 95% standard normal quantile


def correct_counts(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """How many rows of ``scores`` (N x C) have their label among the top k, per k, by Caffe's rule.

    Stays on the scores' device (no synchronisation).  k larger than C counts as C.
    """
    true_scores = scores.gather(1, labels.view(-1, 1))
    at_least_as_good = (scores >= true_scores).sum(dim=1)
    finite = torch.isfinite(true_scores.view(-1))
    return torch.stack([((at_least_as_good <= k) & finite).sum() for k in ks])


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (as fractions)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class Evaluation:
    """Correct counts over ``images`` images; ``top5``, when asked for, each image's five best classes
    (best first, in the order of the net's outputs), in the order of the images this process evaluated."""

    images: int
    top1_correct: int
    top5_correct: int
    top5: list[list[int]] | None = field(default=None, compare=False, repr=False)

    def error(self, k: int) -> float:
        """Top-k error in percent."""
        return 100.0 * (self.images - self._correct(k)) / self.images if self.images else math.nan

    def interval(self, k: int) -> tuple[float, float]:
        """95% Wilson interval of the top-k error, in percent."""
        low, high = wilson_interval(self.images - self._correct(k), self.images)
        return 100.0 * low, 100.0 * high

    def _correct(self, k: int) -> int:
        return {1: self.top1_correct, 5: self.top5_correct}[k]

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "top1_correct": self.top1_correct,
            "top5_correct": self.top5_correct,
            "top1_error": self.error(1),
            "top5_error": self.error(5),
            "top1_error_interval95": list(self.interval(1)),
            "top5_error_interval95": list(self.interval(5)),
            "interval": "Wilson score, 95%",
        }


@dataclass(frozen=True)
class Published:
    """A published result: top-1/top-5 error in percent on the full validation set."""

    model: str
    top1_error: float
    top5_error: float


@dataclass(frozen=True)
class Reproduction:
    """Whether a measurement reproduces a published row, and by which rule."""

    published: Published
    rule: str
    within: dict[str, bool]  # "top1"/"top5" -> whether that error meets the rule

    @property
    def reproduced(self) -> bool:
        return all(self.within.values())


def check_reproduction(evaluation: Evaluation, published: Published,
                       full_set: int = FULL_VALIDATION_SET) -> Reproduction:
    """Whether ``evaluation`` reproduces ``published`` (see the module docstring for the rule)."""
    within = {}
    if evaluation.images == full_set:
        rule = f"within {TOLERANCE_POINTS} points on the full {full_set:,} images"
        for k in (1, 5):
            difference = evaluation.error(k) - getattr(published, f"top{k}_error")
            within[f"top{k}"] = abs(difference) <= TOLERANCE_POINTS + 1e-9
    else:
        rule = f"published error inside the 95% Wilson interval of {evaluation.images:,} images"
        for k in (1, 5):
            low, high = evaluation.interval(k)
            within[f"top{k}"] = low <= getattr(published, f"top{k}_error") <= high
    return Reproduction(published, rule, within)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not under one).  ``owns_group``:
    the process group was created here, so :meth:`close` ends it."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> Distributed:
        """Join the process group ``torchrun`` describes (nccl for CUDA, gloo otherwise), if any."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        import torch.distributed as dist

        owns_group = not dist.is_initialized()
        if owns_group:
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
        return cls(dist.get_rank(), dist.get_world_size(), owns_group)

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    def sum(self, counts: torch.Tensor) -> torch.Tensor:
        """``counts`` summed over all processes (nccl reduces on the GPU, gloo on the host)."""
        if self.world_size == 1:
            return counts
        import torch.distributed as dist

        on_gpu = dist.get_backend() == "nccl"
        total = counts.clone() if on_gpu else counts.cpu()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def choose_output(outputs: torch.Tensor | dict[str, torch.Tensor], output: str | None) -> torch.Tensor:
    """The output named ``output`` among a net's outputs, or its only one."""
    if isinstance(outputs, dict):
        if output is None:
            if len(outputs) != 1:
                raise InputError(f"the net has several outputs ({', '.join(outputs)}); choose one with --output")
            output = next(iter(outputs))
        if output not in outputs:
            raise InputError(f"the net has no output {output!r}; it has {', '.join(outputs)}")
        outputs = outputs[output]
    return outputs


def select_output(outputs: torch.Tensor | dict[str, torch.Tensor], output: str | None) -> torch.Tensor:
    """The class scores among a net's outputs, flattened to N x C (N x C x 1 x 1 is common in Caffe)."""
    outputs = choose_output(outputs, output)
    if outputs.dim() < 2 or any(size != 1 for size in outputs.shape[2:]):
        raise InputError(f"expected class scores of shape N x C, the net gives {list(outputs.shape)}")
    return outputs.reshape(outputs.shape[0], outputs.shape[1])


def evaluate(model: nn.Module, images: Sequence[LabeledImage], preprocess, inference: Inference, *,
             batch_size: int = 50, workers: int | None = None, output: str | None = None,
             distributed: Distributed = Distributed(), progress: bool = True,
             keep_top5: bool = False) -> Evaluation:
    """Top-1/top-5 correct counts of ``model`` (already prepared by ``inference``) on ``images``.

    ``preprocess`` maps an image path to the net's float32 C x H x W input; ``workers`` threads
    (default: :func:`~caffe2torch.runtime.data.default_workers`; 0: this thread) prepare the next
    batches while the net runs (:class:`~caffe2torch.runtime.data.BatchLoader`), in pinned memory for a
    CUDA device.  Labels must be in the order of the net's outputs.  Under a distributed job each process
    takes its shard and the returned counts are the sums over all of them.  ``keep_top5`` also returns
    each image's five best classes (``Evaluation.top5``).
    """
    workers = default_workers() if workers is None else workers
    mine = shard(images, distributed.rank, distributed.world_size)
    loader = BatchLoader(mine, preprocess, batch_size=batch_size, workers=workers,
                         pin_memory=inference.pin_memory)
    counts = torch.zeros(3, dtype=torch.int64, device=inference.device)  # images, top-1, top-5 correct
    top5: list[torch.Tensor] = []
    # Only rank 0 draws progress, for its own shard (the others advance at the same pace).
    with Progress(len(mine), enabled=progress and distributed.is_main) as bar, \
            opencv_threads_stopped(workers > 0), closing(loader.batches()) as batches:
        for outputs, labels in infer_batches(model, batches, inference):
            scores = select_output(outputs, output)
            counts[0] += labels.numel()
            counts[1:] += correct_counts(scores, labels)
            if keep_top5:
                top5.append(scores.topk(min(5, scores.shape[1]), dim=1).indices)
            bar.update(labels.numel())
    total = distributed.sum(counts).tolist()
    kept = (torch.cat(top5).tolist() if top5 else []) if keep_top5 else None
    return Evaluation(images=total[0], top1_correct=total[1], top5_correct=total[2], top5=kept)
