"""Output shapes by rule, as Caffe's ``Reshape()`` computes them: integer arithmetic on the input shapes and the
module's parameters, no tensor and no meta kernel (the first meta op of a process imports torch._dynamo and
sympy, seconds of a load).

Every module of :mod:`caffe2torch.modules` states its rule as an ``output_shapes(input_shapes)`` method; the
torch modules the converters use as they are (convolutions, Identity, Sigmoid, Tanh) have theirs here.  A
module without a rule, which only a user's converter can give, is run on meta tensors instead
(:func:`meta_output_shapes`), so that custom layers keep working without one.
"""

from __future__ import annotations

import contextlib
import operator
from typing import Callable, Iterator, Sequence

import torch
from torch import fx, nn

Shape = tuple[int, ...]
Rule = Callable[[list[Shape]], list[Shape]]

LIBRARY = "caffe2torch.modules."  # the library's classes must state a rule: none of them runs on meta tensors


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, transposed: bool = False) -> int:
    """Caffe's BaseConvolutionLayer::compute_output_shape for one axis (torch computes the same)."""
    extent = dilation * (kernel - 1) + 1
    if transposed:
        return stride * (size - 1) + extent - 2 * pad
    return (size + 2 * pad - extent) // stride + 1


def _convolution_rule(module: nn.Module, input_shapes: list[Shape]) -> list[Shape]:
    """A torch ConvNd or ConvTransposeNd as the converters build them (numeric padding, no output_padding)."""
    spatial = len(module.kernel_size)
    shape = _single(module, input_shapes)
    if len(shape) != spatial + 2:
        raise ValueError(f"a {spatial}-D convolution needs a {spatial + 2}-D input (N x C x ...), got {list(shape)}")
    if shape[1] != module.in_channels:
        raise ValueError(f"the input has {shape[1]} channels, the convolution {module.in_channels}")
    if isinstance(module.padding, str):
        raise ValueError(f"padding {module.padding!r} has no rule here")
    transposed = bool(module.transposed)
    sizes = []
    for axis, size in enumerate(shape[2:]):
        out = conv_output_size(size, module.kernel_size[axis], module.stride[axis], module.padding[axis],
                               module.dilation[axis], transposed)
        if transposed:
            out += module.output_padding[axis]
        if out < 1:
            raise ValueError(f"kernel {tuple(module.kernel_size)}, stride {tuple(module.stride)}, pad "
                             f"{tuple(module.padding)} and dilation {tuple(module.dilation)} leave no output for "
                             f"an input of {list(shape[2:])}")
        sizes.append(out)
    return [(shape[0], module.out_channels, *sizes)]


def _same_shape_rule(module: nn.Module, input_shapes: list[Shape]) -> list[Shape]:
    return [_single(module, input_shapes)]


def _single(module: nn.Module, input_shapes: list[Shape]) -> Shape:
    if len(input_shapes) != 1:
        raise ValueError(f"{type(module).__name__} takes one input, got {len(input_shapes)}")
    return tuple(input_shapes[0])


# torch's own classes the converters build, each with its rule (a subclass of one gets none).
TORCH_RULES: dict[type, Callable[[nn.Module, list[Shape]], list[Shape]]] = {
    **{cls: _convolution_rule for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d,
                                          nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)},
    nn.Identity: _same_shape_rule,
    nn.Sigmoid: _same_shape_rule,
    nn.Tanh: _same_shape_rule,
}


class MissingShapeRule(AssertionError):
    """A module of this package (or a torch class the converters use) without an output-shape rule: a bug."""


def _defining_class(cls: type, name: str) -> type | None:
    """The class of ``cls``'s MRO whose own namespace holds ``name`` (None: no class does)."""
    return next((base for base in cls.__mro__ if name in vars(base)), None)


def shape_rule(module: nn.Module) -> Rule | None:
    """``module``'s output-shape rule, or None when it has none.

    Its class's ``output_shapes`` method, when that is defined at least as far down the class hierarchy as
    ``forward`` (a subclass that computes differently must state its own rule); else the rule here of the
    torch class it is (exactly: a subclass may compute otherwise through any of that class's methods)."""
    cls = type(module)
    forward_owner = _defining_class(cls, "forward")
    rule_owner = _defining_class(cls, "output_shapes")
    if rule_owner is not None and forward_owner is not None and issubclass(rule_owner, forward_owner) \
            and callable(vars(rule_owner)["output_shapes"]):
        return module.output_shapes
    if cls in TORCH_RULES:
        torch_rule = TORCH_RULES[cls]
        return lambda input_shapes: torch_rule(module, input_shapes)
    return None


