"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class Caffe2TorchError(Exception):
    """Base of every error caused by the user's input rather than by a bug in caffe2torch."""


class CaffeFormatError(Caffe2TorchError):
    """A model file cannot be read: bad syntax, truncated or corrupt data, wrong layout."""


class ConversionError(Caffe2TorchError):
    """The net is well formed but cannot be converted: unknown layer type, bad shapes, missing weights."""


class InputError(Caffe2TorchError):
    """Images, labels or options given to the runtime are unusable."""


class ResourceLimitError(Caffe2TorchError):
    """A model file asks for more memory than the configured limit (see caffe2torch.limits)."""


class RunError(Caffe2TorchError):
    """Running a net failed: memory ran out, or a layer refused what it was given."""
