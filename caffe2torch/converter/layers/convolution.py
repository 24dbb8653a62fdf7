"""Convolution and Deconvolution (Caffe's BaseConvolutionLayer semantics), the MobileNet forks' depthwise
convolution types, which are grouped convolutions, and PSPNet's HoleConvolution, a dilated one."""

from __future__ import annotations

import dataclasses

from torch import nn

from caffe2torch.converter.layers.common import canonical_axis, make, spatial_values
from caffe2torch.converter.registry import LayerContext, register
from caffe2torch.converter.shapes import conv_output_size

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_DECONV = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _geometry(ctx: LayerContext, transposed: bool) -> dict:
    p = ctx.layer.convolution_param
    shape = ctx.input_shapes[0]
    axis = canonical_axis(ctx, p.axis, len(shape))
    if axis != 1:
        raise ctx.error(f"convolution over axis {p.axis} is not supported (only the channel axis 1)")
    spatial = len(shape) - 2
    if spatial not in _CONV:
        raise ctx.error(f"{spatial}-D convolution is not supported")
    try:
        kernel = spatial_values(p.kernel_size, p.kernel_h, p.kernel_w,
                                p.HasField("kernel_h") or p.HasField("kernel_w"), 0, spatial, "kernel")
        stride = spatial_values(p.stride, p.stride_h, p.stride_w,
                                p.HasField("stride_h") or p.HasField("stride_w"), 1, spatial, "stride")
        pad = spatial_values(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h") or p.HasField("pad_w"), 0,
                             spatial, "pad")
        dilation = spatial_values(p.dilation, 0, 0, False, 1, spatial, "dilation")
    except ValueError as error:
        raise ctx.error(str(error)) from None
    if 0 in kernel:
        raise ctx.error("kernel size must be given and positive")
    if 0 in stride or 0 in dilation:
        raise ctx.error(f"stride {stride} and dilation {dilation} must be positive")
    if p.num_output < 1:
        raise ctx.error(f"num_output must be positive, got {p.num_output}")
    if any(conv_output_size(*axis, transposed) < 1 for axis in zip(shape[2:], kernel, stride, pad, dilation)):
        raise ctx.error(f"kernel {kernel}, stride {stride}, pad {pad} and dilation {dilation} leave no output "
                        f"for an input of {list(shape[2:])}")
    channels = shape[1]
    if p.group < 1 or channels % p.group or p.num_output % p.group:
        raise ctx.error(f"group {p.group} does not divide the {channels} input and "
                        f"{p.num_output} output channels")
    return dict(channels=channels, spatial=spatial, kernel=kernel, stride=stride, padding=pad,
                dilation=dilation, groups=p.group, num_output=p.num_output, bias=p.bias_term)


def _convolution(ctx: LayerContext, classes: dict, transposed: bool) -> nn.Module:
    g = _geometry(ctx, transposed)
    module = make(classes[g["spatial"]], in_channels=g["channels"], out_channels=g["num_output"],
                  kernel_size=g["kernel"], stride=g["stride"], padding=g["padding"],
                  dilation=g["dilation"], groups=g["groups"], bias=g["bias"])
    # weight: (outputs, inputs / group, kernel...); transposed: (inputs, outputs / group, kernel...)
    leading, grouped = (g["channels"], g["num_output"]) if transposed else (g["num_output"], g["channels"])
    module.weight = nn.Parameter(ctx.blob(0, (leading, grouped // g["groups"], *g["kernel"])))
    if g["bias"]:
        module.bias = nn.Parameter(ctx.blob(1, (g["num_output"],), init="zeros"))
    return module


@register("Convolution", bottoms=1, tops=1)
def convolution(ctx: LayerContext) -> nn.Module:
    """Caffe's convolution rounds its output size down, like torch; ``bias_term`` defaults to true."""
    return _convolution(ctx, _CONV, transposed=False)


@register("Deconvolution", bottoms=1, tops=1)
def deconvolution(ctx: LayerContext) -> nn.Module:
    """Caffe stores deconvolution weights as (input channels, outputs / group, kernel...), as torch does."""
    return _convolution(ctx, _DECONV, transposed=True)


@register("DepthwiseConvolution", bottoms=1, tops=1)
def depthwise_convolution(ctx: LayerContext) -> nn.Module:
    """eric612/MobileNet-YOLO's (and its relatives') DepthwiseConvolution: on the CPU it is Caffe's
    BaseConvolutionLayer, so convolution_param is read exactly as for Convolution, ``group`` and ``num_output``
    included (their prototxts set both to the channel count; the fork's GPU kernel assumes so)."""
    return _convolution(ctx, _CONV, transposed=False)


@register("ConvolutionDepthwise", bottoms=1, tops=1)
def convolution_depthwise(ctx: LayerContext) -> nn.Module:
    """yonghenglh6/DepthwiseConvolution's ConvolutionDepthwise: one filter per input channel (weights C x 1 x
    kh x kw, bias C), whatever ``num_output``, ``group`` and ``axis`` say; 2-D only.  Converted as Convolution
    with group = num_output = the input's channels."""
    shape = ctx.input_shapes[0]
    if len(shape) != 4:
        raise ctx.error(f"needs a 4-D input (N x C x H x W), got shape {list(shape)}")
    depthwise = type(ctx.layer)(name=ctx.layer.name, type=ctx.layer.type)
    depthwise.convolution_param.CopyFrom(ctx.layer.convolution_param)
    depthwise.convolution_param.group = depthwise.convolution_param.num_output = shape[1]
    depthwise.convolution_param.ClearField("axis")
    # The same context otherwise (its list of the blobs used included): only the parameters differ.
    return _convolution(dataclasses.replace(ctx, layer=depthwise), _CONV, transposed=False)


@register("HoleConvolution", bottoms=1, tops=1)
def hole_convolution(ctx: LayerContext) -> nn.Module:
    """hszhao/PSPNet's (DeepLab v1's) HoleConvolution: a 2-D convolution dilated by ``hole`` (both axes) or by
    ``hole_h`` and ``hole_w``, which its convolution_param gives instead of ``dilation`` (hole_conv_layer.cpp).
    Converted as Convolution with that dilation; the rest of convolution_param is read as Convolution reads it."""
    p = ctx.layer.convolution_param
    if len(ctx.input_shapes[0]) != 4:
        raise ctx.error(f"needs a 4-D input (N x C x H x W), got shape {list(ctx.input_shapes[0])}")
    if p.dilation:
        raise ctx.error("gives dilation, which HoleConvolution does not read: give hole (or hole_h and hole_w)")
    has_pair = p.HasField("hole_h") or p.HasField("hole_w")
    if has_pair and (p.HasField("hole") or not (p.HasField("hole_h") and p.HasField("hole_w"))):
        raise ctx.error("give hole, or hole_h and hole_w (both), as the fork requires")
    if not has_pair and not p.HasField("hole"):
        raise ctx.error("gives no hole (the fork refuses it: 'Use Convolution instead')")
    dilation = (p.hole_h, p.hole_w) if has_pair else (p.hole, p.hole)
    if 0 in dilation:
        raise ctx.error(f"hole {dilation} must be positive")
    dilated = type(ctx.layer)(name=ctx.layer.name, type=ctx.layer.type)
    dilated.convolution_param.CopyFrom(p)
    dilated.convolution_param.dilation.extend(dilation)
    for name in ("hole", "hole_h", "hole_w"):
        dilated.convolution_param.ClearField(name)
    return _convolution(dataclasses.replace(ctx, layer=dilated), _CONV, transposed=False)
