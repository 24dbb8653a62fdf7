"""Checks every call of a converter's module against its output-shape rule: the shapes the rule states for the
call's input shapes must be the shapes the module produced on real tensors.

``rule_problem`` is the check of one call.  As a pytest plugin (``-p shape_rule_audit``, with this folder on
PYTHONPATH) it checks every such call of the tests it runs, through a global forward hook, and writes what it
saw as JSON to the file named by $SHAPE_RULE_AUDIT: the number of calls checked per class and the problems.
tests/test_shape_rules.py runs the layer tests this way.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
from typing import Any, Iterator

import torch
from torch import nn

from caffe2torch.converter import shapes
from caffe2torch.modules.detection import DetectionOutput


def audited(module: nn.Module) -> bool:
    """A class of caffe2torch.modules, or a torch class the converters build (made by ``make``)."""
    cls = type(module)
    return cls.__module__.startswith(shapes.LIBRARY) or (cls in shapes.TORCH_RULES and hasattr(module, "_init_kwargs"))


def rule_problem(module: nn.Module, args: tuple[Any, ...], output: Any) -> str | None:
    """What is wrong with ``module``'s rule for this call (None: nothing, or not a call the rules cover)."""
    if not all(isinstance(a, torch.Tensor) for a in args) or any(a.is_meta for a in args):
        return None
    outputs = output if isinstance(output, tuple) else (output,)
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        return None
    input_shapes = [tuple(a.shape) for a in args]
    actual = [tuple(o.shape) for o in outputs]
    try:
        stated = shapes.output_shapes(module, input_shapes)
    except ValueError as error:
        return f"the rule refuses inputs {input_shapes} the module ran on (to {actual}): {error}"
    if isinstance(module, DetectionOutput):  # data-dependent rows: the rule states their upper bound
        (bound,), (rows,) = stated, actual
        if len(rows) != 4 or rows[:2] != bound[:2] or rows[3] != bound[3] or rows[2] > bound[2]:
            return f"inputs {input_shapes}: output {rows} is not within the stated bound {bound}"
        return None
    if stated != actual:
        return f"inputs {input_shapes}: the rule states {stated}, the module made {actual}"
    return None


class Audit:
    """Calls checked per class, and the problems found."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.where = ""

    def hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not audited(module):
            return
        name = type(module).__qualname__
        self.calls[name] += 1
        problem = rule_problem(module, args, output)
        if problem is not None:
            self.problems.append(f"{name} in {self.where}: {problem}")

    @contextlib.contextmanager
    def watching(self) -> Iterator["Audit"]:
        handle = nn.modules.module.register_module_forward_hook(self.hook)
        try:
            yield self
        finally:
            handle.remove()


# --- as a pytest plugin ---------------------------------------------------------------------------------------

_AUDIT = Audit()
_WATCHING: contextlib.ExitStack | None = None


def pytest_configure(config: Any) -> None:
    global _WATCHING
    _WATCHING = contextlib.ExitStack()
    _WATCHING.enter_context(_AUDIT.watching())


def pytest_runtest_setup(item: Any) -> None:
    _AUDIT.where = item.nodeid


def pytest_unconfigure(config: Any) -> None:
    if _WATCHING is not None:
        _WATCHING.close()
    target = os.environ.get("SHAPE_RULE_AUDIT")
    if target:
        with open(target, "w", encoding="utf-8") as report:
            json.dump({"calls": dict(_AUDIT.calls), "problems": _AUDIT.problems}, report, indent=1)
