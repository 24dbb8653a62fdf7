"""The ``caffe2torch`` command: option parsing only; every command calls the library.

Commands live one per module in this package and are imported when used, so ``caffe2torch --version``
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys

import click

from caffe2torch import __version__
from caffe2torch.errors import Caffe2TorchError

# command name -> "module:attribute" inside caffe2torch.cli
COMMANDS = {
    "demo": "demo:demo",
    "info": "info:info",
    "convert": "convert:convert",
    "zoo": "zoo:zoo",
    "verify": "verify:verify",
    "predict": "predict:predict",
    "compare": "compare:compare",
    "bench": "bench:bench",
}


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use, and whose user errors print as one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return self._load(name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(f"caffe2torch.cli.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"caffe2torch.cli.{module_name}":
                return None  # command not part of this build
            raise
        return getattr(module, attribute)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Caffe2TorchError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {error}", err=True)
            sys.exit(2)
        except FileNotFoundError as error:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {error.filename or error}: no such file", err=True)
            sys.exit(2)


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="caffe2torch")
@click.option("--debug", is_flag=True, help="Show the full traceback of errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Convert Caffe models to PyTorch and verify that they compute the same thing."""
    ctx.obj = {"debug": debug}
