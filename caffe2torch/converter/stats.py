"""Model size and cost as papers report them: learnable parameters and multiply-accumulates.

Both are counted on the converted torch module, so they hold for any net the converter handles.
MACs are counted only for convolutions and inner products (the papers' convention: activations,
pooling, BatchNorm and element-wise ops are left out), for one sample.  A converted net's are found from its
layers' shape rules (no tensor is made); any other module is run on meta tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from caffe2torch.converter.shapes import module_calls, on_meta

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVOLUTIONS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters: every ``nn.Parameter`` once (BatchNorm statistics are buffers, not counted)."""
    return sum(parameter.numel() for parameter in model.parameters())


COUNTED = (*CONVOLUTIONS, *TRANSPOSED_CONVOLUTIONS, nn.Linear)


def _macs_of_call(module: nn.Module, input_shape: Sequence[int], output_shape: Sequence[int]) -> int:
    if isinstance(module, CONVOLUTIONS):
        # each output element is a dot product over (in_channels / groups) x kernel
        return math.prod(output_shape) * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, TRANSPOSED_CONVOLUTIONS):
        # each input element is scattered to (out_channels / groups) x kernel outputs
        return math.prod(input_shape) * (module.out_channels // module.groups) * math.prod(module.kernel_size)
    # nn.Linear: in_features x out_features for every row of the input
    return math.prod(output_shape) * module.in_features


def count_macs(model: nn.Module, input_shapes: Sequence[Sequence[int]]) -> int:
    """Multiply-accumulates of one forward pass of one sample through ``model``'s convolutions and linears.

    ``input_shapes`` are the shapes of the forward's positional inputs; the first dimension of the first
    is the batch, and the count for the whole batch is divided by it.  (Running at batch 1 instead would
    fail on a net whose Reshape spells out the batch.)  A converted net's calls and their shapes come from its
    layers' rules; any other model runs on meta tensors: nothing is computed or allocated either way.
    """
    batch = input_shapes[0][0] if input_shapes and len(input_shapes[0]) else 1
    calls = _calls_by_rules(model, input_shapes)
    if calls is not None:
        return sum(_macs_of_call(module, inputs[0], outputs[0]) for module, inputs, outputs in calls
                   if isinstance(module, COUNTED)) // batch
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        total += _macs_of_call(module, inputs[0].shape, output.shape)

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, COUNTED)]
    try:
        inputs = tuple(torch.empty(tuple(shape), device="meta") for shape in input_shapes)
        with on_meta(model), torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return total // batch


def _calls_by_rules(model: nn.Module, input_shapes: Sequence[Sequence[int]]
                    ) -> list[tuple[nn.Module, list[tuple[int, ...]], list[tuple[int, ...]]]] | None:
    """The model's module calls with their shapes by the layers' rules, when every counted module is a layer
    of the graph (not inside another one, which the rules would not see); else None."""
    calls = module_calls(model, input_shapes)
    if calls is None:
        return None
    called = {id(module) for module, _, _ in calls}
    if any(isinstance(m, COUNTED) and id(m) not in called for m in model.modules()):
        return None
    return calls
