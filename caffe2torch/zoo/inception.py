"""SE-BN-Inception of the SENet release, generated layer by layer.

BN-Inception (Ioffe & Szegedy, 2015) with an SE gate after every module's concat. Unlike the ResNet
family, the gate is applied by a 2-bottom ``Scale`` (``axis: 0``) after reshaping it to N x C, and
the convolutions omit ``stride`` unless it is 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.zoo.layers import NetBuilder, PoolMethod


@dataclass(frozen=True)
class Module:
    """One Inception module; ``conv1x1`` is None for the stride-2 (grid reduction) modules."""

    name: str
    conv1x1: int | None
    conv3x3_reduce: int
    conv3x3: int
    double3x3_reduce: int
    double3x3: int
    pool_proj: int | None  # None: the stride-2 modules pass the max-pooled input through unprojected
    pool: int = PoolMethod.AVE


MODULES = (
    Module("inception_3a", 64, 64, 64, 64, 96, 32),
    Module("inception_3b", 64, 64, 96, 64, 96, 64),
    Module("inception_3c", None, 128, 160, 64, 96, None, PoolMethod.MAX),
    Module("inception_4a", 224, 64, 96, 96, 128, 128),
    Module("inception_4b", 192, 96, 128, 96, 128, 128),
    Module("inception_4c", 160, 128, 160, 128, 160, 128),
    Module("inception_4d", 96, 128, 192, 160, 192, 128),
    Module("inception_4e", None, 128, 192, 192, 256, None, PoolMethod.MAX),
    Module("inception_5a", 352, 192, 320, 160, 224, 128),
    Module("inception_5b", 352, 192, 320, 192, 224, 128, PoolMethod.MAX),  # max pooling branch, as in BN-Inception
)


def _conv(net: NetBuilder, name: str, bottom: str, num_output: int, kernel_size: int, stride: int | None = None) -> str:
    """conv + BN + Scale + ReLU; ``a/b`` is activated by a ReLU named ``a/relu_b``."""
    prefix, _, suffix = name.rpartition("/")
    pad = 1 if kernel_size == 3 else None
    relu = f"{prefix}/relu_{suffix}"
    return net.conv_bn_relu(name, bottom, num_output, kernel_size, pad=pad, stride=stride, relu=relu)


def _module(net: NetBuilder, module: Module, bottom: str, in_channels: int) -> tuple[str, int]:
    """Branches, concat, then the SE gate scaling the concat; returns the output blob and its channels."""
    name = module.name
    stride = 2 if module.conv1x1 is None else None
    branches: list[str] = []
    channels = 0
    if module.conv1x1 is not None:
        branches.append(_conv(net, f"{name}/1x1", bottom, module.conv1x1, 1))
        channels += module.conv1x1
    reduce = _conv(net, f"{name}/3x3_reduce", bottom, module.conv3x3_reduce, 1)
    branches.append(_conv(net, f"{name}/3x3", reduce, module.conv3x3, 3, stride))
    reduce = _conv(net, f"{name}/double3x3_reduce", bottom, module.double3x3_reduce, 1)
    middle = _conv(net, f"{name}/double3x3a", reduce, module.double3x3, 3)
    branches.append(_conv(net, f"{name}/double3x3b", middle, module.double3x3, 3, stride))
    channels += module.conv3x3 + module.double3x3
    if module.pool_proj is None:
        branches.append(net.pool(f"{name}/pool/3x3_s2", bottom, module.pool, 3, 2))
        channels += in_channels
    else:
        pooled = net.pool(f"{name}/pool", bottom, module.pool, 3, 1, pad=1)
        branches.append(_conv(net, f"{name}/pool_proj", pooled, module.pool_proj, 1))
        channels += module.pool_proj
    concat = f"{name}/concat"
    net.layer(concat, "Concat", branches, [concat])

    gate = net.squeeze_excitation_gate(name, concat, channels)
    gate_nc = f"{name}_prob_reshape"
    net.layer(gate_nc, "Reshape", [gate], [gate_nc], reshape_param={"shape": {"dim": [0, 0]}})
    output = f"{name}/output"
    net.layer(f"{name}_scale", "Scale", [concat, gate_nc], [output], scale_param={"axis": 0, "bias_term": False})
    return output, channels


def build() -> caffe_pb2.NetParameter:
    net = NetBuilder("SE-BN-Inception")
    # The release names this ReLU "conv1/relu_7x7", not "conv1/relu_7x7_s2" as _conv would.
    top = net.conv_bn_relu("conv1/7x7_s2", "data", 64, 7, pad=3, stride=2, relu="conv1/relu_7x7")
    top = net.pool("pool1/3x3_s2", top, PoolMethod.MAX, 3, 2)
    top = _conv(net, "conv2/3x3_reduce", top, 64, 1)
    top = _conv(net, "conv2/3x3", top, 192, 3)
    top = net.pool("pool2/3x3_s2", top, PoolMethod.MAX, 3, 2)
    channels = 192
    for module in MODULES:
        top, channels = _module(net, module, top, channels)
    net.classifier_head(top)
    return net.net
