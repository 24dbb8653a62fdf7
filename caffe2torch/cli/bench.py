"""``caffe2torch bench``: option parsing for :func:`caffe2torch.runtime.bench.bench`."""

from __future__ import annotations

from pathlib import Path

import click

from caffe2torch.cli.options import exact_option, plugin_option
from caffe2torch.errors import InputError
from caffe2torch.runtime import PRECISIONS


@click.command()
@click.argument("prototxt")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Caffe weights (default: random weights; speed does not depend on them).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--device", help="cpu, cuda, cuda:N or mps (default: cuda, then mps, then cpu).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="fp32 is exact (TF32 off); bf16/fp16 use autocast.")
@click.option("--iterations", default=50, show_default=True, type=click.IntRange(min=1), help="Timed batches.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="Untimed batches first.")
@click.option("--compile", "compile_model", is_flag=True, help="Run through torch.compile.")
@click.option("--channels-last", is_flag=True, help="Run in channels-last memory format.")
@exact_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@click.option("--force", is_flag=True, help="Overwrite an existing --json file.")
@plugin_option
def bench(prototxt: str, weights: str | None, batch_size: int, device: str | None, precision: str,
          iterations: int, warmup: int, compile_model: bool, channels_last: bool, exact: bool,
          json_path: str | None, force: bool) -> None:
    """Measure images/s and per-batch latency (p50/p90/p99) of PROTOTXT after a warm-up."""
    if json_path is not None and Path(json_path).exists() and not force:
        raise InputError(f"{json_path}: already exists (use --force to overwrite)")
    from caffe2torch.cli import reuse_freed_memory
    from caffe2torch.runtime.bench import bench as run_bench
    from caffe2torch.runtime.device import Inference, choose_device
    from caffe2torch.files import write_json
    from caffe2torch.runtime.session import open_session

    reuse_freed_memory()
    inference = Inference(choose_device(device), precision, channels_last=channels_last, compile=compile_model)
    session = open_session(prototxt, weights, inference, random_init=weights is None, exact=exact)
    result = run_bench(session.runnable, session.input_shapes, inference, batch_size=batch_size,
                       iterations=iterations, warmup=warmup, graph="exact" if exact else "optimized")
    click.echo(result.report())
    if json_path is not None:
        write_json(json_path, result.as_dict(), force=force)
