"""``caffe2torch verify``: option parsing for :func:`caffe2torch.runtime.verify.verify`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from caffe2torch.cli.options import exact_option, plugin_option
from caffe2torch.cli.preprocessing import preprocessing_options
from caffe2torch.errors import InputError
from caffe2torch.runtime import PRECISIONS
from caffe2torch.runtime.presets import INTERPOLATIONS, PRESETS


@click.command()
@click.argument("prototxt")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--images", required=True, type=click.Path(file_okay=False),
              help="Folder of the images (names as in --labels), or of <wnid>/ class folders.")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Label file, '<image> <label>' per line (e.g. ILSVRC2017_val.txt or Caffe's val.txt).")
@click.option("--model", "model_name", help="Zoo model whose published row, preset and class order apply "
              "(default: the zoo model the net is recognised as).")
@click.option("--preset", "preset_name", help=f"Preprocessing preset: {', '.join(sorted(PRESETS))} (default: "
              "the model's).  The options below override its fields.")
@preprocessing_options
@click.option("--interpolation", type=click.Choice(INTERPOLATIONS),
              help="Resize filter instead of the preset's (Caffe's is linear: cv::resize INTER_LINEAR).")
@click.option("--label-order", help="Class order of the label file: senet or synset (default: the net's own; "
              "synset for class folders).")
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--device", help="cpu, cuda, cuda:N or mps (default: cuda, then mps, then cpu).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="fp32 is exact (TF32 off); bf16/fp16 use autocast.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N images of the label file.")
@click.option("--skip-missing", is_flag=True, help="Evaluate the images of the label file that are in --images "
              "and report how many were not (default: a missing image is an error).")
@click.option("--workers", default=max(1, min(8, os.cpu_count() or 1)), show_default=True,
              type=click.IntRange(min=0), help="Threads decoding and preprocessing the next batches while the "
              "net runs (default: one per CPU, at most 8; 0: one after another in the main thread).")
@click.option("--output", help="Output blob holding the class scores, when the net has several.")
@click.option("--channels-last", is_flag=True, help="Run in channels-last memory format.")
@click.option("--compile", "compile_model", is_flag=True, help="Run through torch.compile.")
@exact_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@click.option("--force", is_flag=True, help="Overwrite an existing --json file.")
@click.option("--quiet", is_flag=True, help="No progress line.")
@plugin_option
def verify(prototxt: str, weights: str, images: str, labels: str | None, model_name: str | None,
           preset_name: str | None, interpolation: str | None, label_order: str | None, batch_size: int,
           device: str | None, precision: str, limit: int | None, skip_missing: bool, workers: int, output: str | None,
           channels_last: bool, compile_model: bool, exact: bool, json_path: str | None, force: bool, quiet: bool,
           **preprocessing: str | None) -> None:
    """Measure the top-1/top-5 error of PROTOTXT with WEIGHTS and compare it with the published result.

    Reproduced means: within 0.1 points of the published errors on the full 50,000 validation images,
    or, on fewer images (--limit), the published errors inside the 95% Wilson intervals of the
    measured ones.  Exit status: 0 reproduced, 1 not reproduced, 2 bad input.  A net that is neither
    named (--model) nor recognised needs its preprocessing (--preset, --transform-from, or the steps:
    --resize, --crop, --mean/--mean-file, --scale, --channel-order); its errors are reported without a
    comparison and the exit status is 0.  Under torchrun the images are split across the processes.
    """
    if json_path is not None and Path(json_path).exists() and not force:
        raise InputError(f"{json_path}: already exists (use --force to overwrite)")
    from caffe2torch.cli import reuse_freed_memory
    from caffe2torch.files import write_json
    from caffe2torch.runtime.verify import verify as run_verify

    reuse_freed_memory()
    result = run_verify(prototxt, weights, images, labels, model_name=model_name, preset_name=preset_name,
                        interpolation=interpolation, label_order=label_order, batch_size=batch_size,
                        device=device, precision=precision, limit=limit, skip_missing=skip_missing,
                        workers=workers, output=output, channels_last=channels_last, compile=compile_model,
                        exact=exact, progress=not quiet, **preprocessing)
    if result.is_main:
        click.echo(result.report())
        if json_path is not None:
            write_json(json_path, result.as_dict(), force=force)
    sys.exit(result.exit_code)
