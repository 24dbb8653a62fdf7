"""The torch modules a converted net is made of: Caffe's semantics in plain torch.

Every file here imports only ``math``, ``torch`` and other files of this package (by name, ``from
caffe2torch.modules.<file> import <name>``), so that export can copy the files a net uses, whole, into a
standalone model.py.  The converters in ``caffe2torch.converter.layers`` only choose a module and its
arguments for a Caffe layer; what the module computes lives here.
"""

from caffe2torch.modules.activation import (BNLL, ELU, PReLU, AbsVal, Clip, Exp, Log, Power, ReLU, ReLU6, Swish,
                                           Threshold)
from caffe2torch.modules.batch_norm import BN, BatchNorm, PSPNetBN
from caffe2torch.modules.convention import NormalizedRGBToCaffe, SelectClasses
from caffe2torch.modules.detection import DetectionOutput, Normalize, Permute, PriorBox
from caffe2torch.modules.eltwise import Axpy, Eltwise
from caffe2torch.modules.inner_product import Embed, InnerProduct
from caffe2torch.modules.normalization import LRN, MVN
from caffe2torch.modules.pooling import Pooling, average_divisors, caffe_pool2d, pooled_size
from caffe2torch.modules.reduction import ArgMax, Reduction, caffe_top_k
from caffe2torch.modules.resize import Interp, Upsample
from caffe2torch.modules.scale import Bias, Scale
from caffe2torch.modules.shapes import axis_index, check_channels, check_same_shapes
from caffe2torch.modules.shape import Concat, Crop, CropCenter, Flatten, Reshape, Silence, Slice, Split, Tile
from caffe2torch.modules.shuffle import Reorg, ShuffleChannel
from caffe2torch.modules.softmax import Softmax

__all__ = [
    "AbsVal", "ArgMax", "Axpy", "BNLL", "BatchNorm", "Bias", "Clip", "Concat", "Crop", "ELU", "Eltwise", "Embed",
    "Exp", "Flatten", "InnerProduct", "LRN", "Log", "MVN", "NormalizedRGBToCaffe", "PReLU", "Pooling", "Power",
    "ReLU", "Reduction", "Reshape", "Scale", "SelectClasses", "Silence", "Slice", "Softmax", "Split", "Swish",
    "Threshold", "Tile", "average_divisors", "caffe_pool2d", "caffe_top_k", "pooled_size",
    # the checks of the modules' output_shapes rules
    "axis_index", "check_channels", "check_same_shapes",
    # the SSD fork's layers
    "DetectionOutput", "Normalize", "Permute", "PriorBox",
    # the fork layers (YOLO, DeepLab, ShuffleNet, PSPNet, waifu2x, MobileNet)
    "BN", "CropCenter", "Interp", "PSPNetBN", "ReLU6", "Reorg", "ShuffleChannel", "Upsample",
]
