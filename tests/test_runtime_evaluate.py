"""Counting top-k like Caffe, the Wilson interval, the reproduction rule, and data-parallel evaluation."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from caffe2torch.errors import InputError
from caffe2torch.runtime.data import LabeledImage, opencv_threads_stopped
from caffe2torch.runtime.device import Inference
from caffe2torch.runtime.evaluate import Distributed, Evaluation, Published, check_reproduction, correct_counts, \
    evaluate, select_output, wilson_interval
from caffe2torch.runtime.preprocess import Preprocessor
from caffe2torch.runtime.presets import Preset


def test_ties_count_against_the_true_class_as_in_caffe() -> None:
    scores = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0, 0.0],   # tie with label 1: wrong at top-1
                           [0.0, 2.0, 1.0, 0.0, 0.0, 0.0],   # right
                           [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],   # label 5 is last: wrong at top-5
                           [5.0, 4.0, 3.0, 2.0, 1.0, 1.0],   # label 4 ties with 5 for 5th place: wrong
                           [math.nan, 0.0, 0.0, 0.0, 0.0, 0.0]])  # non-finite true score: wrong
    labels = torch.tensor([1, 1, 5, 4, 0])
    assert correct_counts(scores, labels).tolist() == [1, 2]
    assert correct_counts(scores[:3], labels[:3], ks=(1, 2, 6)).tolist() == [1, 2, 3]


def test_top5_of_fewer_than_five_classes_is_everything() -> None:
    assert correct_counts(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([0])).tolist() == [0, 1]


def test_wilson_interval() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(3.8414588 / (10 + 3.8414588))  # z^2 / (n + z^2)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.23659, abs=1e-5) and high == pytest.approx(0.76341, abs=1e-5)
    low, high = wilson_interval(11_185, 50_000)  # 22.37%, SE-ResNet-50's top-1 error
    assert low == pytest.approx(0.22006, abs=1e-5) and high == pytest.approx(0.22738, abs=1e-5)


PUBLISHED = Published("se_resnet50", 22.37, 6.36)


def test_full_set_rule_is_a_tenth_of_a_point() -> None:
    # 11,185 wrong = 22.37%; 50 images = 0.1 point
    assert check_reproduction(Evaluation(50_000, 50_000 - 11_235, 50_000 - 3_180), PUBLISHED).reproduced
    assert check_reproduction(Evaluation(50_000, 50_000 - 11_135, 50_000 - 3_180), PUBLISHED).reproduced
    reproduction = check_reproduction(Evaluation(50_000, 50_000 - 11_236, 50_000 - 3_180), PUBLISHED)
    assert reproduction.within == {"top1": False, "top5": True} and not reproduction.reproduced
    assert "full 50,000" in reproduction.rule


def test_subset_rule_is_the_interval() -> None:
    # 100 images: 25 wrong -> 95% interval 17.5..34.4 holds 22.37; 5 wrong at top-5 -> 2.2..11.2 holds 6.36
    assert check_reproduction(Evaluation(100, 75, 95), PUBLISHED).reproduced
    reproduction = check_reproduction(Evaluation(100, 60, 95), PUBLISHED)  # 40% top-1 error: 30.9..49.9
    assert reproduction.within == {"top1": False, "top5": True}
    assert "Wilson interval of 100 images" in reproduction.rule


def test_evaluation_numbers() -> None:
    evaluation = Evaluation(200, 150, 190)
    assert (evaluation.error(1), evaluation.error(5)) == (25.0, 5.0)
    data = evaluation.as_dict()
    assert data["top1_correct"] == 150 and data["top5_error"] == 5.0 and len(data["top1_error_interval95"]) == 2


def test_select_output() -> None:
    scores = torch.zeros(2, 4, 1, 1)
    assert select_output(scores, None).shape == (2, 4)
    assert select_output({"prob": scores}, None).shape == (2, 4)
    with pytest.raises(InputError, match="several outputs"):
        select_output({"a": scores, "b": scores}, None)
    with pytest.raises(InputError, match="no output 'c'"):
        select_output({"a": scores, "b": scores}, "c")
    with pytest.raises(InputError, match="N x C"):
        select_output(torch.zeros(2, 4, 3, 3), None)


class DominantChannel(nn.Module):
    """Class = the channel with the largest mean: a net whose answers are known by construction."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


COLOURS = [(200, 10, 10), (10, 200, 10), (10, 10, 200)]  # BGR: class 0, 1, 2
PLAIN = Preset(name="plain", mean=None, resize=None, crop_size=None)


def _images(folder: Path, count: int) -> list[LabeledImage]:
    """Solid-colour PNGs; every third one is labelled wrongly (class + 1)."""
    images = []
    for i in range(count):
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), np.full((6, 5, 3), COLOURS[i % 3], np.uint8))
        images.append(LabeledImage(path, (i % 3 + (1 if i % 3 == 0 else 0)) % 3, f"{i}"))
    return images


def test_evaluate_counts(tmp_path: Path) -> None:
    images = _images(tmp_path, 10)  # indices 0, 3, 6, 9 mislabelled
    result = evaluate(DominantChannel(), images, Preprocessor(PLAIN), Inference(torch.device("cpu")),
                      batch_size=3, workers=0, progress=False)
    assert result == Evaluation(10, 6, 10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world_size: int, port: int, images: list[LabeledImage], out: str) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    device = torch.device("cpu")
    distributed = Distributed.from_environment(device)
    result = evaluate(DominantChannel(), images, Preprocessor(PLAIN), Inference(device), batch_size=2,
                      workers=0, distributed=distributed, progress=False)
    Path(out, f"{rank}.txt").write_text(f"{distributed.rank} {distributed.world_size} {result.images} "
                                        f"{result.top1_correct} {result.top5_correct}")
    distributed.close()
    assert not torch.distributed.is_initialized()


def test_two_processes_on_gloo_sum_their_shards(tmp_path: Path) -> None:
    """What torchrun does, in miniature: fork (not spawn, which re-imports torch for seconds) two ranks."""
    images = _images(tmp_path, 7)  # 0, 3, 6 mislabelled; shards of 4 and 3 images
    with opencv_threads_stopped():  # see its docstring: forking with OpenCV's pool running can hang
        torch.multiprocessing.start_processes(_distributed_worker, args=(2, _free_port(), images, str(tmp_path)),
                                              nprocs=2, start_method="fork")
    results = sorted(Path(tmp_path, f"{rank}.txt").read_text() for rank in range(2))
    assert results == ["0 2 7 4 7", "1 2 7 4 7"]


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distributed = Distributed.from_environment(torch.device("cpu"))
    assert (distributed.rank, distributed.world_size, distributed.is_main) == (0, 1, True)
    counts = torch.tensor([1, 2, 3])
    assert distributed.sum(counts) is counts
