"""``caffe2torch demo``: the first minute with the tool."""

from __future__ import annotations

import click


@click.command()
@click.option("--model", "name", default="se_resnext50", show_default=True,
              help="Zoo model to demonstrate (see `caffe2torch zoo list`).")
@click.option("--device", help="cpu, cuda, cuda:N or mps (default: the best there is).")
def demo(name: str, device: str | None) -> None:
    """Build a SENet release net from code, write and read a real caffemodel, convert, run and export it.

    Needs no file from outside; takes well under a minute on a laptop CPU.
    """
    from caffe2torch.demo import run_demo

    run_demo(name, device, echo=click.echo)
