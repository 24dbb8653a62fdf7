"""Model size and cost as papers report them: learnable parameters and multiply-accumulates.

Both are counted on the converted torch module, so they hold for any net the converter handles.
MACs are counted only for convolutions and inner products (the papers' convention: activations,
pooling, BatchNorm and element-wise ops are left out), for one sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from caffe2torch.converter.build import on_meta

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVOLUTIONS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters: every ``nn.Parameter`` once (BatchNorm statistics are buffers, not counted)."""
    return sum(parameter.numel() for parameter in model.parameters())


def _macs_of_call(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, CONVOLUTIONS):
        # each output element is a dot product over (in_channels / groups) x kernel
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, TRANSPOSED_CONVOLUTIONS):
        # each input element is scattered to (out_channels / groups) x kernel outputs
        return inputs[0].numel() * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    # nn.Linear: in_features x out_features for every row of the input
    return output.numel() * module.in_features


def count_macs(model: nn.Module, input_shapes: Sequence[Sequence[int]]) -> int:
    """Multiply-accumulates of one forward pass of one sample through ``model``'s convolutions and linears.

    ``input_shapes`` are the shapes of the forward's positional inputs; the first dimension of the first
    is the batch, and the count for the whole batch is divided by it.  (Running at batch 1 instead would
    fail on a net whose Reshape spells out the batch.)  The pass runs on meta tensors: nothing is
    computed or allocated.
    """
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _macs_of_call(module, inputs, output)

    counted = (*CONVOLUTIONS, *TRANSPOSED_CONVOLUTIONS, nn.Linear)
    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, counted)]
    try:
        inputs = tuple(torch.empty(tuple(shape), device="meta") for shape in input_shapes)
        with on_meta(model), torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    batch = input_shapes[0][0] if input_shapes and len(input_shapes[0]) else 1
    return total // batch
