"""``caffe2torch compare``: option parsing for :func:`caffe2torch.runtime.compare.compare_layers`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from caffe2torch.cli.options import parse_shape, plugin_option
from caffe2torch.errors import InputError
from caffe2torch.runtime.compare import DEFAULT_TOLERANCE
from caffe2torch.runtime.reference import REFERENCES


@click.command()
@click.argument("prototxt")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--input", "image", type=click.Path(dir_okay=False),
              help="Image to run, preprocessed with the preset (default: a seeded random input).")
@click.option("--reference", type=click.Choice(REFERENCES), default="opencv", show_default=True,
              help="The Caffe runtime to compare against: OpenCV's dnn, or Caffe itself through pycaffe.")
@click.option("--tolerance", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TOLERANCE,
              show_default=True, help="Largest difference allowed, relative to each output's largest magnitude.")
@click.option("--preset", "preset_name", help="Preprocessing preset for --input (default: the zoo model's).")
@click.option("--input-shape", callback=parse_shape, help="Input shape such as 1,3,224,224 (overrides the net's).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random input.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the comparison as JSON.")
@click.option("--force", is_flag=True, help="Overwrite an existing --json file.")
@plugin_option
def compare(prototxt: str, weights: str, image: str | None, reference: str, tolerance: float,
            preset_name: str | None, input_shape: tuple[int, ...] | None, seed: int, json_path: str | None,
            force: bool) -> None:
    """Compare PROTOTXT with WEIGHTS, converted by us, against a reference Caffe runtime, layer by layer.

    Prints every layer's largest absolute and relative difference and names the first layer whose output
    diverges beyond the tolerance.  Exits with status 1 when a layer diverges.
    """
    from caffe2torch.runtime import compare as comparing

    if json_path is not None and Path(json_path).exists() and not force:
        raise InputError(f"{json_path}: already exists (use --force to overwrite)")  # before minutes of work
    result = comparing.compare_layers(prototxt, weights, image=image, reference=reference, tolerance=tolerance,
                                      preset_name=preset_name, input_shape=input_shape, seed=seed)
    if json_path is not None:
        comparing.write_report(result, json_path, force=force)
    for line in comparing.format_table(result):
        click.echo(line)
    if json_path is not None:
        click.echo(f"wrote {json_path}")
    if result.first_divergence is not None:
        sys.exit(1)
