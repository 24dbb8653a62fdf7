"""``caffe2torch zoo``: the built-in SENet release nets."""

from __future__ import annotations

import json

import click

from caffe2torch import zoo as model_zoo


@click.group()
def zoo() -> None:
    """The seven SENet release nets, built in: list them, or export one as a prototxt.

    A zoo name (e.g. se_resnext50) works wherever a PROTOTXT is accepted.
    """


@zoo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects instead of a table.")
def list_models(as_json: bool) -> None:
    """List the zoo: layers, learnable parameters, multiply-accumulates and published top-1/top-5 error (%)."""
    rows = [
        {
            "name": entry.name,
            "title": entry.title,
            "layers": len(entry.build().layer),
            "parameters": entry.parameters,
            "macs": entry.macs,
            "top1_error": entry.top1_error,
            "top5_error": entry.top5_error,
        }
        for entry in model_zoo.MODELS.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<16}{'title':<26}{'layers':>7}{'params':>10}{'MACs':>9}{'top-1':>8}{'top-5':>7}")
    for row in rows:
        click.echo(f"{row['name']:<16}{row['title']:<26}{row['layers']:>7}{row['parameters'] / 1e6:>9.2f}M"
                   f"{row['macs'] / 1e9:>8.2f}G{row['top1_error']:>8.2f}{row['top5_error']:>7.2f}")


@zoo.command()
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Prototxt file to write.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def export(name: str, output: str, force: bool) -> None:
    """Write zoo model NAME as a deploy prototxt (text format), equal to the release file."""
    path = model_zoo.export_prototxt(name, output, force=force)
    click.echo(f"wrote {path}")
