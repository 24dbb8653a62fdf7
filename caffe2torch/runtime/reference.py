"""Run a Caffe net in OpenCV's ``dnn`` module: a Caffe runtime written independently of ours, to check
conversions against, blob by blob.

OpenCV reads the prototxt and the caffemodel with its own parser and computes every layer with its own
kernels, so an agreement is evidence, not a tautology.  What it takes to make OpenCV compute what Caffe
computes (OpenCV 4.x; the 5.x series dropped the Caffe importer):

* **Axpy.**  OpenCV's importer rewrites the SENet release's ``Axpy`` layer into a Scale and an Eltwise
  that compute ``a * bottom[2] + bottom[1]`` instead of the release's ``a * bottom[1] + bottom[2]``
  (``axpy_layer.cpp``), and it does so before looking at layers registered with ``cv2.dnn_registerLayer``,
  so registering a correct ``Axpy`` changes nothing.  We hand OpenCV the Axpy layers under the type name
  :data:`AXPY_TYPE`, backed by a Python layer computing ``a * x + y`` in float32 (registered only while
  our call runs).  It is exact: one float32 multiply and one add per element, as Caffe and torch do, and
  it works for any batch size.
* **Fusion.**  With fusion on, OpenCV folds BatchNorm, Scale and activations into the preceding
  convolution.  Asking for the output of a folded layer then returns garbage (the BatchNorm output of a
  fused conv + BatchNorm comes back as NaN), and the net computes with folded weights, not layer by layer
  as Caffe does.  We turn fusion off (``enableFusion(False)``): every layer runs on its own and each
  layer's output can be read.
* **Winograd.**  OpenCV's 3x3 convolutions use Winograd by default, whose transforms add rounding of their
  own (8e-4 on SENet-154's logits with the golden tests' weights, twice the whole difference between us
  and OpenCV without it); we turn it off (``enableWinograd(False)``) and use the plain OpenCV CPU backend.
* **Names.**  OpenCV names each output after the layer that made it, except a Convolution's, which it
  names after the convolution's top blob (so ``conv`` with top ``x`` can only be asked for as ``x``).
  The net is handed over with every blob written once and each layer's first top named after the layer
  (see :mod:`caffe2torch.converter.deploy`): both namings then agree, and no output is computed in place
  over another.  Only a layer's first output can be read reliably: ``forward`` can ask for no other, and
  the others of ``forwardAndRetrieve`` are not protected from layers that later reuse their memory.
* **Deploy form.**  OpenCV runs only deploy nets, so the net is handed over in the deploy form the
  converter makes (:class:`caffe2torch.converter.deploy.DeployForm`): the TEST phase as the converter sees
  it, excluded and training-only layers dropped, data layers replaced by an ``Input`` layer of the given
  arrays' shapes.
* **Weights.**  OpenCV reads binary caffemodels (current or legacy V1 form) itself; HDF5 weights or
  weights given as arrays are first written to a temporary binary caffemodel.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caffe2torch.errors import ConversionError, InputError

if TYPE_CHECKING:  # the converter imports torch, which the command line's option parsing must not pay for
    from caffe2torch.converter.deploy import DeployForm

# The type name OpenCV sees for the release's Axpy layers; see the module docstring for why.
AXPY_TYPE = "Caffe2TorchAxpy"
REFERENCES = ("opencv", "pycaffe")  # the runtimes this module can run a net in


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise InputError("the OpenCV reference needs OpenCV 4.x: pip install 'opencv-python-headless<5'") from None
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        raise InputError(f"OpenCV {cv2.__version__} has no Caffe importer (it was dropped in 5.x); "
                         "install 'opencv-python-headless<5'")
    return cv2


class OpenCVAxpy:
    """OpenCV Python layer computing the release's Axpy: ``a * x + y`` with bottoms (a, x, y), ``a`` of
    shape N x C (x 1 x 1) scaling each channel of ``x``."""

    def __init__(self, params: dict, blobs: list) -> None:
        del params, blobs  # Axpy has neither parameters nor blobs

    def getMemoryShapes(self, inputs: list[list[int]]) -> list[list[int]]:  # noqa: N802 (OpenCV's name)
        if len(inputs) != 3:
            raise ValueError(f"Axpy needs three bottoms (a, x, y), got {len(inputs)}")
        a, x, y = (list(shape) for shape in inputs)
        if x != y or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
            raise ValueError(f"Axpy bottoms do not fit: a {a}, x {x}, y {y}")
        return [x]

    def forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a, x, y = inputs
        return [a.reshape(a.shape[0], a.shape[1], *([1] * (x.ndim - 2))) * x + y]


@contextmanager
def _axpy_registered() -> Iterator[None]:
    """OpenCV's layer registry is process-wide: our Axpy is there only while a reference net runs."""
    cv2 = _cv2()
    cv2.dnn_registerLayer(AXPY_TYPE, OpenCVAxpy)
    try:
        yield
    finally:
        cv2.dnn_unregisterLayer(AXPY_TYPE)


def _input_arrays(names: Sequence[str], inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    if not isinstance(inputs, Mapping):
        if len(names) != 1:
            raise InputError(f"the net has {len(names)} inputs ({', '.join(names)}); give a dict of arrays")
        inputs = {names[0]: inputs}
    missing = [name for name in names if name not in inputs]
    if missing:
        raise InputError(f"no array given for the net input(s) {', '.join(missing)}")
    return {name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in names}


@contextmanager
def _binary_caffemodel(deploy: DeployForm, weights: Any) -> Iterator[str]:
    """A binary caffemodel path OpenCV can read: the file itself when it is one, else a temporary copy."""
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"{path}: no such weights file")
        from caffe2torch.caffe_proto.weights import is_hdf5, read_weights

        if not is_hdf5(path):
            yield str(path)
            return
        weights = read_weights(path)
    with tempfile.TemporaryDirectory(prefix="caffe2torch-reference-") as directory:
        path = Path(directory) / "weights.caffemodel"
        deploy.write_caffemodel(weights, path)
        yield str(path)