def is_library_module(module: nn.Module) -> bool:
    """Whether ``module`` is one of the converters' own (caffe2torch's classes and the torch classes they use):
    those have a rule, and are never run on meta tensors to learn their shapes."""
    cls = type(module)
    return cls.__module__.startswith(LIBRARY) or cls in TORCH_RULES


@contextlib.contextmanager
def on_meta(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` with every parameter and buffer swapped for a meta tensor of the same shape, for running
    it without computing anything (cheaper than torch.func.functional_call, whose import costs seconds)."""
    saved = []
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for key, tensor in store.items():
                if tensor is not None:
                    saved.append((store, key, tensor))
                    store[key] = torch.empty_like(tensor, device="meta")
    try:
        yield module
    finally:
        for store, key, tensor in saved:
            store[key] = tensor


def meta_output_shapes(module: nn.Module, input_shapes: Sequence[Shape]) -> list[Shape]:
    """Output shapes of ``module`` found by running it on meta tensors (no data computed, but the first meta
    op of a process imports torch._dynamo and sympy: seconds).  For a user's module without a rule, and
    for tests that check the rules against it."""
    inputs = tuple(torch.empty(tuple(shape), device="meta") for shape in input_shapes)
    with on_meta(module), torch.no_grad():
        result = module(*inputs)
    results = result if isinstance(result, tuple) else (result,)
    return [tuple(r.shape) for r in results]


def output_shapes(module: nn.Module, input_shapes: Sequence[Shape]) -> list[Shape]:
    """``module``'s output shapes for inputs of ``input_shapes``: by its rule; a user's module without one is
    run on meta tensors.  A module of this package without a rule is a bug (AssertionError).  A rule's
    ValueError says what is wrong with the shapes."""
    shapes = [tuple(int(d) for d in shape) for shape in input_shapes]
    rule = shape_rule(module)
    if rule is None:
        if is_library_module(module):
            raise MissingShapeRule(f"{type(module).__qualname__} has no output_shapes rule")
        return meta_output_shapes(module, shapes)
    return [tuple(operator.index(d) for d in shape) for shape in rule(shapes)]


def module_calls(model: nn.Module, input_shapes: Sequence[Sequence[int]]
                 ) -> list[tuple[nn.Module, list[Shape], list[Shape]]] | None:
    """Each submodule call of ``model``, a ``torch.fx.GraphModule`` of calls of its submodules (a converted net),
    with its input and output shapes, found by the modules' rules: (module, input shapes, output shapes) in
    the order of the graph.  None when that cannot be told by rules: another kind of model, a graph node other
    than a submodule call or an item of its outputs, a module without a rule."""
    if not isinstance(model, fx.GraphModule):
        return None
    given = [tuple(int(d) for d in shape) for shape in input_shapes]
    values: dict[fx.Node, Shape | list[Shape]] = {}
    calls = []
    placeholders = 0
    for node in model.graph.nodes:
        if node.op == "placeholder":
            if placeholders >= len(given):
                return None
            values[node] = given[placeholders]
            placeholders += 1
        elif node.op == "call_module":
            module = model.get_submodule(node.target)
            rule = shape_rule(module)
            if rule is None or node.kwargs or not all(isinstance(a, fx.Node) for a in node.args):
                return None
            inputs = [values[a] for a in node.args]
            if any(isinstance(shape, list) for shape in inputs):
                return None
            outputs = [tuple(operator.index(d) for d in shape) for shape in rule(list(inputs))]
            calls.append((module, list(inputs), outputs))
            values[node] = outputs[0] if len(outputs) == 1 else outputs
        elif node.op == "call_function" and node.target is operator.getitem:
            source, index = node.args
            shapes = values.get(source)
            if not isinstance(shapes, list) or not isinstance(index, int):
                return None
            values[node] = shapes[index]
        elif node.op != "output":
            return None
    return calls
