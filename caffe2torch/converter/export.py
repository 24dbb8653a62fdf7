"""Export a converted net as files that stand alone: ``model.py`` (its code, importing only torch, and
safetensors to load), ``model.safetensors`` (its weights: plain tensors, no pickle), ``model.onnx`` (opset 18,
dynamic batch) and ``meta.json`` (inputs, outputs, preprocessing). All are written as one set (see
caffe2torch.files.write_file_set)."""

from __future__ import annotations

import json
import os
import warnings
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from caffe2torch.converter.build import CaffeNet
from caffe2torch.converter.standalone import ModelDefinitions, check_model_code
from caffe2torch.errors import InputError
from caffe2torch.files import check_output_directory, write_file_set

MODEL_FILE, WEIGHTS_FILE, META_FILE, ONNX_FILE, TIMM_FILE = (
    "model.py", "model.safetensors", "meta.json", "model.onnx", "timm.safetensors")
# pytorch: model.py + model.safetensors; onnx: model.onnx; timm: timm.safetensors (see caffe2torch.to_timm).
FORMATS = ("pytorch", "onnx", "timm")
ONNX_OPSET = 18
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The top-level names generate_code writes besides the copied definitions.
_MODEL_NAMES = ("annotations", "Net", "load", "NET_NAME", "CAFFE_NAMES", "INPUTS", "INPUT_SHAPES")


def _literal(value: Any) -> str:
    """``value`` as Python source that evaluates back to an equal value with only builtins in scope.

    Only plain data is written: None, bool, int, float, str, and tuples, lists and dicts of them.
    Non-finite floats become ``float("nan")`` / ``float("inf")``, which ``repr`` writes as bare names;
    anything else (a numpy scalar, an object) raises TypeError: its ``repr`` is not a known literal.
    """
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return repr(value)
    if kind is float:
        text = repr(value)
        return {"nan": 'float("nan")', "inf": 'float("inf")', "-inf": '-float("inf")'}.get(text, text)
    if kind is tuple:
        items = [_literal(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if kind is list:
        return f"[{', '.join(_literal(item) for item in value)}]"
    if kind is dict:
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{value!r} (a {kind.__name__}) is not plain data")


def _constructor(module: nn.Module, layer_name: str, definitions: ModelDefinitions) -> str:
    """The code that rebuilds ``module``: its class and its recorded constructor arguments."""
    cls = type(module)
    kwargs = getattr(module, "_init_kwargs", None)
    if kwargs is None:
        raise InputError(f"cannot export module of type {cls.__name__}: it was not built with "
                         f"converter.layers.common.make")
    args = []
    for key, value in kwargs.items():
        try:
            args.append(f"{key}={_literal(value)}")
        except TypeError as error:
            raise InputError(f"cannot export layer {layer_name!r}: argument {key!r} of its {cls.__name__} "
                             f"cannot be written as code: {error}") from None
    return f"{definitions.reference(cls, layer_name)}({', '.join(args)})"


def generate_code(model: CaffeNet) -> str:
    """Python source of a standalone ``Net`` equal to ``model``, checked by building it (see check_model_code):
    an InputError names what cannot be exported instead of a model.py that fails when imported."""
    code = _model_code(model)
    check_model_code(code, model)
    return code


def _model_code(model: CaffeNet) -> str:
    definitions = ModelDefinitions(reserved=_MODEL_NAMES)
    lines = []
    for ident, module in model.named_children():
        if not _IDENTIFIER.match(ident):
            raise AssertionError(f"unsafe module name {ident!r}")
        constructor = _constructor(module, model.caffe_names.get(ident, ident), definitions)
        lines.append(f"        self.{ident} = {constructor}")
    imports = definitions.header(required=("import torch", "from torch import nn"))  # class Net needs them
    forward = model.code.strip("\n")
    forward = "\n".join("    " + line if line else line for line in forward.splitlines())
    names = "\n".join(f"    {ident!r}: {name!r}," for ident, name in model.caffe_names.items())
    return "\n".join([
        '"""A Caffe net converted by caffe2torch (NET_NAME below). Needs torch, and safetensors to load',
        "the weights (plus any module imported below for a user's own layer).",
        "",
        f"    net = load({WEIGHTS_FILE!r})  # weights next to this file",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *imports,
        "",
        "",
        *[d + "\n\n" for d in definitions.blocks()],
        f"NET_NAME = {model.net_name!r}",
        "# Python name of each submodule -> the Caffe layer it came from",
        f"CAFFE_NAMES = {{\n{names}\n}}",
        f"INPUTS = {model.input_names!r}",
        f"INPUT_SHAPES = {[list(s) for s in model.input_shapes]!r}",
        "",
        "",
        "class Net(nn.Module):",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        *lines,
        "",
        forward,
        "",
        "",
        f"def load(weights: str = {WEIGHTS_FILE!r}, device: str = 'cpu') -> Net:",
        '    """The net with its weights (safetensors: no pickle), in eval mode; a relative path is taken next',
        '    to this file."""',
        "    import os",
        "",
        "    from safetensors.torch import load_file",
        "",
        "    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), weights)",
        "    net = Net()",
        "    net.load_state_dict(load_file(path, device=device))",
        "    return net.to(device).eval()",
        "",
    ])


# What a previous export may have left in its directory, which force=True replaces: its files (this
# version's and the weights.pt of earlier ones), and the __pycache__ that importing model.py there creates.
PREVIOUS_OUTPUT = (MODEL_FILE, WEIGHTS_FILE, META_FILE, ONNX_FILE, TIMM_FILE, "weights.pt", "__pycache__")


def export(model: CaffeNet, directory: str | os.PathLike, *, formats: Sequence[str] = ("pytorch",),
           meta: dict[str, Any] | None = None, force: bool = False) -> dict[str, Path]:
    """Write ``model`` in ``formats`` (see FORMATS) and meta.json into ``directory`` as one set, so that an
    interrupted export never leaves a partial or mixed set.  ``directory`` must be new or empty; ``force``
    replaces a previous export, never a directory holding other files (see caffe2torch.files)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}")
    check_output_directory(directory, PREVIOUS_OUTPUT, force=force)  # before the work of writing
    info = {
        "net": model.net_name,
        "inputs": [{"name": n, "shape": list(s)} for n, s in zip(model.input_names, model.input_shapes)],
        "outputs": [{"name": n, "shape": list(s)} for n, s in model.output_shapes.items()],
        "notes": model.notes,
        **(meta or {}),
    }
    writers: dict[str, Callable[[Path], None]] = {}
    if "pytorch" in formats:
        code = generate_code(model)
        state = state_for_safetensors(model.state_dict())
        writers[MODEL_FILE] = lambda path: path.write_text(code, encoding="utf-8")
        writers[WEIGHTS_FILE] = lambda path: _save_safetensors(state, path)
    if "onnx" in formats:
        writers[ONNX_FILE] = lambda path: export_onnx(model, path)
    if "timm" in formats:
        from caffe2torch.to_timm import timm_state_dict

        timm_name, timm_state = timm_state_dict(model)
        info["timm"] = {"model": timm_name, "file": TIMM_FILE,
                        "load": f"timm.create_model({timm_name!r}).load_state_dict("
                                f"safetensors.torch.load_file({TIMM_FILE!r}), strict=True)"}
        writers[TIMM_FILE] = lambda path: _save_safetensors(timm_state, path)
    info["files"] = sorted([*writers, META_FILE])
    writers[META_FILE] = lambda path: path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return write_file_set(directory, writers, force=force, replaceable=PREVIOUS_OUTPUT)


def state_for_safetensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous tensors that share no storage (safetensors refuses shared ones)."""
    seen: set[int] = set()
    prepared = {}
    for key, tensor in state.items():
        tensor = tensor.detach().contiguous()
        if tensor.numel() and tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()
        if tensor.numel():
            seen.add(tensor.untyped_storage().data_ptr())
        prepared[key] = tensor
    return prepared


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "pt"})  # one key: the header is then byte-reproducible


