"""Option parsers shared by several commands."""

from __future__ import annotations

import click


def parse_shape(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """``1,3,224,224`` (or with x) -> (1, 3, 224, 224)."""
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a shape such as 1,3,224,224") from None
    if not shape or any(d <= 0 for d in shape):
        raise click.BadParameter(f"{value!r}: every dimension must be positive")
    return shape
