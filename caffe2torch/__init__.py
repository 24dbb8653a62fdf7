"""caffe2torch: read Caffe models, convert them to PyTorch, and verify that nothing changed on the way."""

from caffe2torch.errors import (
    Caffe2TorchError,
    CaffeFormatError,
    ConversionError,
    InputError,
    ResourceLimitError,
)

__version__ = "0.1.0"
__all__ = ["load", "__version__", "Caffe2TorchError", "CaffeFormatError", "ConversionError", "InputError",
           "ResourceLimitError"]


def load(prototxt, weights=None, *, outputs=None, input_shape=None, random_init=False):
    """Convert a Caffe net (a prototxt path, a zoo name or a NetParameter) to a ``torch.fx.GraphModule``.

    Imported lazily so that ``import caffe2torch`` stays cheap for the CLI.
    """
    from caffe2torch.converter import load as _load

    return _load(prototxt, weights, outputs=outputs, input_shape=input_shape, random_init=random_init)
