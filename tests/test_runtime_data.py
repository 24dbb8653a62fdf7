"""The batch loader behind ``verify``: worker threads give the batches of the sequential path, bit for bit and in
order; a worker's error is the one-line error of that file; errors, an early stop and Ctrl-C stop the threads;
batches are pinned for a CUDA device; the results of ``evaluate`` do not depend on the number of workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from caffe2torch.cli import main
from caffe2torch.errors import InputError
from caffe2torch.runtime.data import BatchLoader, LabeledImage
from caffe2torch.runtime.device import Inference
from caffe2torch.runtime.evaluate import evaluate
from caffe2torch.runtime.preprocess import Preprocessor
from caffe2torch.runtime.presets import PRESETS, Preset
from tests.conftest import shared_path

SENET = Preprocessor(PRESETS["senet"], input_size=(224, 224))


def _noise_images(folder: Path, count: int, seed: int = 0) -> list[LabeledImage]:
    """Random pictures of different sizes and formats (so every step of the preprocessing has work)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        height, width = int(rng.integers(230, 400)), int(rng.integers(230, 400))
        noise = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
        smooth = (noise // 2 + rng.integers(0, 128, 3, dtype=np.uint8)).astype(np.uint8)  # and a colour cast
        path = folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}"
        cv2.imwrite(str(path), smooth)
        images.append(LabeledImage(path, int(rng.integers(0, 10)), f"labels.txt:{i + 1}"))
    return images


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("caffe2torch-images")]


def _batches(images: list[LabeledImage], preprocess, **options) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(BatchLoader(images, preprocess, **options))


def test_workers_give_the_sequential_batches_bit_for_bit(tmp_path: Path) -> None:
    images = _noise_images(tmp_path, 11)
    sequential = _batches(images, SENET, batch_size=4, workers=0)
    assert [tuple(b.shape) for b, _ in sequential] == [(4, 3, 224, 224), (4, 3, 224, 224), (3, 3, 224, 224)]
    reference = np.stack([SENET(item.path) for item in images])
    assert np.array_equal(torch.cat([b for b, _ in sequential]).numpy(), reference)
    assert torch.cat([labels for _, labels in sequential]).tolist() == [item.label for item in images]
    for workers, prefetch in ((1, 0), (2, 2), (3, 1), (8, 5)):
        threaded = _batches(images, SENET, batch_size=4, workers=workers, prefetch=prefetch)
        assert len(threaded) == len(sequential)
        for (ours, our_labels), (theirs, their_labels) in zip(threaded, sequential):
            assert torch.equal(ours, theirs) and torch.equal(our_labels, their_labels)
            assert ours.dtype == torch.float32 and our_labels.dtype == torch.int64
    assert not _loader_threads()


def test_loader_checks_its_options(tmp_path: Path) -> None:
    for options, message in (({"batch_size": 0}, "batch size must be at least 1"),
                             ({"batch_size": 2, "workers": -1}, "workers must be 0 or more")):
        with pytest.raises(InputError, match=message):
            BatchLoader([], SENET, **options)
    assert len(BatchLoader(_noise_images(tmp_path, 5), SENET, batch_size=2)) == 3


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_image_is_the_same_one_line_error_naming_the_file(tmp_path: Path, workers: int) -> None:
    images = _noise_images(tmp_path, 9)
    bad = tmp_path / "005.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg at all")
    with pytest.raises(InputError) as caught:
        _batches(images, SENET, batch_size=2, workers=workers)
    assert str(caught.value) == f"{bad}: cannot decode the image (not a format OpenCV reads, or truncated)"
    assert not _loader_threads()


@pytest.mark.parametrize("workers", [0, 2])
def test_other_errors_of_the_preprocessing_name_the_file_too(tmp_path: Path, workers: int) -> None:
    images = _noise_images(tmp_path, 6)

    def broken(path: Path) -> np.ndarray:
        if path.name == "003.jpg":
            raise ValueError("something inside\nsecond line")
        return SENET(path)

    with pytest.raises(InputError, match=r"003\.jpg: ValueError: something inside$") as caught:
        _batches(images, broken, batch_size=4, workers=workers)
    assert isinstance(caught.value.__cause__, ValueError)  # --debug shows where it came from


def test_the_first_bad_image_in_order_is_reported(tmp_path: Path) -> None:
    images = _noise_images(tmp_path, 12)

    def slow_then_broken(path: Path) -> np.ndarray:
        index = int(path.stem)
        if index == 9:
            raise InputError(f"{path}: nine")
        if index == 6:
            time.sleep(0.3)  # finishes after image 9 has failed
            raise InputError(f"{path}: six")
        return SENET(path)

    with pytest.raises(InputError, match="006.png: six"):
        _batches(images, slow_then_broken, batch_size=4, workers=4, prefetch=2)
    assert not _loader_threads()


def test_images_of_different_sizes_in_a_batch_need_a_crop(tmp_path: Path) -> None:
    images = _noise_images(tmp_path, 4)
    uncropped = Preprocessor(Preset(name="plain", mean=None, resize=None, crop_size=None))
    with pytest.raises(InputError, match=r"preprocessed to 3x\d+x\d+, but .* of the same batch to 3x\d+x\d+ "
                                         r"\(the images of a batch need one size: give --crop, or --resize HxW\)"):
        _batches(images, uncropped, batch_size=4, workers=2)
    assert len(_batches(images, uncropped, batch_size=1, workers=2)) == 4  # one per batch: fine


