"""``verify``: measure a converted net's ImageNet error and decide whether it reproduces the published row.

The model's zoo entry (``model_name``, else the zoo's recognition of the net) gives the published row, the
preset and the order of the net's outputs.  Without an entry the preprocessing must be told (a preset,
``--transform-from``, or the steps: see :mod:`caffe2torch.runtime.protocol`), and the errors are reported
with no comparison (``reproduced`` is ``None``; the command exits 0, since there is nothing the
measurement could fail).  When the order of the net's outputs is unknown, an explicit ``label_order`` is
taken to be the net's too: the user's word is all there is to go on.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from caffe2torch.errors import InputError
from caffe2torch.runtime.data import ImageSet, LabeledImage, default_workers, has_class_folders, \
    images_from_class_folders, images_from_label_file
from caffe2torch.runtime.device import Inference, choose_device
from caffe2torch.runtime.evaluate import Distributed, Evaluation, Reproduction, check_reproduction, evaluate
from caffe2torch.runtime.labels import to_net_order
from caffe2torch.runtime.protocol import MeanLike, PreprocessOptions, SizeLike, resolve_preprocessing
from caffe2torch.runtime.session import Session, open_session


@dataclass
class VerifyResult:
    evaluation: Evaluation
    reproduction: Reproduction | None  # None: no published row to compare with
    details: dict[str, Any] = field(default_factory=dict)
    is_main: bool = True

    @property
    def reproduced(self) -> bool | None:
        return None if self.reproduction is None else self.reproduction.reproduced

    @property
    def exit_code(self) -> int:
        """0 reproduced (or nothing to compare with), 1 not reproduced."""
        return 1 if self.reproduced is False else 0

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {**self.details, **self.evaluation.as_dict(), "reproduced": self.reproduced}
        if self.reproduction is not None:
            published = self.reproduction.published
            result["published"] = {"model": published.model, "top1_error": published.top1_error,
                                   "top5_error": published.top5_error}
            result["rule"] = self.reproduction.rule
            result["within"] = self.reproduction.within
        return result

    def report(self) -> str:
        """A few lines for people."""
        evaluation = self.evaluation
        lines = [f"{self.details.get('model') or 'unidentified net'}: {evaluation.images:,} images, "
                 f"{self.details.get('images_per_second', 0):,.1f} images/s on {self.details.get('device')} "
                 f"({self.details.get('precision')})"]
        skipped = self.details.get("skipped")
        if skipped:
            lines.append(f"  skipped {skipped:,} image{'s' if skipped != 1 else ''} of "
                         f"{self.details.get('images_source')} that {'are' if skipped != 1 else 'is'} not in the "
                         "image folder")
        for k in (1, 5):
            low, high = evaluation.interval(k)
            correct = evaluation.top1_correct if k == 1 else evaluation.top5_correct
            line = (f"  top-{k} error {evaluation.error(k):6.2f}%  ({evaluation.images - correct:,} wrong, "
                    f"95% interval {low:.2f}-{high:.2f})")
            if self.reproduction is not None:
                published = getattr(self.reproduction.published, f"top{k}_error")
                line += f"  published {published:.2f}%  difference {evaluation.error(k) - published:+.2f}"
            lines.append(line)
        if self.reproduction is None:
            lines.append("no published result to compare with")
        else:
            verdict = "REPRODUCED" if self.reproduction.reproduced else "NOT REPRODUCED"
            lines.append(f"{verdict} ({self.reproduction.rule})")
        return "\n".join(lines)


def load_image_set(images: str | Path, labels: str | Path | None, limit: int | None,
                   skip_missing: bool = False) -> ImageSet:
    """A label file's images under ``images``, or, without a label file, the ``<wnid>/`` class folders."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, not {limit}")
    if labels is not None:
        return images_from_label_file(images, labels, limit=limit, skip_missing=skip_missing)
    if has_class_folders(images):
        return images_from_class_folders(images, limit=limit)
    raise InputError(f"{images}: give a label file (--labels), or a folder with one <wnid>/ folder per class")


