"""The built-in layer converters; importing this package registers them."""

from caffe2torch.converter.layers import (  # noqa: F401
    activation,
    batch_norm,
    convolution,
    detection,
    eltwise,
    inner_product,
    normalization,
    pooling,
    reduction,
    resize,
    scale,
    shape,
    shuffle,
    softmax,
)
