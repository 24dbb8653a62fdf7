"""SE-ResNet, SE-ResNeXt and SENet-154 of the SENet release, generated layer by layer.

All five are four stages of SE bottleneck blocks behind a stem; they differ in the stem, the block
counts, the bottleneck widths and groups, where the stride-2 downsampling sits, and the shortcut
projection of SENet-154.
"""

from __future__ import annotations

from dataclasses import dataclass

from caffe2torch.caffe_proto import caffe_pb2
from caffe2torch.zoo.layers import NetBuilder, PoolMethod


@dataclass(frozen=True)
class Family:
    """What distinguishes one net of the ResNet family from another (per stage i = 0..3)."""

    net_name: str
    blocks: tuple[int, int, int, int]
    reduce_width: int  # channels of the 1x1 reduce conv in stage 0, doubling per stage
    conv3x3_width: int  # channels of the 3x3 conv in stage 0, doubling per stage
    groups: int | None  # groups of the 3x3 conv; None: not written (plain ResNet)
    stride_on_3x3: bool  # ResNeXt/SENet-154 downsample in the 3x3 conv, the ResNets in the 1x1 reduce
    deep_stem: bool = False  # SENet-154: three 3x3 convs instead of one 7x7
    projection_3x3: bool = False  # SENet-154: downsampling shortcuts are 3x3 pad 1 convs
    dropout_ratio: float | None = None  # SENet-154: Dropout before the classifier


def _stem(net: NetBuilder, deep: bool) -> str:
    if deep:
        net.conv_bn_relu("conv1_1/3x3_s2", "data", 64, 3, pad=1, stride=2, relu="conv1_1/relu_3x3_s2")
        net.conv_bn_relu("conv1_2/3x3", "conv1_1/3x3_s2", 64, 3, pad=1, stride=1, relu="conv1_2/relu_3x3")
        top = net.conv_bn_relu("conv1_3/3x3", "conv1_2/3x3", 128, 3, pad=1, stride=1, relu="conv1_3/relu_3x3")
    else:
        top = net.conv_bn_relu("conv1/7x7_s2", "data", 64, 7, pad=3, stride=2, relu="conv1/relu_7x7_s2")
    return net.pool("pool1/3x3_s2", top, PoolMethod.MAX, 3, 2)


def _bottleneck(
    net: NetBuilder, family: Family, block: str, bottom: str, stage: int, first_in_stage: bool
) -> str:
    """One SE bottleneck ``block`` (e.g. ``conv3_1``): its output blob is named ``block``.

    Layer order is the release's: the residual branch, the SE gate, the projection shortcut (first
    block of a stage only), then ``Axpy`` (gate * residual + shortcut) and the final ReLU.
    """
    scale = 2**stage
    out_channels = 256 * scale
    stride = 2 if first_in_stage and stage > 0 else 1

    reduce = net.conv_bn_relu(
        f"{block}_1x1_reduce",
        bottom,
        family.reduce_width * scale,
        1,
        stride=1 if family.stride_on_3x3 else stride,
        relu=f"{block}_1x1_reduce/relu",
    )
    conv3x3 = net.conv_bn_relu(
        f"{block}_3x3",
        reduce,
        family.conv3x3_width * scale,
        3,
        pad=1,
        group=family.groups,
        stride=stride if family.stride_on_3x3 else 1,
        relu=f"{block}_3x3/relu",
    )
    residual = net.conv_bn(f"{block}_1x1_increase", conv3x3, out_channels, 1, stride=1)
    gate = net.squeeze_excitation_gate(block, residual, out_channels)

    shortcut = bottom
    if first_in_stage:
        # SENet-154 projects with a 3x3 conv where it downsamples (stages 3-5), still named "_1x1_proj"
        # by the release; its stride-1 first stage keeps the 1x1 projection.
        if family.projection_3x3 and stride == 2:
            shortcut = net.conv_bn(f"{block}_1x1_proj", bottom, out_channels, 3, pad=1, stride=stride)
        else:
            shortcut = net.conv_bn(f"{block}_1x1_proj", bottom, out_channels, 1, stride=stride)
    net.layer(block, "Axpy", [gate, residual, shortcut], [block])
    net.relu(f"{block}/relu", block)
    return block


def build(family: Family) -> caffe_pb2.NetParameter:
    net = NetBuilder(family.net_name)
    top = _stem(net, family.deep_stem)
    for stage, count in enumerate(family.blocks):
        for index in range(count):
            top = _bottleneck(net, family, f"conv{stage + 2}_{index + 1}", top, stage, index == 0)
    net.classifier_head(top, family.dropout_ratio)
    return net.net


SE_RESNET_50 = Family("SE-ResNet-50", (3, 4, 6, 3), 64, 64, None, stride_on_3x3=False)
SE_RESNET_101 = Family("SE-ResNet-101", (3, 4, 23, 3), 64, 64, None, stride_on_3x3=False)
SE_RESNET_152 = Family("SE-ResNet-152", (3, 8, 36, 3), 64, 64, None, stride_on_3x3=False)
SE_RESNEXT_50 = Family("SE-ResNeXt-50 (32 x 4d)", (3, 4, 6, 3), 128, 128, 32, stride_on_3x3=True)
SE_RESNEXT_101 = Family("SE-ResNeXt-101 (32 x 4d)", (3, 4, 23, 3), 128, 128, 32, stride_on_3x3=True)
# The release names this net just "SENet".
SENET_154 = Family(
    "SENet", (3, 8, 36, 3), 128, 256, 64, stride_on_3x3=True, deep_stem=True, projection_3x3=True, dropout_ratio=0.2
)
