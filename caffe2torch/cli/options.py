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


def _load_plugins(ctx: click.Context, param: click.Parameter, plugins: tuple[str, ...]) -> None:
    """Import each plugin as its option is parsed, so that the command itself needs no parameter for it."""
    if plugins:
        from caffe2torch.converter.registry import load_plugin  # imports torch: only when asked for

        for plugin in plugins:
            load_plugin(plugin)


def _use_caffe_proto(ctx: click.Context, param: click.Parameter, path: str | None) -> None:
    """Read every net of this command with the fork's schema: active from when the option is parsed (as
    plugins are imported) until the command ends."""
    if path is not None:
        from caffe2torch.caffe_proto.schema import using_schema

        ctx.with_resource(using_schema(path))


_plugins = click.option(
    "--plugin", "plugins", multiple=True, metavar="FILE.py|MODULE", expose_value=False, callback=_load_plugins,
    help="Python file or module to import first: its @caffe2torch.converter.register functions convert custom "
         "layer types (repeatable).")
_caffe_proto = click.option(
    "--caffe-proto", type=click.Path(exists=True, dir_okay=False), expose_value=False, callback=_use_caffe_proto,
    help="The Caffe fork's own caffe.proto (or a protoc descriptor set): its layers' fields are read typed.")


exact_option = click.option(
    "--exact", is_flag=True,
    help="Run the faithful graph, one op per Caffe layer, instead of the optimized one (BatchNorm and Scale "
         "folded into convolutions, fused ops: the same function, rounded differently).")


def plugin_option(command):  # type: ignore[no-untyped-def]
    """The options of every command that reads a net: --plugin (converters of custom layer types) and
    --caffe-proto (the fork schema their fields are read with)."""
    return _plugins(_caffe_proto(command))

