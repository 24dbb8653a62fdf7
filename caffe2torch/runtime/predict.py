"""``predict``: the top classes of a few images, with names and probabilities; or, for a detection net
(one ending in SSD's ``DetectionOutput``), the objects found, with boxes on the original image
(:mod:`caffe2torch.runtime.detection`).

Probabilities: when the layer that writes the net's output blob is a ``Softmax`` (the usual deploy
ending, e.g. ``prob``), its outputs are already probabilities and are shown as they are; otherwise (the
SENet nets end at the ``fc`` InnerProduct) a softmax over the classes is applied here.  Deciding from the
net's definition (the converted model's ``output_types``), not from the numbers, means logits that happen
to sum to 1 are never mistaken for probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from caffe2torch.errors import InputError
from caffe2torch.runtime.detection import DEFAULT_THRESHOLD, ImageDetections, check_drawing_path, \
    check_threshold, detection_rows, image_detections, is_detection_output, write_drawing
from caffe2torch.runtime.device import Inference, choose_device
from caffe2torch.runtime.labels import ClassNames, read_class_names, to_net_order
from caffe2torch.runtime.preprocess import Preprocessor, decode_image
from caffe2torch.runtime.protocol import MeanLike, PreprocessOptions, SizeLike
from caffe2torch.runtime.session import Session, open_session


@dataclass(frozen=True)
class ClassScore:
    index: int  # in the order of the net's outputs
    probability: float
    name: str | None


@dataclass(frozen=True)
class Prediction:
    path: Path
    top: list[ClassScore]  # a classifier's most probable classes (empty for a detection net)
    detections: ImageDetections | None = None  # a detection net's (None for a classifier)


def outputs_are_probabilities(module: Any) -> bool:
    """Whether the net's one output is written by a Softmax layer, as the converter recorded."""
    types = list(module.output_types.values())
    return len(types) == 1 and types[0] == "Softmax"


def names_in_net_order(names: ClassNames, names_order: str | None, net_order: str | None,
                       classes: int) -> list[str]:
    """Class names indexed by the net's outputs.  A file of sorted WordNet ids is in ``synset`` order;
    otherwise, unless told, it is taken to be in the net's order."""
    if names_order is None:
        names_order = "synset" if names.sorted_synsets else net_order
    if len(names.names) != classes:
        raise InputError(f"{len(names.names)} class names for a net with {classes} outputs")
    mapping = to_net_order(names_order, net_order, classes, "class names")
    if mapping is None:
        return list(names.names)
    in_net_order = list(names.names)
    for index, name in enumerate(names.names):
        in_net_order[int(mapping[index])] = name
    return in_net_order


def detection_class_names(module: Any, names: ClassNames) -> list[str]:
    """Class names indexed by a detection net's labels (background included, as SSD numbers them),
    checked against the number of classes its DetectionOutput layer was built for."""
    from caffe2torch.modules.detection import DetectionOutput

    counts = {m.num_classes for m in module.modules() if isinstance(m, DetectionOutput)}
    if len(counts) == 1 and len(names.names) != next(iter(counts)):
        raise InputError(f"{len(names.names)} class names for a detection net with {next(iter(counts))} classes "
                         "(one name per label, the background's included)")
    return list(names.names)


def detect(session: Session, preprocess: Preprocessor, images: Sequence[str | Path], *,
           threshold: float, names: list[str] | None, batch_size: int) -> list[Prediction]:
    """Each image's detections, boxes in its own pixels: the image is decoded here, not by the
    preprocessor, because its size is needed to put the boxes back on it."""
    predictions = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        decoded = [decode_image(path, color=preprocess.channels == 3) for path in chunk]
        batch = torch.from_numpy(np.stack([preprocess.transform(image) for image in decoded]))
        rows = detection_rows(session.output_of(batch))
        for index, (path, image) in enumerate(zip(chunk, decoded)):
            height, width = image.shape[:2]
            found = image_detections(rows, index, preprocess.input_region(height, width), height, width,
                                     threshold=threshold, names=names)
            predictions.append(Prediction(Path(path), [], found))
    return predictions


def predict(prototxt: Any, weights: Any, images: Sequence[str | Path], *, top: int = 5,
            class_names: str | Path | None = None, names_order: str | None = None,
            model_name: str | None = None, preset_name: str | None = None, interpolation: str | None = None,
            resize: SizeLike | None = None, crop: SizeLike | None = None, mean: MeanLike | None = None,
            mean_file: str | Path | None = None, scale: float | str | None = None,
            channel_order: str | None = None, transform_from: str | Path | None = None,
            device: str | None = None,
            precision: str = "fp32", output: str | None = None, batch_size: int = 16,
            threshold: float = DEFAULT_THRESHOLD, draw: str | Path | None = None,
            force: bool = False, exact: bool = False) -> list[Prediction]:
    """The ``top`` classes of each image, most probable first; for a detection net (its output written by
    a ``DetectionOutput`` layer), its detections scoring at least ``threshold`` instead, and with ``draw``
    the one image with their boxes written to that file (replacing one only with ``force``).

    ``resize`` ... ``transform_from`` describe the preprocessing over the preset
    (:class:`~caffe2torch.runtime.protocol.PreprocessOptions`).  When the order of the net's outputs is
    unknown, an explicit ``names_order`` is taken to be the net's too.  ``exact`` runs the faithful graph
    instead of the optimized one.
    """
    if top < 1:
        raise InputError(f"--top must be at least 1, not {top}")
    if not images:
        raise InputError("no images given")
    threshold = check_threshold(threshold)
    if draw is not None:
        if len(images) != 1:
            raise InputError(f"--draw draws the boxes of one image; {len(images)} images given")
        check_drawing_path(draw, force=force)  # before the net is converted and run
    inference = Inference(choose_device(device), precision)
    names = read_class_names(class_names) if class_names is not None else None
    preprocessing = PreprocessOptions(transform_from=transform_from, resize=resize, crop=crop, mean=mean,
                                      mean_file=mean_file, scale=scale, channel_order=channel_order)
    session = open_session(prototxt, weights, inference, model_name=model_name, preset_name=preset_name,
                           interpolation=interpolation, output=output, preprocessing=preprocessing,
                           exact=exact)
    preprocess = session.preprocessor()
    if is_detection_output(session.module.output_types, output):
        if names_order is not None:
            raise InputError("--label-order applies to a classifier's outputs; a detection net's labels are "
                             "its own, and --labels names them in that order")
        predictions = detect(session, preprocess, images, threshold=threshold, batch_size=batch_size,
                             names=detection_class_names(session.module, names) if names else None)
        drawn = predictions[0].detections
        if draw is not None and drawn is not None:
            write_drawing(draw, decode_image(images[0]), drawn.shown, force=force)
        return predictions
    if draw is not None:
        raise InputError("--draw draws the boxes of a detection net (one whose output is written by a "
                         "DetectionOutput layer); this net's is not")
    chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    scores = torch.cat([session.scores(torch.from_numpy(np.stack([preprocess(path) for path in chunk]))).cpu()
                        for chunk in chunks])
    probabilities = scores if outputs_are_probabilities(session.module) else scores.softmax(dim=1)
    classes = probabilities.shape[1]
    net_order = session.label_order or names_order
    labels = names_in_net_order(names, names_order, net_order, classes) if names else None
    values, indices = probabilities.topk(min(top, classes), dim=1)
    return [Prediction(Path(path), [ClassScore(int(i), float(v), labels[int(i)] if labels else None)
                                    for v, i in zip(row_values, row_indices)])
            for path, row_values, row_indices in zip(images, values, indices)]
