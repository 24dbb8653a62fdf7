"""Helpers shared by the layer converters."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn

from caffe2torch.converter.graph import MAX_DIM
from caffe2torch.converter.registry import LayerContext

M = TypeVar("M", bound=nn.Module)


def make(cls: type[M], **kwargs: Any) -> M:
    """Construct ``cls(**kwargs)`` and remember the arguments, so export can write the same call as code.

    Arguments must be plain Python values (numbers, strings, tuples): they are written with ``repr``.
    The module is built on the meta device (no memory, no wasted initialisation): the converter then
    assigns every parameter and buffer from the layer's blobs.
    """
    with torch.device("meta"):
        module = cls(**kwargs)
    module._init_kwargs = dict(kwargs)
    return module


def canonical_axis(ctx: LayerContext, axis: int, ndim: int, what: str = "axis") -> int:
    """Caffe's Blob::CanonicalAxisIndex: negative axes count from the end; out of range is the layer's
    error (a ConversionError naming it)."""
    if not -ndim <= axis < ndim:
        raise ctx.error(f"{what} {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def spatial_values(repeated: Any, single_h: int, single_w: int, has_hw: bool, default: int,
                   num_spatial: int, what: str) -> tuple[int, ...]:
    """Caffe's per-axis convolution/pooling values: ``x_h``/``x_w`` fields, or a repeated field given
    once (all axes) or once per spatial axis, or the default.  Each must fit Caffe's int (torch's
    kernels overflow past it)."""
    if has_hw:
        if num_spatial != 2:
            raise ValueError(f"{what}_h/{what}_w only apply to 2-D spatial blobs")
        values = [single_h, single_w]
    else:
        values = list(repeated) or [default]
        if len(values) == 1:
            values *= num_spatial
        if len(values) != num_spatial:
            raise ValueError(f"{what} has {len(values)} values for {num_spatial} spatial axes")
    if any(value > MAX_DIM for value in values):
        raise ValueError(f"{what} {tuple(values)} exceeds {MAX_DIM}, the largest Caffe holds")
    return tuple(values)
