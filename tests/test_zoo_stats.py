"""Learnable parameters and multiply-accumulates (converter/stats.py), checked by hand and on the zoo nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import caffe2torch
from caffe2torch import zoo
from caffe2torch.converter.stats import count_macs, count_parameters


class Tied(nn.Module):
    """A linear applied twice with one weight: counted once as parameters, twice as MACs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x))


def test_parameters_exclude_batch_norm_statistics() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.Linear(5, 2))
    assert count_parameters(model) == 8 * 3 * 3 * 3 + (8 + 8) + (5 * 2 + 2)
    assert count_parameters(Tied()) == 16


def test_macs_of_grouped_strided_convolution_and_linear() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),  # 8 x 5 x 5 outputs, each 2 x 3 x 3
        nn.Flatten(),
        nn.Linear(8 * 5 * 5, 10),
    )
    assert count_macs(model, [(16, 4, 10, 10)]) == 8 * 5 * 5 * (2 * 3 * 3) + 200 * 10  # batch counted as 1
    assert count_macs(Tied(), [(1, 4)]) == 2 * 16


def test_macs_of_transposed_convolution() -> None:
    model = nn.ConvTranspose2d(6, 4, kernel_size=4, stride=2, groups=2)
    assert count_macs(model, [(1, 6, 5, 5)]) == 6 * 5 * 5 * (2 * 4 * 4)


def test_macs_leave_the_model_as_it_was() -> None:
    model = nn.Linear(3, 2)
    weight = model.weight.detach().clone()
    count_macs(model, [(1, 3)])
    assert not model._forward_hooks
    assert model.weight.device.type == "cpu" and torch.equal(model.weight, weight)


def test_se_resnext50_size_and_cost() -> None:
    """The SENet paper's SE-ResNeXt-50: 27.6 M parameters, 4.25 GFLOPs (multiply-accumulates)."""
    model = caffe2torch.load("se_resnext50", random_init=True)
    assert count_parameters(model) == 27_559_896
    assert count_macs(model, model.input_shapes) == pytest.approx(4.25e9, rel=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_stored_counts_match_the_converted_nets(name: str) -> None:
    entry = zoo.get(name)
    model = caffe2torch.load(entry.build(), random_init=True)
    assert (count_parameters(model), count_macs(model, model.input_shapes)) == (entry.parameters, entry.macs)
