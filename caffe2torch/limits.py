"""How much memory a model file may make us allocate, checked before allocating.

A few bytes of prototxt can declare a convolution of terabytes, and a small HDF5 file a dataset of
gigabytes. Every allocation whose size comes from a file is charged to the current budget first; an
allocation that does not fit is a :class:`ResourceLimitError` naming what asked for it, never an
out-of-memory kill. The limit is generous by default (8 GiB) and raised with ``--max-memory`` on the
command line, the ``CAFFE2TORCH_MAX_MEMORY`` environment variable, or :func:`memory_budget` in Python.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from caffe2torch.errors import ResourceLimitError

DEFAULT_MEMORY_LIMIT = 8 * 2**30
MEMORY_LIMIT_VARIABLE = "CAFFE2TORCH_MAX_MEMORY"
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5g"`` or a byte count -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 8G, 512M or 1073741824")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(nbytes: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def default_memory_limit() -> int:
    """``CAFFE2TORCH_MAX_MEMORY`` when set, else 8 GiB."""
    value = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if not value:
        return DEFAULT_MEMORY_LIMIT
    try:
        return parse_size(value)
    except ValueError as error:
        raise ResourceLimitError(f"{MEMORY_LIMIT_VARIABLE}: {error}") from None


class MemoryBudget:
    """Bytes that may still be allocated for one load (weights read, parameters initialised)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Account for ``nbytes`` about to be allocated for ``what``; refuse what does not fit."""
        if nbytes < 0 or self.used + nbytes > self.limit:
            raise ResourceLimitError(
                f"{what} would need {format_size(max(nbytes, 0))}"
                + (f" on top of {format_size(self.used)} already allocated" if self.used else "")
                + f", more than the memory limit of {format_size(self.limit)} (raise it with --max-memory "
                f"or {MEMORY_LIMIT_VARIABLE} if the model really is this large)"
            )
        self.used += nbytes


_current: ContextVar[MemoryBudget | None] = ContextVar("caffe2torch_memory_budget", default=None)


@contextmanager
def memory_budget(limit: int | None = None) -> Iterator[MemoryBudget]:
    """One budget for everything charged inside; nested calls without ``limit`` share the outer one."""
    outer = _current.get()
    if outer is not None and limit is None:
        yield outer
        return
    budget = MemoryBudget(default_memory_limit() if limit is None else limit)
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


def charge(nbytes: int, what: str) -> None:
    """Charge ``nbytes`` to the current budget (outside any, check it alone against the limit)."""
    budget = _current.get()
    if budget is None:
        budget = MemoryBudget(default_memory_limit())
    budget.charge(nbytes, what)
