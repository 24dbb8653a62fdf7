"""``caffe2torch predict``: option parsing for :func:`caffe2torch.runtime.predict.predict`."""

from __future__ import annotations

import click

from caffe2torch.cli.options import exact_option, plugin_option
from caffe2torch.cli.preprocessing import preprocessing_options
from caffe2torch.runtime import PRECISIONS
from caffe2torch.runtime.detection import DEFAULT_THRESHOLD, ImageDetections
from caffe2torch.runtime.presets import INTERPOLATIONS, PRESETS


@click.command()
@click.argument("prototxt")
@click.argument("weights", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1),
              help="Classes shown per image (a classifier).")
@click.option("--labels", "class_names", type=click.Path(dir_okay=False),
              help="Class names, one per line ('<wnid> <name>' as in synset_words.txt, or just a name).")
@click.option("--label-order", help="Class order of --labels (default: synset for a file of sorted wnids, "
              "else the net's own).")
@click.option("--model", "model_name", help="Zoo model whose preset and class order apply (default: the zoo "
              "model the net is recognised as).")
@click.option("--preset", "preset_name", help=f"Preprocessing preset: {', '.join(sorted(PRESETS))} (default: "
              "the model's).  The options below override its fields.")
@preprocessing_options
@click.option("--interpolation", type=click.Choice(INTERPOLATIONS),
              help="Resize filter instead of the preset's (Caffe's is linear: cv::resize INTER_LINEAR).")
@click.option("--device", help="cpu, cuda, cuda:N or mps (default: cuda, then mps, then cpu).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@click.option("--output", help="Output blob holding the class scores (or detections), when the net has several.")
@click.option("--threshold", default=DEFAULT_THRESHOLD, show_default=True, type=click.FloatRange(0, 1),
              help="Detections scoring less are hidden (a detection net).")
@click.option("--draw", type=click.Path(dir_okay=False), metavar="OUT.png",
              help="Write the image with the detections' boxes drawn (a detection net; one image).")
@click.option("--force", is_flag=True, help="Overwrite an existing --draw file.")
@exact_option
@plugin_option
def predict(prototxt: str, weights: str, images: tuple[str, ...], top: int, class_names: str | None,
            label_order: str | None, model_name: str | None, preset_name: str | None,
            interpolation: str | None, device: str | None, precision: str, output: str | None,
            threshold: float, draw: str | None, force: bool, exact: bool, **preprocessing: str | None) -> None:
    """Show the most probable classes of each IMAGE under PROTOTXT with WEIGHTS, or, for a detection net
    (ending in DetectionOutput), the objects found: score, label, box in the image's pixels (xmin ymin
    xmax ymax), and the class name with --labels (one per label, background first as SSD numbers them).

    Probabilities are the net's outputs when its output layer is a Softmax, otherwise a softmax of them.
    A net outside the zoo needs its preprocessing: --preset, --transform-from, or the steps (--resize,
    --crop, --mean/--mean-file, --scale, --channel-order).
    """
    from caffe2torch.cli import reuse_freed_memory
    from caffe2torch.runtime.predict import predict as run_predict

    reuse_freed_memory()
    predictions = run_predict(prototxt, weights, list(images), top=top, class_names=class_names,
                              names_order=label_order, model_name=model_name, preset_name=preset_name,
                              interpolation=interpolation, device=device, precision=precision, output=output,
                              threshold=threshold, draw=draw, force=force, exact=exact,
                              **preprocessing)
    for prediction in predictions:
        click.echo(str(prediction.path))
        if prediction.detections is not None:
            echo_detections(prediction.detections)
        for score in prediction.top:
            name = f"  {score.name}" if score.name is not None else ""
            click.echo(f"  {score.probability:8.4f}  {score.index:4d}{name}")
    if draw is not None:
        click.echo(f"wrote {draw}")


def echo_detections(found: ImageDetections) -> None:
    """One line per detection, best first: score, label, box (xmin ymin xmax ymax, pixels), name."""
    for detection in found.shown:
        name = f"  {detection.name}" if detection.name is not None else ""
        box = " ".join(f"{value:7.1f}" for value in detection.box)
        click.echo(f"  {detection.score:8.4f}  {detection.label:4d}  {box}{name}")
    if not found.shown:
        click.echo(f"  no detection scores {found.threshold:g} or more")
    if found.hidden:
        click.echo(f"  ({found.hidden} more under --threshold {found.threshold:g})")
