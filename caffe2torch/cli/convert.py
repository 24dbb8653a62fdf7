"""``caffe2torch convert``: a Caffe net to model.py + model.safetensors + meta.json (+ model.onnx)."""

from __future__ import annotations

from pathlib import Path

import click

from caffe2torch.cli.options import parse_shape, plugin_option


@click.command()
@click.argument("prototxt")
@click.option("--weights", "-w", type=click.Path(dir_okay=False), help="The .caffemodel or .caffemodel.h5.")
@click.option("--output", "-o", help="Directory to write: new, empty, or (with --force) a previous output "
              "(default: NAME-torch).")
@click.option("--input-shape", callback=parse_shape, help="Input shape such as 1,3,224,224 (overrides the net's).")
@click.option("--force", is_flag=True, help="Replace the previous output in the directory.")
@click.option("--onnx", "onnx", is_flag=True, help="Also write model.onnx (opset 18, dynamic batch; needs "
              "pip install 'caffe2torch[onnx]').")
@click.option("--convention", type=click.Choice(["caffe", "torchvision"]), default="caffe", show_default=True,
              help="torchvision: the model takes RGB in [0, 1] normalised by the ImageNet mean/std and gives "
              "classes in sorted-synset order.")
@click.option("--to", "target", type=click.Choice(["caffe2torch", "timm"]), default="caffe2torch",
              show_default=True, help="timm: a state dict for timm's port of a release net (timm.safetensors).")
@click.option("--preset", help="The net's preprocessing preset, for --convention torchvision outside the zoo.")
@click.option("--label-order", help="The class order of the net's outputs (e.g. senet, synset).")
@plugin_option
def convert(prototxt: str, weights: str | None, output: str | None, input_shape: tuple[int, ...] | None,
            force: bool, onnx: bool, convention: str, target: str, preset: str | None,
            label_order: str | None) -> None:
    """Convert PROTOTXT (a file or a zoo name such as se_resnext50) to standalone PyTorch files.

    Writes DIR/model.py (imports only torch and safetensors), DIR/model.safetensors (the weights, no
    pickle), DIR/meta.json (inputs, outputs, convention and the preprocessing to apply) and, with --onnx,
    DIR/model.onnx.  Without --weights the architecture is converted with deterministic random weights.
    """
    from caffe2torch.nets import export_net

    directory = output if output is not None else f"{Path(prototxt).stem}-torch"  # export refuses ''
    formats = ("timm",) if target == "timm" else ("pytorch",)
    result = export_net(prototxt, weights, directory, force=force, input_shape=input_shape,
                        formats=formats + (("onnx",) if onnx else ()), convention=convention, preset=preset,
                        label_order=label_order)
    model, meta = result["model"], result["meta"]
    click.echo(f"converted {model.net_name or prototxt!r}: {len(model.caffe_names)} layers, "
               f"{result['parameters']:,} learnable parameters")
    for name, shape in zip(model.input_names, model.input_shapes):
        click.echo(f"  input  {name}: {list(shape)}")
    for name, shape in model.output_shapes.items():
        click.echo(f"  output {name}: {list(shape)}")
    for note in model.notes:
        click.echo(f"  note: {note}")
    if meta["random_weights"]:
        click.echo("  no --weights given: architecture only, weights are deterministic random values")
    if meta.get("zoo_model"):
        click.echo(f"  recognised as zoo model {meta['zoo_model']} (preset {meta['preset']})")
    for path in result["paths"].values():
        click.echo(f"wrote {path}")