def test_stopping_early_stops_the_threads(tmp_path: Path) -> None:
    images = _noise_images(tmp_path, 12)
    started = []

    def counted(path: Path) -> np.ndarray:
        started.append(path)
        return SENET(path)

    with closing(BatchLoader(images, counted, batch_size=2, workers=2, prefetch=1).batches()) as batches:
        next(batches)
        assert _loader_threads()
    assert not _loader_threads()
    assert len(started) <= 2 * 2  # the batch taken and the one prefetched, no more


def test_ctrl_c_while_waiting_for_a_batch_stops_promptly(tmp_path: Path) -> None:
    images = _noise_images(tmp_path, 4) * 10

    def slow(path: Path) -> np.ndarray:
        time.sleep(0.2)
        return SENET(path)

    main_thread = threading.main_thread().ident
    timer = threading.Timer(0.5, lambda: signal.pthread_kill(main_thread, signal.SIGINT))
    loader = BatchLoader(images, slow, batch_size=4, workers=2)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        timer.start()
        with closing(loader.batches()) as batches:
            for _ in batches:
                pass
    timer.join()
    # 40 images at 0.1 s each would take 4 s; stopping waits only for the images being prepared
    assert time.perf_counter() - start < 2.0
    assert not _loader_threads()


class DominantChannel(nn.Module):
    """Class = the channel with the largest mean (exact on any device)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _random_classifier(classes: int = 1000) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, classes)).eval()


def test_evaluate_gives_the_same_counts_and_predictions_with_and_without_workers(tmp_path: Path) -> None:
    images = _noise_images(tmp_path, 13)
    model, inference = _random_classifier(10), Inference(torch.device("cpu"))
    results = [evaluate(model, images, SENET, inference, batch_size=4, workers=workers, progress=False,
                        keep_top5=True) for workers in (0, 2)]
    assert results[0] == results[1] and results[0].images == 13
    assert results[0].top5 == results[1].top5 and len(results[0].top5) == 13
    assert len({tuple(top) for top in results[0].top5}) > 1  # the predictions differ from image to image
    assert evaluate(model, images, SENET, inference, batch_size=4, workers=2, progress=False).top5 is None


def test_verify_on_the_100_real_images_is_the_same_with_and_without_workers(tmp_path: Path) -> None:
    folder = shared_path("realmodels", "imagenet-val-100")
    labels = {line.split()[0]: int(line.split()[1]) for line in (folder / "val.txt").read_text().splitlines()}
    images = [LabeledImage(path, labels[path.name], path.name) for path in sorted(folder.glob("*.JPEG"))]
    assert len(images) == 100
    model, inference = _random_classifier(), Inference(torch.device("cpu"))
    sequential = evaluate(model, images, SENET, inference, batch_size=16, workers=0, progress=False, keep_top5=True)
    threaded = evaluate(model, images, SENET, inference, batch_size=16, workers=2, progress=False, keep_top5=True)
    assert (threaded.images, threaded.top1_correct, threaded.top5_correct) == \
        (sequential.images, sequential.top1_correct, sequential.top5_correct)
    assert threaded.top5 == sequential.top5


def test_verify_command_reports_a_bad_image_in_one_line(tmp_path: Path) -> None:
    from tests.test_runtime_cli import NET, _weights
    from caffe2torch.caffe_proto import read_prototxt, write_caffemodel

    (tmp_path / "net.prototxt").write_text(NET)
    write_caffemodel(read_prototxt(tmp_path / "net.prototxt"), _weights(), tmp_path / "net.caffemodel")
    folder = tmp_path / "images"
    folder.mkdir()
    images = _noise_images(folder, 6)
    (folder / "004.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "labels.txt").write_text("".join(f"{item.path.name} {item.label}\n" for item in images))
    for workers in ("0", "2"):
        result = CliRunner().invoke(main, ["verify", str(tmp_path / "net.prototxt"), str(tmp_path / "net.caffemodel"),
                                           "--images", str(folder), "--labels", str(tmp_path / "labels.txt"),
                                           "--preset", "senet", "--device", "cpu", "--batch-size", "2",
                                           "--workers", workers, "--quiet"])
        assert result.exit_code == 2, result.output
        assert result.stderr == f"error: {folder / '004.png'}: cannot decode the image (not a format OpenCV reads, " \
                                "or truncated)\n"
    assert not _loader_threads()


@pytest.mark.cuda
def test_cuda_batches_are_pinned_and_give_the_cpu_results(tmp_path: Path) -> None:
    images = _noise_images(tmp_path, 10)
    batches = _batches(images, SENET, batch_size=4, workers=2, pin_memory=True)
    assert all(images.is_pinned() and labels.is_pinned() for images, labels in batches)
    cuda, cpu = Inference(torch.device("cuda")), Inference(torch.device("cpu"))
    assert cuda.pin_memory
    on_gpu = evaluate(DominantChannel(), images, SENET, cuda, batch_size=4, workers=2, progress=False, keep_top5=True)
    on_cpu = evaluate(DominantChannel(), images, SENET, cpu, batch_size=4, workers=0, progress=False, keep_top5=True)
    assert on_gpu == on_cpu and on_gpu.top5 == on_cpu.top5


def test_no_fork_happens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forking a process that has run torch can hang (OpenMP): the loader only starts threads."""
    def refuse(*args: object, **kwargs: object) -> int:
        raise AssertionError("forked")

    monkeypatch.setattr(os, "fork", refuse)
    assert len(_batches(_noise_images(tmp_path, 4), SENET, batch_size=2, workers=2)) == 2