def opencv_forward(net: Any, caffemodel: Any, inputs: Mapping[str, np.ndarray] | np.ndarray,
                   outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """Run the net in OpenCV's dnn and return the requested blobs, each computed layer by layer.

    ``net``: a model converted by caffe2torch (its deploy form is run), or a prototxt path, a zoo name or a
    NetParameter.  ``caffemodel``: a binary or HDF5 weights path, or a mapping of layer name to blobs.
    ``inputs``: the array of the net's single input, or a dict per input blob (any batch size).
    ``outputs``: layer names (the layer's output) or blob names (the blob's last value), as for
    :func:`caffe2torch.load`.
    """
    cv2 = _cv2()
    deploy, arrays = _prepare(net, inputs)
    wanted = {name: deploy.output(name) for name in outputs}
    for name, where in wanted.items():
        if where.index != 0:
            raise InputError(f"{name!r} is output {where.index} of layer {where.layer!r}; OpenCV's dnn can read "
                             "only a layer's first output reliably")
    # A first top is named after its layer, which is the name OpenCV gives the layer's output.
    layer_outputs = sorted({where.blob for where in wanted.values() if where.layer is not None})
    text = deploy.prototxt({name: array.shape for name, array in arrays.items()}, layer_types={"Axpy": AXPY_TYPE})
    with tempfile.TemporaryDirectory(prefix="caffe2torch-reference-") as directory:
        prototxt_path = Path(directory) / "deploy.prototxt"
        prototxt_path.write_text(text, encoding="utf-8")
        with _binary_caffemodel(deploy, caffemodel) as model_path, _axpy_registered():
            try:
                cv_net = cv2.dnn.readNetFromCaffe(str(prototxt_path), model_path)
                cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
                cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
                cv_net.enableFusion(False)
                cv_net.enableWinograd(False)
                for name, array in arrays.items():
                    cv_net.setInput(array, name)
                results = cv_net.forward(layer_outputs) if layer_outputs else []
            except cv2.error as error:
                raise ConversionError(f"OpenCV's dnn cannot run the net: {_opencv_message(error)}") from None
    by_blob = {name: np.array(result, dtype=np.float32) for name, result in zip(layer_outputs, results)}
    by_blob.update((name, array.copy()) for name, array in arrays.items())
    return {name: by_blob[where.blob] for name, where in wanted.items()}


def pycaffe_forward(net: Any, caffemodel: Any, inputs: Mapping[str, np.ndarray] | np.ndarray,
                    outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """The same as :func:`opencv_forward`, computed by Caffe itself through pycaffe (``import caffe``).

    The deploy form writes every blob once, so after one forward pass each layer's output is still in its
    own blob.  SENet nets need a Caffe built with the release's Axpy layer.
    """
    caffe = _pycaffe()
    deploy, arrays = _prepare(net, inputs)
    wanted = {name: deploy.output(name) for name in outputs}
    text = deploy.prototxt({name: array.shape for name, array in arrays.items()})
    with tempfile.TemporaryDirectory(prefix="caffe2torch-reference-") as directory:
        prototxt_path = Path(directory) / "deploy.prototxt"
        prototxt_path.write_text(text, encoding="utf-8")
        with _binary_caffemodel(deploy, caffemodel) as model_path:
            caffe.set_mode_cpu()
            caffe_net = caffe.Net(str(prototxt_path), model_path, caffe.TEST)
            for name, array in arrays.items():
                caffe_net.blobs[name].reshape(*array.shape)
                caffe_net.blobs[name].data[...] = array
            caffe_net.reshape()
            caffe_net.forward()
            return {name: np.array(caffe_net.blobs[where.blob].data, dtype=np.float32)
                    for name, where in wanted.items()}


def runtime(name: str) -> Any:
    """The forward function of reference runtime ``name`` (one of :data:`REFERENCES`), checked to be
    installed."""
    if name == "opencv":
        _cv2()
        return opencv_forward
    if name == "pycaffe":
        _pycaffe()
        return pycaffe_forward
    raise InputError(f"unknown reference runtime {name!r}; choose one of {', '.join(REFERENCES)}")


def _pycaffe() -> Any:
    try:
        import caffe
    except ImportError as error:
        raise InputError(f"the pycaffe reference needs Caffe's Python module, which cannot be imported "
                         f"({error}); install Caffe with its Python bindings or use --reference opencv") from None
    return caffe


def _prepare(net: Any, inputs: Mapping[str, np.ndarray] | np.ndarray) -> tuple[DeployForm, dict[str, np.ndarray]]:
    """The net's deploy form and the inputs as float32 by input name.  A converted model brings its deploy
    form; a net description is given one for the inputs' shapes (a data layer's come only from them)."""
    from caffe2torch.converter.deploy import DeployForm, deploy_form
    from caffe2torch.nets import open_net

    deploy = getattr(net, "deploy", None)
    if not isinstance(deploy, DeployForm):
        shapes = ({name: np.shape(array) for name, array in inputs.items()} if isinstance(inputs, Mapping)
                  else np.shape(inputs))
        deploy = deploy_form(open_net(net).net, shapes)
    return deploy, _input_arrays(deploy.input_names, inputs)


def _opencv_message(error: Exception) -> str:
    """OpenCV's one useful line: the text after 'error: (-code:Kind)'."""
    text = " ".join(str(error).split())
    marker = text.find(") ", text.find("error: ("))
    return text[marker + 2:] if marker >= 0 and "error: (" in text else text
