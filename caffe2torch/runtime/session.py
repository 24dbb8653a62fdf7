"""A converted net ready to run, with what the runtime must know about it: its zoo entry (published
result, preset), its preprocessing, the order of its outputs, and the device it runs on.

``verify``, ``predict`` and ``bench`` all start here, so they resolve a model the same way.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from caffe2torch.errors import Caffe2TorchError, InputError
from caffe2torch.runtime.device import Inference
from caffe2torch.runtime.evaluate import Published, choose_output, select_output
from caffe2torch.runtime.preprocess import Preprocessor
from caffe2torch.runtime.presets import Preset
from caffe2torch.runtime.protocol import PreprocessOptions, resolve_preprocessing, unknown_preprocessing_message


def named_zoo_entry(model_name: str) -> Any:
    """The zoo entry a ``--model`` option names; an unknown name is an error."""
    from caffe2torch import zoo

    if model_name not in zoo.MODELS:
        raise InputError(f"unknown model {model_name!r}; known: {', '.join(sorted(zoo.MODELS))}")
    return zoo.get(model_name)


@dataclass
class Session:
    """A converted net on its device.  ``module`` is the graph that runs: :func:`caffe2torch.optimize`'s (the
    faithful one with ``exact``), which keeps the converted net's description (inputs, outputs and their
    layer types, zoo model, deploy form); ``runnable`` is the same prepared for ``inference`` (moved, maybe
    channels-last or compiled)."""

    module: nn.Module
    runnable: nn.Module
    inference: Inference
    model_name: str | None
    entry: Any
    preset: Preset | None
    output: str | None

    @property
    def published(self) -> Published | None:
        if self.entry is None:
            return None
        return Published(self.model_name, float(self.entry.top1_error), float(self.entry.top5_error))

    @property
    def label_order(self) -> str | None:
        """The order of the net's outputs: the zoo entry's, else the preset's."""
        order = getattr(self.entry, "label_order", None) if self.entry is not None else None
        return order or (self.preset.label_order if self.preset is not None else None)

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """The net's declared input shapes (N x C x H x W for images)."""
        return [tuple(shape) for shape in getattr(self.module, "input_shapes", [])]

    def preprocessor(self) -> Preprocessor:
        """The preprocessing the preset describes, cropped to the net's declared input size (unless the
        crop was given explicitly)."""
        if self.preset is None:
            raise InputError(unknown_preprocessing_message())
        shapes = self.input_shapes
        if len(shapes) > 1:
            raise InputError(f"the net has {len(shapes)} inputs; image evaluation needs a net with one")
        if shapes and len(shapes[0]) == 4:
            return Preprocessor(self.preset, input_size=shapes[0][2:], channels=shapes[0][1])
        return Preprocessor(self.preset)

    def run(self, batch: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The net's outputs (float32, on the device) for a batch of preprocessed images."""
        try:
            return self.inference(self.runnable, batch)
        except Caffe2TorchError:
            raise
        except RuntimeError as error:  # shapes that do not fit the net: torch's first line says which
            raise InputError(f"the net cannot run on inputs of shape {list(batch.shape)}: "
                             f"{str(error).splitlines()[0]}") from None

    def scores(self, batch: torch.Tensor) -> torch.Tensor:
        """Class scores (N x C, float32, on the device) for a batch of preprocessed images."""
        return select_output(self.run(batch), self.output)

    def output_of(self, batch: torch.Tensor) -> torch.Tensor:
        """The output the session reads (``output``, else the net's only one), as the net shapes it."""
        return choose_output(self.run(batch), self.output)


def open_session(prototxt: Any, weights: Any, inference: Inference, *, model_name: str | None = None,
                 preset_name: str | None = None, interpolation: str | None = None, output: str | None = None,
                 random_init: bool = False, preprocessing: PreprocessOptions | None = None,
                 exact: bool = False) -> Session:
    """Convert the net, find its zoo entry and preprocessing, and put it on ``inference``'s device.

    The zoo entry is the one ``model_name`` names, else the one the converted model was recognised as.
    The preprocessing is :func:`~caffe2torch.runtime.protocol.resolve_preprocessing` of ``preprocessing``
    over ``preset_name`` (else the zoo entry's preset); ``interpolation`` replaces the resize filter, for
    experiments.  With nothing to go on the preset is ``None`` (fine for ``bench``; ``verify`` and
    ``predict`` then ask for one).  ``exact`` runs the faithful graph, one op per Caffe layer, instead of the
    optimized one (the same function, rounded differently where layers are folded).  Options are checked
    before the net is converted.
    """
    import caffe2torch

    options = dataclasses.replace(preprocessing or PreprocessOptions(),
                                  **{key: value for key, value in (("preset", preset_name),
                                                                   ("interpolation", interpolation))
                                     if value is not None})
    entry = named_zoo_entry(model_name) if model_name is not None else None
    if isinstance(weights, (str, os.PathLike)) and not Path(weights).is_file():
        raise InputError(f"{weights}: no such weights file")
    preset = resolve_preprocessing(options, entry.preset if entry is not None else None)  # bad options: early
    module = caffe2torch.load(prototxt, weights, outputs=[output] if output else None, random_init=random_init)
    if entry is None and module.zoo_model is not None:
        entry = named_zoo_entry(module.zoo_model)
        preset = resolve_preprocessing(options, entry.preset)
    model_name = entry.name if entry is not None else None
    if not exact:  # the faithful graph's weights are dropped with it: the optimized graph has its own
        module = inference_graph(module, inference)
    return Session(module, inference.prepare(module), inference, model_name, entry, preset, output)


def inference_graph(module: nn.Module, inference: Inference) -> nn.Module:
    """:func:`caffe2torch.optimize` of the converted net for ``inference``: its convolutions compute on NHWC
    tensors through oneDNN where that was measured fastest (eager float32 on the CPU), else in the memory
    format asked for (``--channels-last``), which torch.compile and the GPUs choose their kernels by."""
    import caffe2torch

    eager_cpu_fp32 = inference.device.type == "cpu" and inference.precision == "fp32" and not inference.compile
    return caffe2torch.optimize(module, channels_last=None if eager_cpu_fp32 else inference.channels_last)
