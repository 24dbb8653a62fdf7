"""Where and how a converted net runs: device, precision, memory format, compilation, batching.

``fp32`` is the default because a reproduction check compares against numbers computed in IEEE float32;
it turns TF32 off for matrix products and cuDNN convolutions (on by default for cuDNN, and it rounds
inputs to a 10-bit mantissa).  ``bf16``/``fp16`` run under autocast, for speed when exactness is not the
point.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

from caffe2torch.errors import InputError, RunError
from caffe2torch.runtime import PRECISIONS

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def choose_device(name: str | None = None) -> torch.device:
    """The device to run on: ``name`` when given (checked), else cuda, then mps, then cpu.

    Under ``torchrun`` a bare ``cuda`` means this process's GPU, ``cuda:$LOCAL_RANK``.
    """
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r} (use cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for, but torch sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if device.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    elif device.type == "mps" and not _mps_available():
        raise InputError(f"device {name!r} asked for, but MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {name!r} (use cpu, cuda, cuda:N or mps)")
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


def use_exact_fp32() -> None:
    """Make float32 mean IEEE float32: no TF32 in matrix products or cuDNN convolutions/RNNs.

    torch >= 2.9 has per-backend ``fp32_precision`` settings and raises when they are mixed with the
    older ``allow_tf32`` flags, so only the new ones are set where they exist.
    """
    cudnn = torch.backends.cudnn
    if hasattr(torch.backends, "fp32_precision") and hasattr(cudnn, "conv"):
        torch.backends.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        cudnn.conv.fp32_precision = "ieee"
        cudnn.rnn.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


@contextlib.contextmanager
def failures_named(model: nn.Module | None, doing: str = "running the net") -> Iterator[None]:
    """Turn torch's errors while ``doing`` (memory running out, a layer refusing its input) into a
    :class:`RunError` naming the Caffe layer that raised it, found in the traceback; the original error
    stays chained to it (``--debug`` shows both)."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        reason = lines[0]
        if isinstance(error, MemoryError) or "out of memory" in reason or "can't allocate memory" in reason:
            asked = re.search(r"allocate (\d+) bytes", reason)  # the CPU allocator's words; CUDA's are short
            reason = f"{int(asked[1]) / 2**30:.1f} GiB asked for" if asked else reason
            reason = f"out of memory ({reason}); a smaller batch needs less"
        layers = _failed_layers(model, error) if model is not None else None
        where = f" in {layers}" if layers else ""
        raise RunError(f"{doing} failed{where}: {reason}") from error


def _failed_layers(model: nn.Module, error: BaseException) -> str | None:
    """The Caffe layer(s) of ``model``'s innermost submodule in ``error``'s traceback, as words."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper (whose code names no layer)
    children = {id(module): name for name, module in model.named_children()}
    failed = None
    traceback = error.__traceback__
    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in children:
            failed = children[id(owner)]
        traceback = traceback.tb_next
    if failed is None:
        return None
    fused = getattr(model, "caffe_layers", {}).get(failed)  # an optimized graph's node computing several
    if fused and len(fused) > 1:
        return "layers " + ", ".join(repr(name) for name in fused)
    return f"layer {getattr(model, 'caffe_names', {}).get(failed, failed)!r}"


@dataclass
class Inference:
    """How to run a net: the device, the precision, and the speed options.

    ``prepare`` moves a model there once; ``__call__`` runs one batch and returns float32 outputs.
    """

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.precision == "fp32":
            use_exact_fp32()

    @property
    def pin_memory(self) -> bool:
        """Pinned host memory lets a CUDA copy overlap with compute (``non_blocking``)."""
        return self.device.type == "cuda"

    def prepare(self, model: nn.Module) -> nn.Module:
        model = model.eval().to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.compile:
            model = torch.compile(model)
        return model

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=self.pin_memory)
        if self.channels_last and tensor.dim() == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def __call__(self, model: nn.Module, *inputs: torch.Tensor):
        """Run ``model`` on host or device tensors; outputs (a tensor or a dict of them) in float32, on
        the device.  A failure is a :class:`RunError` naming the layer it happened in."""
        with torch.inference_mode(), self.autocast(), failures_named(model):
            result = model(*(self.to_device(t) for t in inputs))
        if isinstance(result, dict):
            return {name: value.float() for name, value in result.items()}
        return result.float()

    def synchronize(self) -> None:
        """Wait for queued device work, so that wall-clock timings measure it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()


def infer_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  inference: Inference) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(outputs, labels) per (images, labels) batch, both left on the device.

    Nothing here waits for the device: copies from pinned memory are asynchronous and the outputs are
    not fetched, so a caller that also keeps its results on the device (evaluate's counters) lets the
    host prepare batch i+1 while the GPU runs batch i.
    """
    for images, labels in batches:
        yield inference(model, images), labels.to(inference.device, non_blocking=inference.pin_memory)
