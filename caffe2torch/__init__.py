"""caffe2torch: read Caffe models, convert them to PyTorch, and verify that nothing changed on the way."""

import contextlib
import gc
from collections.abc import Iterator

from caffe2torch.errors import (
    Caffe2TorchError,
    CaffeFormatError,
    ConversionError,
    InputError,
    ResourceLimitError,
    RunError,
)

__version__ = "0.1.0"
__all__ = ["load", "optimize", "export", "__version__", "Caffe2TorchError", "CaffeFormatError", "ConversionError",
           "InputError", "ResourceLimitError", "RunError"]


def load(prototxt, weights=None, *, outputs=None, input_shape=None, random_init=False, caffe_proto=None):
    """Convert a Caffe net (a prototxt path, a zoo name or a NetParameter) to a ``torch.fx.GraphModule``.

    ``weights`` is a ``.caffemodel`` / ``.caffemodel.h5`` path or a mapping of layer name to blobs; without
    weights the architecture is converted with deterministic random initialisation.  ``outputs`` names
    layers (their output) or blobs (their last value) to return as a dict instead of the net's output.
    ``caffe_proto`` is a Caffe fork's own caffe.proto (or protoc descriptor set): the prototxt is read with
    it, and converters read its layers' fork fields typed (``LayerContext.param``).
    The model records where the net came from: ``zoo_model`` (the zoo model it is, or None) with that
    model's ``preset`` and ``label_order``, and ``preprocessing_hints`` from the prototxt's comments.
    Imported lazily so that ``import caffe2torch`` stays cheap for the CLI.
    """
    from caffe2torch.caffe_proto.schema import using_schema
    from caffe2torch.converter import convert
    from caffe2torch.nets import open_net

    with using_schema(caffe_proto), _collector_paused():
        opened = open_net(prototxt)
        model = convert(opened.net, weights, outputs=outputs, input_shape=input_shape, random_init=random_init)
    entry = opened.zoo_entry
    model.zoo_model = opened.zoo_model
    model.preset = entry.preset if entry is not None else None
    model.label_order = entry.label_order if entry is not None else None
    model.preprocessing_hints = opened.preprocessing_hints
    return model


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a net loads: a load makes tens of thousands of objects
    (messages, modules, graph nodes), none of them garbage yet, and the collections they trigger scan them all
    again and again: a sixth of SENet-154's load.  Whatever the load leaves behind is collected afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def optimize(model, *, channels_last=None):
    """An inference graph computing what ``model`` (from :func:`load`) computes, fast on the CPU.

    BatchNorm, Scale and Bias are folded into the preceding Convolution / InnerProduct / Deconvolution (or
    into one per-channel affine op), ReLUs fused into convolutions or run in place where nothing else reads
    their input, Axpy is one ``addcmul``, Dropout and Split are removed, and 2-D convolutions run on NHWC
    tensors with weights reordered for oneDNN once (``channels_last``; None: the measured default).  Each
    node records the Caffe layers it computes (``node.meta["caffe_layers"]``).  ``model`` keeps every blob
    available and is not changed; see :mod:`caffe2torch.optimize`.
    """
    from caffe2torch.optimize import optimize as optimize_graph

    return optimize_graph(model, channels_last=channels_last)


def export(model, directory, *, formats=("pytorch",), convention="caffe", preset=None, label_order=None,
           meta=None, force=False):
    """Write a converted ``model`` into ``directory`` as files that stand alone; returns their paths.

    ``formats``: ``pytorch`` (model.py + model.safetensors), ``onnx`` (model.onnx), ``timm``
    (timm.safetensors for timm's port of a release net). ``convention``: ``caffe`` (as the Caffe net runs)
    or ``torchvision`` (RGB in [0, 1] normalised by the ImageNet mean/std, classes in sorted-synset order),
    derived from the net's ``preset`` and ``label_order`` (a zoo model's by default). meta.json records
    the convention and the preprocessing a user must apply. A previous export is replaced only with
    ``force``; the set is written all or nothing.
    """
    from caffe2torch.conventions import apply_convention
    from caffe2torch.converter.export import export as write_files

    converted, convention_meta = apply_convention(model, convention, preset=preset, label_order=label_order)
    return write_files(converted, directory, formats=formats, meta={**(meta or {}), **convention_meta},
                       force=force)
