"""An inference graph of a converted net, fast on CPU: :func:`optimize`.

:func:`caffe2torch.load` returns the faithful graph, one submodule per Caffe layer, so that every blob can be
asked for and compared with Caffe's.  At inference that costs: each BatchNorm and Scale is a pass (or
several) over a full-size tensor, each one a new allocation, Caffe's in-place tops are computed out of
place, and each convolution reorders its weights for oneDNN at every call.  :func:`optimize` rewrites the
graph into one computing the same function with fewer, cheaper ops:

* **folding** -- a chain of BatchNorm (global statistics), Scale and Bias layers with learned per-channel
  operands is one affine map ``x * s + t`` per channel, composed in float64.  After a Convolution,
  Deconvolution or InnerProduct whose output nothing else reads, it is folded into that layer's weight and
  bias (computed in float64, cast to float32 once); elsewhere it becomes one :class:`ChannelAffine` op
  (``torch.addcmul`` with precomputed scale and shift) instead of Caffe's two to four full-size passes.
  The statistics folded are the BatchNorm module's, which the converter divided by the moving-average
  factor as Caffe does at every forward (``factor == 0 ? 0 : 1 / factor``, in float32; see
  converter.layers.batch_norm), so a factor of 0 gives zero statistics here as in Caffe;
* **convolutions** -- each 2-D convolution is a :class:`FastConv2d`: on the CPU it calls oneDNN with its
  weights reordered once per input shape (eager PyTorch reorders them at every call, a pass over all the
  net's weights per forward) and a following ReLU fused in, when nothing else reads the pre-activation;
* **in place** -- another ReLU whose input is a fresh tensor read by nothing else (not a graph output, not
  the net's input) runs in place; an Axpy (the SE gate times the residual branch plus the shortcut) is one
  ``addcmul``, written into the shortcut when every other reader of the shortcut has already run;
* **removed** -- Dropout, single-top Split, Split's tops, one-input Concat: the consumers read the source;
* **memory format** -- with ``channels_last`` 2-D convolutions compute on NHWC tensors, which oneDNN does
  without reordering the activations at every layer (outputs come back contiguous).

Every node of the result records the Caffe layers it computes: ``node.meta["caffe_layers"]`` and the
``caffe_layers`` attribute of its submodule (``["conv1", "conv1/bn", "conv1/scale", "conv1/relu"]``), and
``OptimizedNet.caffe_layers`` maps each submodule to them, so errors and reports can name the layers.
The faithful model is not changed; the optimized one has copies of its tensors (folded or not), frozen
(``requires_grad`` false): it is for inference.

What is left is mostly oneDNN's convolutions (about 80% of SE-ResNeXt-50's time), and per SE block three
memory-bound passes eager PyTorch cannot fuse (the global pooling, the Axpy's addcmul, the ReLU after it).
Large batches also pay for fresh, kernel-zeroed memory at every forward pass; :func:`keep_freed_memory`
(process-wide, opt-in) removes that.
"""

from __future__ import annotations

import copy
import ctypes
import operator
import platform
import sys
import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from caffe2torch.converter.build import CaffeNet, DescribedGraph
from caffe2torch.modules import batch_norm as batch_norm_modules
from caffe2torch.modules.activation import ELU, AbsVal, PReLU, ReLU
from caffe2torch.modules.batch_norm import BatchNorm
from caffe2torch.modules.eltwise import Axpy, Eltwise
from caffe2torch.modules.inner_product import InnerProduct
from caffe2torch.modules.normalization import LRN
from caffe2torch.modules.pooling import Pooling
from caffe2torch.modules.scale import Bias, Scale
from caffe2torch.modules.shape import Concat, Split
from caffe2torch.modules.softmax import Softmax

__all__ = ["optimize", "keep_freed_memory", "OptimizedNet", "ChannelAffine", "FastConv2d", "FusedAxpy", "InplaceReLU",
           "CAFFE_LAYERS", "CHANNELS_LAST_DEFAULT"]

CAFFE_LAYERS = "caffe_layers"  # the node.meta key and the submodule attribute naming the Caffe layers
# Whether optimize() computes 2-D convolutions channels-last by default.  Measured on SE-ResNeXt-50 with
# benchmarks/bench_forward.py (2 threads, torch 2.13 CPU, AVX-512): NCHW (channels_last=False, F.conv2d)
# took 1.3x, 1.25x and 1.9x the time of channels-last at batch 1, 8 and 32.
CHANNELS_LAST_DEFAULT = True

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DECONVOLUTIONS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# The CaffeNet attributes describing the net's interface and origin, which the optimized net keeps (not its
# submodules' Caffe names, which it has its own of, nor the faithful layers' blob shapes).
_KEPT_ATTRIBUTES = tuple(name for name in CaffeNet.DESCRIPTION if name not in ("caffe_names", "blob_shapes"))
_PACKED_SHAPES = 4  # input shapes a FastConv2d keeps reordered weights for