def labels_in_net_order(image_set: ImageSet, source_order: str | None, net_order: str | None,
                        classes: int) -> list[LabeledImage]:
    """The images relabelled in the order of the net's outputs, with every label checked to be one."""
    if image_set.classes is not None and image_set.classes != classes:
        raise InputError(f"{image_set.source}: {image_set.classes} class folders, but the net has {classes} "
                         "outputs (every class needs its folder for the labels to be right)")
    mapping = to_net_order(source_order or image_set.label_order or net_order, net_order, classes, "labels")
    relabelled = []
    for image in image_set.images:
        if not 0 <= image.label < classes:
            raise InputError(f"{image.origin}: label {image.label} is not one of the net's {classes} "
                             f"classes (0..{classes - 1})")
        label = int(mapping[image.label]) if mapping is not None else image.label
        relabelled.append(LabeledImage(image.path, label, image.origin))
    return relabelled


def count_classes(session: Session, preprocess, sample: LabeledImage) -> int:
    """The number of the net's outputs, from one real forward pass (which also proves the
    preprocessing fits the net before thousands of images are read)."""
    batch = torch.from_numpy(preprocess(sample.path))[None]
    return int(session.scores(batch).shape[1])


def verify(prototxt: Any, weights: Any, images: str | Path, labels: str | Path | None = None, *,
           model_name: str | None = None, preset_name: str | None = None, label_order: str | None = None,
           interpolation: str | None = None, resize: SizeLike | None = None, crop: SizeLike | None = None,
           mean: MeanLike | None = None, mean_file: str | Path | None = None, scale: float | str | None = None,
           channel_order: str | None = None, transform_from: str | Path | None = None,
           skip_missing: bool = False, batch_size: int = 50, device: str | None = None, precision: str = "fp32",
           limit: int | None = None, workers: int | None = None, output: str | None = None,
           channels_last: bool = False, compile: bool = False, exact: bool = False,
           progress: bool = True) -> VerifyResult:
    """Evaluate the net on the images and compare with its published row (see the module docstring).

    ``label_order`` is the order of the label file's classes; by default the layout's (``synset`` for
    class folders) or else the net's own.  ``resize`` ... ``transform_from`` describe the preprocessing
    over the preset (:class:`~caffe2torch.runtime.protocol.PreprocessOptions`).  ``skip_missing``
    evaluates the listed images that are in ``images`` and counts the others (``details["skipped"]``).
    ``workers`` threads prepare the next batches while the net runs (default: one per CPU, at most 8; 0:
    in this thread, one after another); the results do not depend on it.  ``exact`` runs the faithful
    graph instead of the optimized one.
    Bad input raises :class:`InputError` before any image is evaluated.
    """
    preprocessing = PreprocessOptions(preset=preset_name, interpolation=interpolation,
                                      transform_from=transform_from, resize=resize, crop=crop, mean=mean,
                                      mean_file=mean_file, scale=scale, channel_order=channel_order)
    resolve_preprocessing(preprocessing)  # cheap checks first: the options, then every listed image exists
    image_set = load_image_set(images, labels, limit, skip_missing)
    inference = Inference(choose_device(device), precision, channels_last=channels_last, compile=compile)
    session = open_session(prototxt, weights, inference, model_name=model_name, output=output,
                           preprocessing=preprocessing, exact=exact)
    preprocess = session.preprocessor()
    classes = count_classes(session, preprocess, image_set.images[0])
    net_order = session.label_order or label_order
    relabelled = labels_in_net_order(image_set, label_order, net_order, classes)

    distributed = Distributed.from_environment(inference.device)
    try:
        start = time.perf_counter()
        evaluation = evaluate(session.runnable, relabelled, preprocess, inference, batch_size=batch_size,
                              workers=workers, output=output, distributed=distributed, progress=progress)
        seconds = time.perf_counter() - start
    finally:
        distributed.close()
    published = session.published
    details = {
        "model": session.model_name,
        "prototxt": str(prototxt),
        "weights": None if weights is None else str(weights),
        "images_source": image_set.source,
        "limit": limit,
        "skipped": image_set.skipped,
        "preset": session.preset.name if session.preset else None,
        "interpolation": session.preset.interpolation if session.preset else None,
        "preprocessing": dataclasses.asdict(session.preset) if session.preset else None,
        "net_label_order": net_order,
        "labels_label_order": label_order or image_set.label_order or session.label_order,
        "device": str(inference.device),
        "precision": precision,
        "graph": "exact" if exact else "optimized",
        "processes": distributed.world_size,
        "workers": workers if workers is not None else default_workers(),
        "seconds": seconds,
        "images_per_second": evaluation.images / seconds if seconds > 0 else 0.0,
    }
    reproduction = check_reproduction(evaluation, published) if published is not None else None
    return VerifyResult(evaluation, reproduction, details, is_main=distributed.is_main)
