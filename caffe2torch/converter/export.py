"""Export a converted net as files: standalone ``model.py`` (imports only torch), ``weights.pt`` (a state
dict that loads with ``weights_only=True``) and ``meta.json`` (inputs, outputs, preprocessing hints)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from caffe2torch.converter.build import CaffeNet
from caffe2torch.converter.standalone import ModelDefinitions, check_model_code
from caffe2torch.errors import InputError
from caffe2torch.files import check_output_directory, write_file_set

MODEL_FILE, WEIGHTS_FILE, META_FILE = "model.py", "weights.pt", "meta.json"
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
        '"""A Caffe net converted by caffe2torch (NET_NAME below). Needs only torch.',
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
        f"def load(weights: str = {WEIGHTS_FILE!r}, map_location: str = 'cpu') -> Net:",
        '    """The net with its weights, in eval mode; a relative path is taken next to this file."""',
        "    import os",
        "",
        "    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), weights)",
        "    net = Net()",
        "    net.load_state_dict(torch.load(path, map_location=map_location, weights_only=True))",
        "    return net.eval()",
        "",
    ])


# What a previous export may have left in its directory, which force=True replaces: its files, and the
# __pycache__ that importing model.py from there creates.
_PREVIOUS_OUTPUT = (MODEL_FILE, WEIGHTS_FILE, META_FILE, "__pycache__")


def export(model: CaffeNet, directory: str | os.PathLike, *, meta: dict[str, Any] | None = None,
           force: bool = False) -> dict[str, Path]:
    """Write model.py, weights.pt and meta.json into ``directory`` as one set, so that an interrupted export
    never leaves a partial or mixed set.  ``directory`` must be new or empty; ``force`` replaces a previous
    export, never a directory holding other files (see caffe2torch.files.write_file_set)."""
    check_output_directory(directory, _PREVIOUS_OUTPUT, force=force)  # before the work of writing
    code = generate_code(model)
    info = {
        "net": model.net_name,
        "inputs": [{"name": n, "shape": list(s)} for n, s in zip(model.input_names, model.input_shapes)],
        "outputs": [{"name": n, "shape": list(s)} for n, s in model.output_shapes.items()],
        "notes": model.notes,
        **(meta or {}),
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    writers = {
        MODEL_FILE: lambda path: path.write_text(code, encoding="utf-8"),
        WEIGHTS_FILE: lambda path: torch.save(state, path),
        META_FILE: lambda path: path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8"),
    }
    return write_file_set(directory, writers, force=force, replaceable=_PREVIOUS_OUTPUT)