def export_onnx(model: CaffeNet, path: str | os.PathLike) -> None:
    """``model`` as ONNX (opset 18) with a dynamic batch axis and the prototxt's input and output names,
    checked by onnx.checker. Needs the ``onnx`` extra: ``pip install caffe2torch[onnx]``."""
    try:
        import onnx
    except ImportError:
        raise InputError("ONNX export needs the onnx package: pip install 'caffe2torch[onnx]'") from None
    example = tuple(torch.zeros((2, *shape[1:])) for shape in model.input_shapes)
    outputs = list(model.output_shapes)
    names = [*model.input_names, *outputs]
    if len(set(names)) != len(names):
        raise InputError(f"cannot name the ONNX graph's inputs and outputs after the net's blobs: "
                         f"{', '.join(map(repr, names))} repeat a name")
    try:
        # The TorchScript-based exporter: seconds where torch.export's takes half a minute, same graph here.
        # Its tracer warns about every Python shape computation; they are constants for a fixed image size.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(path), opset_version=ONNX_OPSET,
                              input_names=model.input_names, output_names=outputs,
                              dynamic_axes={name: {0: "batch"} for name in names}, dynamo=False)
        onnx.checker.check_model(str(path), full_check=True)
    except InputError:
        raise
    except Exception as error:  # the exporters' own messages say which operation failed
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"cannot export {model.net_name or 'the net'!r} to ONNX: {reason}") from error
