"""``predict``: the top classes of a few images, with names and probabilities.

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
from caffe2torch.runtime.device import Inference, choose_device
from caffe2torch.runtime.labels import ClassNames, read_class_names, to_net_order
from caffe2torch.runtime.protocol import MeanLike, PreprocessOptions, SizeLike
from caffe2torch.runtime.session import open_session


@dataclass(frozen=True)
class ClassScore:
    index: int  # in the order of the net's outputs
    probability: float
    name: str | None


@dataclass(frozen=True)
class Prediction:
    path: Path
    top: list[ClassScore]


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


def predict(prototxt: Any, weights: Any, images: Sequence[str | Path], *, top: int = 5,
            class_names: str | Path | None = None, names_order: str | None = None,
            model_name: str | None = None, preset_name: str | None = None, interpolation: str | None = None,
            resize: SizeLike | None = None, crop: SizeLike | None = None, mean: MeanLike | None = None,
            mean_file: str | Path | None = None, scale: float | str | None = None,
            channel_order: str | None = None, transform_from: str | Path | None = None,
            device: str | None = None,
            precision: str = "fp32", output: str | None = None, batch_size: int = 16) -> list[Prediction]:
    """The ``top`` classes of each image, most probable first.

    ``resize`` ... ``transform_from`` describe the preprocessing over the preset
    (:class:`~caffe2torch.runtime.protocol.PreprocessOptions`).  When the order of the net's outputs is
    unknown, an explicit ``names_order`` is taken to be the net's too.
    """
    if top < 1:
        raise InputError(f"--top must be at least 1, not {top}")
    if not images:
        raise InputError("no images given")
    inference = Inference(choose_device(device), precision)
    names = read_class_names(class_names) if class_names is not None else None
    preprocessing = PreprocessOptions(transform_from=transform_from, resize=resize, crop=crop, mean=mean,
                                      mean_file=mean_file, scale=scale, channel_order=channel_order)
    session = open_session(prototxt, weights, inference, model_name=model_name, preset_name=preset_name,
                           interpolation=interpolation, output=output, preprocessing=preprocessing)
    preprocess = session.preprocessor()
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
