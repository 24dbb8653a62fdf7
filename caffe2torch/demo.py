"""The main job: convert the built-in SE-ResNeXt-50 and run it, with no file from outside.

Every step is the real path a user's model takes: the net is built from code as the release prototxt,
seeded weights are written to a real ``.caffemodel`` and read back memory-mapped, the converted module
runs on the best device there is, and the exported ``model.py`` is checked to give the same bits.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import torch

from caffe2torch import zoo
from caffe2torch.caffe_proto import read_weights, write_caffemodel
from caffe2torch.converter import convert
from caffe2torch.converter.export import export
from caffe2torch.converter.stats import count_macs, count_parameters
from caffe2torch.runtime.device import Inference, choose_device
from caffe2torch.testing import seeded_weights, smooth_images


def _step(echo: Callable[[str], None], number: int, title: str, result: str) -> None:
    echo(f"{number}. {title:<44} {result}")


def run_demo(name: str = "se_resnext50", device: str | None = None,
             echo: Callable[[str], None] = print) -> dict[str, float]:
    """Run the demo on zoo model ``name``; returns the figures it printed."""
    entry = zoo.get(name)
    echo(f"caffe2torch: {entry.title} from the SENet release, with nothing but this package\n")

    net = entry.build()
    types = Counter(layer.type for layer in net.layer)
    _step(echo, 1, "Built the release net from code", f"{len(net.layer)} layers, equal to {entry.release_file}")
    echo("   " + ", ".join(f"{t} {n}" for t, n in types.most_common()))

    images = smooth_images(2, seed=1)
    with tempfile.TemporaryDirectory(prefix="caffe2torch-demo-") as tmp:
        caffemodel = Path(tmp) / f"{name}.caffemodel"
        start = time.perf_counter()
        write_caffemodel(net, seeded_weights(net, images[:1]), caffemodel)
        seconds = time.perf_counter() - start
        size_mb = caffemodel.stat().st_size / 2**20  # the release counts MiB as MB
        _step(echo, 2, "Wrote seeded weights as a real .caffemodel", f"{size_mb:.1f} MB in {seconds:.1f} s "
              f"(the release's is {entry.caffemodel_mb} MB)")

        start = time.perf_counter()
        weights = read_weights(caffemodel)
        blobs = sum(len(b) for b in weights.values())
        _step(echo, 3, "Read it back, memory-mapped and zero-copy", f"{blobs} blobs in "
              f"{time.perf_counter() - start:.3f} s")

        start = time.perf_counter()
        model = convert(net, weights)
        del weights
        parameters, macs = count_parameters(model), count_macs(model, model.input_shapes)
        _step(echo, 4, "Converted to a torch.fx GraphModule", f"{time.perf_counter() - start:.1f} s; "
              f"{parameters:,} parameters, {macs / 1e9:.2f} GMACs")

        inference = Inference(choose_device(device))
        runnable = inference.prepare(model)
        x = torch.from_numpy(images)
        inference(runnable, x[:1])  # warm-up
        inference.synchronize()
        start = time.perf_counter()
        probabilities = inference(runnable, x).cpu()
        inference.synchronize()
        per_image = (time.perf_counter() - start) / len(x)
        _step(echo, 5, f"Ran it on {inference.device} (fp32, TF32 off)", f"{per_image * 1000:.0f} ms per image, "
              f"output {list(probabilities.shape)}")
        top = probabilities[0].topk(5)
        echo("   top-5 classes of a synthetic image: " + ", ".join(
            f"{int(i)} ({float(p):.3f})" for p, i in zip(top.values, top.indices)))
        echo("   (seeded weights: the classes mean nothing until you load the release's caffemodel)")

        export(model, Path(tmp) / "export")
        spec = importlib.util.spec_from_file_location("exported_model", Path(tmp) / "export" / "model.py")
        exported = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(exported)
        same = torch.equal(exported.load().eval()(x), model(x))
        _step(echo, 6, "Exported model.py + model.safetensors, ran them", "identical bits" if same else "DIFFERENT")

    echo("\nNext, with the release weights and the ImageNet validation images:")
    echo(f"  caffe2torch verify {entry.release_file} {entry.release_file.replace('.prototxt', '.caffemodel')} "
         f"--images ILSVRC2012_img_val/ --labels ILSVRC2017_val.txt")
    echo(f"  (Table 1 of the release: top-1 {entry.top1_error}%, top-5 {entry.top5_error}% error)")
    if not same:
        raise AssertionError("the exported model.py disagrees with the converted module")
    return {"parameters": parameters, "macs": macs, "seconds_per_image": per_image, "caffemodel_mb": size_mb}
