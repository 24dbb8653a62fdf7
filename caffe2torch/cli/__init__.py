"""The ``caffe2torch`` command: option parsing only; every command calls the library.

Commands live one per module in this package and are imported when used, so ``caffe2torch --version``
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import click

from caffe2torch import __version__, limits
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


def _memory_limit(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            limits.parse_size(value)
        except ValueError as error:
            raise click.BadParameter(str(error), ctx=ctx, param=param) from None
    return value


@contextmanager
def _environment_variable(name: str, value: str) -> Iterator[None]:
    """Set for the command (worker processes inherit it), restored after (for in-process callers)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def _plain_format_warnings() -> Iterator[None]:
    """Show each CaffeFormatWarning once, as ``warning: <message>`` on stderr, without Python's source line.

    They tell the user about their model file (fields of a Caffe fork, dropped V0 fields), not about
    our code. Other warnings keep Python's format.
    """
    show_original = warnings.showwarning
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        # The module defining the category is loaded by whoever warned with it; no import here.
        upgrade = sys.modules.get("caffe2torch.caffe_proto.upgrade")
        if upgrade is None or not issubclass(category, upgrade.CaffeFormatWarning):
            show_original(message, category, filename, lineno, file, line)
        elif str(message) not in shown:
            shown.add(str(message))
            click.echo(f"warning: {message}", err=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = show_original


@click.group(cls=_LazyGroup)
@click.version_option(__version__, prog_name="caffe2torch")
@click.option("--debug", is_flag=True, help="Show the full traceback of errors.")
@click.option("--max-memory", metavar="SIZE", callback=_memory_limit, help="Most memory a model file may make "
              f"the command allocate, e.g. 16G (default: ${limits.MEMORY_LIMIT_VARIABLE}, else "
              f"{limits.format_size(limits.DEFAULT_MEMORY_LIMIT)}).")
@click.pass_context
def main(ctx: click.Context, debug: bool, max_memory: str | None) -> None:
    """Convert Caffe models to PyTorch and verify that they compute the same thing."""
    ctx.ensure_object(dict)["debug"] = debug
    ctx.with_resource(_plain_format_warnings())
    if max_memory is not None:
        ctx.with_resource(_environment_variable(limits.MEMORY_LIMIT_VARIABLE, max_memory))


def run() -> None:
    """The console script and ``python -m caffe2torch.cli``: the command in a process of its own, which the
    commands that run nets may set up for speed (:func:`reuse_freed_memory`)."""
    main(obj={"own_process": True})


def reuse_freed_memory() -> None:
    """In a process of the command's own, make glibc keep freed memory for the next batch
    (:func:`caffe2torch.optimize.keep_freed_memory`): otherwise the kernel zeroes and faults in fresh pages for
    every large intermediate tensor of every batch, a third of SE-ResNeXt-50's time at batch 32 on 2 cores.
    The process keeps its peak memory, which a command that runs to its end can afford.  A caller's process
    (``CliRunner``, an application) keeps its allocator as it is."""
    context = click.get_current_context(silent=True)
    root = context.find_root() if context is not None else None
    if root is not None and isinstance(root.obj, dict) and root.obj.get("own_process"):
        from caffe2torch.optimize import keep_freed_memory

        keep_freed_memory()
