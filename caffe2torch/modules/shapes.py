"""Checks shared by the modules' ``output_shapes`` rules: each module states its output shapes from its input
shapes and its parameters, as Caffe's ``Reshape()`` does, in plain integers (no tensor is made), and says
what is wrong with shapes it cannot take as a ValueError."""

from __future__ import annotations


def axis_index(axis: int, ndim: int, what: str = "axis") -> int:
    """``axis`` counted from 0 (Caffe's CanonicalAxisIndex: a negative axis counts from the end)."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def check_channels(shape: tuple[int, ...], channels: int | None, axis: int = 1) -> tuple[int, ...]:
    """``shape`` as a tuple, checked to have an ``axis`` and, unless ``channels`` is None, that many
    values along it (a learned value per channel broadcast against the input)."""
    shape = tuple(shape)
    if len(shape) <= axis:
        raise ValueError(f"needs at least {axis + 1} axes (N x C ...), got shape {list(shape)}")
    if channels is not None and shape[axis] != channels:
        raise ValueError(f"the input has {shape[axis]} channels at axis {axis}, the layer {channels}")
    return shape


def check_same_shapes(input_shapes: list[tuple[int, ...]], what: str = "inputs") -> tuple[int, ...]:
    """The one shape every input has (element-wise layers take no broadcasting)."""
    first = tuple(input_shapes[0])
    if any(tuple(shape) != first for shape in input_shapes[1:]):
        raise ValueError(f"{what} have different shapes: {[list(shape) for shape in input_shapes]}")
    return first
