"""Options shared by the commands that preprocess images (``predict``, ``verify``)."""

from __future__ import annotations

from typing import Callable, TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def preprocessing_options(command: F) -> F:
    """``--resize`` ... ``--transform-from`` for the commands that preprocess images (``predict``,
    ``verify``).  Values are passed on as text: the library parses them and names the option in its errors."""
    for decorator in reversed([
        click.option("--transform-from", metavar="TRAIN_VAL.prototxt",
                     help="Take crop_size, mean_value/mean_file and scale from the TEST-phase data layer's "
                          "transform_param of this training prototxt (options below override it)."),
        click.option("--resize", metavar="N|HxW",
                     help="Resize the shorter side to N (aspect kept), or warp to exactly H x W (as Caffe's "
                          "convert_imageset does)."),
        click.option("--crop", metavar="N|HxW", help="Center crop (default: the net's input size)."),
        click.option("--mean", metavar="B,G,R", help="Mean subtracted per channel, in the net's channel order "
                     "(one value: every channel)."),
        click.option("--mean-file", metavar="F.binaryproto", help="Mean image subtracted, as Caffe does: from "
                     "the image resized to the mean's size, before the crop."),
        click.option("--scale", metavar="S", help="Factor applied after the mean (Caffe's transform_param.scale)."),
        click.option("--channel-order", type=click.Choice(["bgr", "rgb"], case_sensitive=False),
                     help="Channel order of the net's input (Caffe's is bgr)."),
    ]):
        command = decorator(command)
    return command