def _onednn_convolution() -> Any:
    """oneDNN's fused convolution op of this torch build (the one torch.compile's CPU backend uses), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    mkldnn = torch.ops.mkldnn
    try:
        return mkldnn._convolution_pointwise.default, mkldnn._reorder_convolution_weight.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN = _onednn_convolution()


class FastConv2d(nn.Conv2d):
    """A Conv2d, optionally followed by a ReLU, for inference.  With ``channels_last`` on the CPU it is
    computed by oneDNN on NHWC tensors with its weight reordered once per input shape (``F.conv2d``
    reorders it at every call: a pass over all the net's weights per forward) and the ReLU applied inside
    the convolution.  A 1 x 1 convolution of a 1 x 1 map (an SE block's fully connected layers) is one matrix
    product.

    Otherwise (NCHW, no oneDNN, not float32 on the CPU, under autocast, or autograd recording) it computes
    ``F.conv2d`` and ``relu_``: the same values.  ``weight`` and ``bias`` stay ordinary parameters (state
    dicts, deep copies and ``.to()`` work as for Conv2d); the reordered copies are a cache, dropped when the
    module is copied and not used once the weight changes.
    """

    def __init__(self, *args: Any, relu: bool = False, channels_last: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.relu, self.channels_last = relu, channels_last
        self._packed: dict[tuple, torch.Tensor] = {}

    @classmethod
    def of(cls, conv: nn.Conv2d, *, relu: bool, channels_last: bool, copy: bool = True) -> "FastConv2d":
        """A FastConv2d with ``conv``'s geometry and (frozen) copies of its tensors; ``copy=False`` takes
        them over instead (a module made for the purpose, nobody else's)."""
        module = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                     padding_mode=conv.padding_mode, relu=relu, channels_last=channels_last, device="meta")
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight, bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
        if copy:
            weight, bias = weight.clone(memory_format=memory_format), None if bias is None else bias.clone()
        module.weight = nn.Parameter(weight.contiguous(memory_format=memory_format), requires_grad=False)
        module.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        return module

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_packed"] = {}  # oneDNN's opaque tensors cannot be copied or pickled; rebuilt on demand
        return state

    def _packable(self, x: torch.Tensor) -> bool:
        return (self.channels_last and _ONEDNN is not None and self.padding_mode == "zeros"
                and isinstance(self.padding, tuple) and x.device.type == "cpu" and x.dtype == torch.float32
                and x.dim() == 4 and self.weight.device.type == "cpu" and self.weight.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu")  # autocast chooses the dtype: F.conv2d obeys it
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and x.shape[2] == 1 and x.shape[3] == 1 and self.kernel_size == (1, 1) \
                and self.padding == (0, 0) and self.groups == 1:
            # a fully connected layer in disguise (an SE block's squeeze and excitation): one matrix product,
            # a third of oneDNN's convolution's time on so little data
            y = F.linear(x.reshape(x.shape[0], -1), self.weight.reshape(self.out_channels, -1), self.bias)
            return (torch.relu_(y) if self.relu else y).reshape(x.shape[0], -1, 1, 1)
        if not self._packable(x):
            y = super().forward(x)
            return torch.relu_(y) if self.relu else y
        convolution, reorder = _ONEDNN
        geometry = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        weight = self.weight
        # an inference tensor (made under torch.inference_mode) has no version counter
        key = (tuple(x.shape), id(weight), weight.data_ptr(), None if weight.is_inference() else weight._version)
        packed = self._packed.get(key)
        if packed is None:
            if len(self._packed) >= _PACKED_SHAPES:
                self._packed.pop(next(iter(self._packed)))
            packed = self._packed[key] = reorder(weight, *geometry, list(x.shape))
        return convolution(x, packed, self.bias, *geometry, "relu" if self.relu else "none", [], "")


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel (axis 1) in one pass: BatchNorm, Scale and Bias layers folded
    together where no preceding layer can absorb them.  ``scale`` / ``shift`` hold one value per channel
    (or one for all); either may be None."""

    def __init__(self, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (x.dim() - 2)
        if self.scale is None:
            return x + self.shift.view(view)
        if self.shift is None:
            return x * self.scale.view(view)
        return torch.addcmul(self.shift.view(view), x, self.scale.view(view))


class FusedAxpy(nn.Module):
    """The SE release's Axpy, ``a * x + y`` with ``a`` N x C broadcast over the map, as one ``addcmul``;
    ``inplace`` writes it into ``y`` (when nothing reads ``y`` afterwards)."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = a.reshape(a.shape[0], a.shape[1], *([1] * (x.dim() - 2)))
        return y.addcmul_(a, x) if self.inplace else torch.addcmul(y, a, x)


class InplaceReLU(nn.Module):
    """Caffe's ReLU (leaky with a ``negative_slope``) written over its input, which nothing else reads."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.negative_slope == 0:
            return torch.relu_(x)
        return F.leaky_relu_(x, self.negative_slope)


class OptimizedNet(DescribedGraph):
    """The optimized inference graph (see the module docstring).  ``caffe_layers`` maps each submodule to
    the Caffe layers it computes (``caffe_names`` to the last of them, whose output it is);
    ``removed_layers`` are the layers that compute nothing at inference (Dropout, Split...);
    ``channels_last`` says how convolutions compute.  The faithful net's description (``input_names``,
    ``input_shapes``, ``output_shapes``, ``deploy``, ``zoo_model``...) is kept."""

    DESCRIPTION = (*_KEPT_ATTRIBUTES, "caffe_layers", "caffe_names", "removed_layers", "channels_last")


@dataclass
class _Affine:
    """``x * scale + shift`` per channel, in float64: one value per channel, or one for all."""

    scale: torch.Tensor
    shift: torch.Tensor

    def then(self, other: "_Affine") -> "_Affine":
        return _Affine(self.scale * other.scale, self.shift * other.scale + other.shift)


def _per_channel(view: tuple[int, ...], operand: torch.Tensor) -> bool:
    """Whether a Scale/Bias operand reshaped to ``view`` holds one value per channel (axis 1) or one value."""
    return len(view) >= 2 and view[0] == 1 and all(d == 1 for d in view[2:]) and operand.numel() == view[1]


def _as_affine(module: nn.Module) -> _Affine | None:
    """The per-channel affine map ``module`` computes, in float64, or None when it is not one (batch
    statistics, an operand from a second input or not per channel)."""
    kind = type(module)
    if kind is BatchNorm:
        if not module.use_global_stats:
            return None
        inverse = 1 / torch.sqrt(module.var.detach().double() + module.eps)
        return _Affine(inverse, -module.mean.detach().double() * inverse)
    fork_bn = getattr(batch_norm_modules, "BN", None)  # the yjxiong/PSPNet fork's BN: normalise, scale, shift
    if fork_bn is not None and kind is fork_bn:
        scale = torch.pow(module.var.detach().double() + module.eps, -0.5) * module.slope.detach().double()
        return _Affine(scale, module.bias.detach().double() - module.mean.detach().double() * scale)
    if kind is Scale:
        if module.weight is None or not _per_channel(module.view, module.weight):
            return None
        scale = module.weight.detach().double().reshape(-1)
        if module.bias is None:
            return _Affine(scale, torch.zeros_like(scale))
        return _Affine(scale, module.bias.detach().double().reshape(-1))
    if kind is Bias:
        if module.bias is None or not _per_channel(module.view, module.bias):
            return None
        shift = module.bias.detach().double().reshape(-1)
        return _Affine(torch.ones_like(shift), shift)
    return None


def _output_channels(module: nn.Module) -> int | None:
    """The channels (axis 1) of the output of a layer an affine map can be folded into, or None."""
    kind = type(module)
    if kind in _CONVOLUTIONS or kind in _DECONVOLUTIONS:
        return module.out_channels
    if kind is InnerProduct and module.axis == 1:
        return module.out_features
    return None


def _fold(module: nn.Module, affine: _Affine) -> nn.Module:
    """A copy of the Convolution / Deconvolution / InnerProduct ``module`` computing ``affine`` of its output:
    weight and bias multiplied (and shifted) per output channel in float64, cast to float32 once."""
    # a copy of everything but the weight and bias, which are replaced below (copying them would be wasted)
    memo = {id(tensor): None for tensor in (module.weight, module.bias) if tensor is not None}
    folded = copy.deepcopy(module, memo)
    channels = _output_channels(module)
    scale, shift = (t.expand(channels) if t.numel() == 1 else t for t in (affine.scale, affine.shift))
    # a contiguous float64 copy, multiplied in place
    weight = module.weight.detach().to(torch.float64, memory_format=torch.contiguous_format, copy=True)
    if type(module) in _DECONVOLUTIONS:  # (inputs, outputs / groups, kernel...): output channel g * per + j
        groups = module.groups
        grouped = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
        grouped.mul_(scale.reshape(groups, 1, -1, *([1] * (weight.dim() - 2))))
    else:  # (outputs, ...)
        weight.mul_(scale.reshape(-1, *([1] * (weight.dim() - 1))))
    bias = module.bias.detach().double() if module.bias is not None else torch.zeros_like(shift)
    folded.weight = nn.Parameter(weight.to(module.weight.dtype), requires_grad=False)
    folded.bias = nn.Parameter((bias * scale + shift).to(module.weight.dtype), requires_grad=False)
    kwargs = getattr(folded, "_init_kwargs", None)
    if isinstance(kwargs, dict) and "bias" in kwargs:
        folded._init_kwargs = {**kwargs, "bias": True}
    return folded


# Modules whose output is a new tensor, never a view of an input: writing over their output in place
# cannot change another blob.  Exact types: a subclass (a user's plugin) may return a view.
_FRESH = (*_CONVOLUTIONS, *_DECONVOLUTIONS, InnerProduct, BatchNorm, Scale, Bias, Eltwise, Axpy, Pooling, ReLU,
          PReLU, ELU, AbsVal, nn.Sigmoid, nn.Tanh, Softmax, LRN, ChannelAffine, FastConv2d, FusedAxpy, InplaceReLU)


@dataclass
class _Group:
    """Consecutive layers computed as one op: an optional producer (Convolution, Deconvolution or
    InnerProduct), affine layers folded together, and for a 2-D convolution an optional ReLU."""

    members: list[fx.Node]
    producer: fx.Node | None = None
    affine: _Affine | None = None
    relu: fx.Node | None = None


class _Optimizer:
    """Plans the optimized graph from the faithful one (identities, folds, fusions, in-place ops), then
    builds it."""

    def __init__(self, model: fx.GraphModule) -> None:
        self.model = model
        self.modules = dict(model.named_modules())
        self.caffe_names: dict[str, str] = dict(getattr(model, "caffe_names", {}))
        self.nodes = list(model.graph.nodes)
        self.order = {node: i for i, node in enumerate(self.nodes)}
        self.source: dict[fx.Node, fx.Node] = {}  # removed identity -> the node whose value it passes on
        self.removed: set[fx.Node] = set()  # nodes that compute nothing any more
        self.removed_layers: list[str] = []
        self.groups: dict[fx.Node, _Group] = {}  # by the node whose value the group computes (its last)
        self.grouped: dict[fx.Node, fx.Node] = {}  # every member but the last -> the last
        self.new_modules: dict[fx.Node, nn.Module] = {}

    # -- reading the faithful graph ------------------------------------------------------------------------

    def module(self, node: Any) -> nn.Module | None:
        return self.modules[node.target] if isinstance(node, fx.Node) and node.op == "call_module" else None

    def layer(self, node: fx.Node) -> str:
        return self.caffe_names.get(node.target, str(node.target))

    def resolve(self, node: Any) -> Any:
        while isinstance(node, fx.Node) and node in self.source:
            node = self.source[node]
        return node

    def single_input(self, node: fx.Node) -> fx.Node | None:
        """The node ``node`` reads, when it is a module call with one positional input and nothing else."""
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            return None
        return self.resolve(node.args[0])

    def find_identities(self) -> None:
        """Dropout, single-top Split and one-input Concat pass their input on; so do a Split's tops."""
        for node in self.nodes:
            module, source = self.module(node), self.single_input(node)
            if source is None:
                continue
            if type(module) in (nn.Identity, Concat):
                self.source[node] = node.args[0]
                self.removed.add(node)
                self.removed_layers.append(self.layer(node))
            elif type(module) is Split and node.users and all(
                    user.op == "call_function" and user.target is operator.getitem for user in node.users):
                for user in node.users:
                    self.source[user] = node.args[0]
                    self.removed.add(user)
                self.removed.add(node)
                self.removed_layers.append(self.layer(node))

    def find_readers(self) -> None:
        """Who reads each node's value once the identities are gone; the output node counts as a reader."""
        self.readers: dict[fx.Node, list[fx.Node]] = {node: [] for node in self.nodes}
        for node in self.nodes:
            if node in self.removed:
                continue
            for arg in node.all_input_nodes:
                source = self.resolve(arg)
                if node not in self.readers[source]:
                    self.readers[source].append(node)
        self.outputs = {node for node in self.nodes if any(user.op == "output" for user in self.readers[node])}

    def only_reader(self, node: fx.Node, reader: fx.Node) -> bool:
        return self.readers[node] == [reader] and node not in self.outputs

    # -- planning ------------------------------------------------------------------------------------------

    def find_groups(self) -> None:
        """Chains of affine layers, each read only by the next; the layer before them that absorbs them when
        nothing else reads its output; and a ReLU after a 2-D convolution (folded or not) that nothing else
        reads."""
        chains: dict[fx.Node, _Group] = {}  # by last node
        for node in self.nodes:
            affine = _as_affine(self.module(node)) if self.single_input(node) is not None else None
            if affine is None:
                continue
            previous = self.single_input(node)
            if previous in chains and self.only_reader(previous, node):
                group = chains.pop(previous)
                group.members.append(node)
                group.affine = group.affine.then(affine)
            else:
                group = _Group([node], affine=affine)
            chains[node] = group
        for last, group in chains.items():
            head = self.single_input(group.members[0])
            channels = _output_channels(self.module(head)) if isinstance(head, fx.Node) else None
            if channels is not None and self.only_reader(head, group.members[0]) \
                    and group.affine.scale.numel() in (1, channels):
                group.producer = head
                group.members.insert(0, head)
            self.groups[last] = group
        for node in self.nodes:
            if type(self.module(node)) is ReLU and self.module(node).negative_slope == 0:
                previous = self.single_input(node)
                group = self.groups.get(previous)
                producer = group.producer if group is not None else previous
                if isinstance(producer, fx.Node) and type(self.module(producer)) is nn.Conv2d \
                        and self.only_reader(previous, node):
                    group = self.groups.pop(previous, None) or _Group([previous], producer=previous)
                    group.members.append(node)
                    group.relu = node
                    self.groups[node] = group
        for last, group in self.groups.items():
            for member in group.members[:-1]:
                self.grouped[member] = last

    def fresh(self, node: Any) -> bool:
        """Whether ``node``'s value is a tensor of its own, which no other value aliases."""
        if not isinstance(node, fx.Node) or node.op != "call_module":
            return False
        return type(self.new_modules.get(node, self.module(node))) in _FRESH

    def runs_at(self, node: fx.Node) -> int:
        """Where ``node`` is computed in the optimized graph: a grouped layer, with the last of its group."""
        return self.order[self.grouped.get(node, node)]

    def axpy_in_place(self, node: fx.Node) -> bool:
        """Whether an Axpy may write over its ``y`` (the shortcut): a tensor of its own, not an output, and
        every other reader already run without keeping a view of it."""
        a, x, y = (self.resolve(arg) for arg in node.args)
        return (self.fresh(y) and y not in self.outputs and y is not x and y is not a
                and all(self.runs_at(reader) < self.order[node] and self.fresh(reader)
                        for reader in self.readers[y] if reader is not node))

    # -- building the optimized graph ----------------------------------------------------------------------

    def group_module(self, group: _Group, channels_last: bool) -> nn.Module:
        producer = self.module(group.producer) if group.producer is not None else None
        if producer is None:
            affine = group.affine
            scale = None if bool((affine.scale == 1).all()) else affine.scale.float()
            shift = None if scale is not None and bool((affine.shift == 0).all()) else affine.shift.float()
            return ChannelAffine(scale, shift)
        folded = group.affine is not None
        if folded:  # a new module with new tensors
            producer = _fold(producer, group.affine)
        if type(producer) is nn.Conv2d:
            return FastConv2d.of(producer, relu=group.relu is not None, channels_last=channels_last, copy=not folded)
        return producer if folded else copy.deepcopy(producer)

    def node_module(self, node: fx.Node, channels_last: bool) -> nn.Module:
        module = self.module(node)
        source = self.single_input(node)
        if type(module) is Axpy and len(node.args) == 3 and not node.kwargs:
            return FusedAxpy(self.axpy_in_place(node))
        if type(module) is ReLU and source is not None and self.fresh(source) and self.only_reader(source, node):
            return InplaceReLU(module.negative_slope)
        if type(module) is nn.Conv2d:
            return FastConv2d.of(module, relu=False, channels_last=channels_last)
        return copy.deepcopy(module)

    def build(self, channels_last: bool) -> OptimizedNet:
        self.find_identities()
        self.find_readers()
        self.find_groups()
        root = nn.Module()
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        caffe_layers: dict[str, tuple[str, ...]] = {}

        def value(arg: Any) -> Any:
            return fx.map_arg(arg, lambda n: env[self.resolve(n)])

        for node in self.nodes:
            if node in self.removed or node in self.grouped:
                continue
            if node.op == "placeholder":
                env[node] = graph.placeholder(node.target, default_value=node.args[0]) if node.args \
                    else graph.placeholder(node.target)
            elif node.op == "output":
                # NHWC is an inner detail: the outputs come back in the default memory format
                graph.output(fx.map_arg(value(node.args[0]), lambda n: graph.call_method("contiguous", (n,))))
            elif node.op != "call_module":
                env[node] = graph.node_copy(node, lambda n: env[self.resolve(n)])
                origins = [env[self.resolve(n)].meta.get(CAFFE_LAYERS, []) for n in node.all_input_nodes]
                env[node].meta[CAFFE_LAYERS] = [name for names in origins for name in names]
            else:
                group = self.groups.get(node)
                first = group.members[0] if group is not None else node
                module = (self.group_module(group, channels_last) if group is not None
                          else self.node_module(node, channels_last))
                layers = tuple(self.layer(member) for member in (group.members if group is not None else [node]))
                module.caffe_layers = layers
                root.add_module(first.target, module)
                self.new_modules[node] = module
                caffe_layers[first.target] = layers
                env[node] = graph.call_module(first.target, value(first.args), value(first.kwargs))
                env[node].meta[CAFFE_LAYERS] = list(layers)

        for parameter in root.parameters():
            parameter.requires_grad_(False)
        result = OptimizedNet(root, graph, class_name="OptimizedCaffeNet")
        for name in _KEPT_ATTRIBUTES:
            if hasattr(self.model, name):
                setattr(result, name, copy.deepcopy(getattr(self.model, name)))
        result.caffe_layers = caffe_layers
        result.caffe_names = {ident: layers[-1] for ident, layers in caffe_layers.items()}
        result.removed_layers = tuple(self.removed_layers)
        result.channels_last = channels_last
        return result.eval()


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel: process-wide,
    for good; returns whether it applied (False off glibc).

    Eager PyTorch on the CPU allocates every intermediate tensor afresh.  glibc serves a block above 32 MiB
    (and, once it trims its heap, smaller ones) with new pages, which the kernel zeroes and faults in page by
    page at every forward pass: SE-ResNeXt-50 spends about 8 ms per image in the kernel so at batch 8 and
    25 ms at batch 32 (2 threads), a third of its time.  With malloc's mmap off (``M_MMAP_MAX`` 0) and trimming
    off (``M_TRIM_THRESHOLD`` at its maximum) freed blocks are reused, as ONNX Runtime's arena reuses its
    memory; the price is that the process keeps its peak memory, and reuse starts after a few forward passes
    (SE-ResNeXt-50 at batch 32: from the third or fourth, the resident set flat at 1.3-1.4 GiB after).  Not
    done by :func:`optimize`, since it changes how the whole process allocates (the commands that run nets
    do it in their own process).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h
    return mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1


def optimize(model: fx.GraphModule, *, channels_last: bool | None = None) -> OptimizedNet:
    """The inference graph of ``model`` (a net from :func:`caffe2torch.load`): the same function, fast on
    the CPU (see :mod:`caffe2torch.optimize`).  ``channels_last`` computes 2-D convolutions on NHWC
    tensors (None: :data:`CHANNELS_LAST_DEFAULT`, chosen by measuring SE-ResNeXt-50).  ``model`` is left
    unchanged."""
    if not isinstance(model, fx.GraphModule):
        raise TypeError(f"optimize() takes a converted net (a torch.fx.GraphModule), not {type(model).__name__}")
    channels_last = CHANNELS_LAST_DEFAULT if channels_last is None else bool(channels_last)
    with torch.no_grad():
        return _Optimizer(model).build(channels_last)


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`optimize`.  Importing ``caffe2torch.optimize`` makes Python bind the
    package attribute ``caffe2torch.optimize`` to this module, replacing the function of that name; calling
    the module then still optimizes."""

    def __call__(self, model: fx.GraphModule, *, channels_last: bool | None = None) -> OptimizedNet:
        return optimize(model, channels_last=channels_last)


sys.modules[__name__].__class__ = _CallableModule
