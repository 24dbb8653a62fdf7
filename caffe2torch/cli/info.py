"""``caffe2torch info``: what a Caffe net holds."""

from __future__ import annotations

import json

import click

from caffe2torch.cli.options import plugin_option


@click.command()
@click.argument("model")
@click.option("--weights", "-w", type=click.Path(dir_okay=False), help="A .caffemodel or .caffemodel.h5 "
              "whose blob shapes to show (and to check against the net).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@plugin_option
def info(model: str, weights: str | None, as_json: bool) -> None:
    """Show MODEL's layers (a prototxt or a zoo name): types, bottoms -> tops, blob shapes, and totals:
    layers by type, learnable parameters, multiply-accumulates, and which zoo model it is."""
    from caffe2torch.converter import resolve_weights
    from caffe2torch.converter.summary import format_table, summarize
    from caffe2torch.nets import open_net

    opened = open_net(model)
    summary = summarize(opened.net, resolve_weights(weights), zoo_model=opened.zoo_model)
    click.echo(json.dumps(summary, indent=2) if as_json else format_table(summary))
