"""Labelled image sets, their torch DataLoader, shards for data-parallel runs, and a progress line."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TextIO

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from caffe2torch.errors import InputError
from caffe2torch.runtime.labels import read_label_file

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class LabeledImage:
    """An image and its label; ``origin`` says where the label came from (``file:line``), for messages."""

    path: Path
    label: int
    origin: str


@dataclass(frozen=True)
class ImageSet:
    """Images with labels; ``label_order`` is the order the layout implies (``synset`` for wnid folders),
    ``None`` when only the user can tell (a label file); ``classes`` the number of classes the layout
    implies (class folders), ``None`` when unknown."""

    images: list[LabeledImage]
    label_order: str | None
    source: str  # the label file or folder, for messages
    classes: int | None = None
    skipped: int = 0  # listed images that are not in the folder (skip_missing)


def images_from_label_file(images_dir: str | Path, label_file: str | Path, *,
                           limit: int | None = None, skip_missing: bool = False) -> ImageSet:
    """The images a ``name label`` file lists, relative to ``images_dir``; the first ``limit`` ones only
    when given.  A listed image that does not exist is an error naming its line, or, with
    ``skip_missing`` (a folder holding part of a data set), left out and counted in ``skipped``."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: no such image folder")
    entries = read_label_file(label_file)
    images: list[LabeledImage] = []
    skipped = 0
    for entry in entries:
        if limit is not None and len(images) >= limit:
            break
        path = images_dir / entry.name
        if not path.is_file():
            if skip_missing:
                skipped += 1
                continue
            raise InputError(f"{label_file}:{entry.line}: image {entry.name!r} is not in {images_dir} "
                             "(--skip-missing evaluates the images that are)")
        images.append(LabeledImage(path, entry.label, f"{label_file}:{entry.line}"))
    if not images:
        raise InputError(f"{images_dir}: none of the {len(entries):,} images {label_file} lists is there")
    return ImageSet(images, None, str(label_file), skipped=skipped)


def images_from_class_folders(root: str | Path, *, limit: int | None = None) -> ImageSet:
    """The ``root/<wnid>/*.JPEG`` layout: class = rank of the wnid among the sorted folder names, so the
    set is in ``synset`` order and must have a folder for every class.  Files are taken in sorted order,
    class by class; ``limit`` keeps the first ones (use a label file for a balanced subset)."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not folders or not all(_WNID.fullmatch(p.name) for p in folders):
        raise InputError(f"{root}: expected one folder per class named by WordNet id (n01440764, ...)")
    images = []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images.extend(LabeledImage(path, label, str(folder)) for path in files)
    if not images:
        raise InputError(f"{root}: the class folders hold no images")
    return ImageSet(images[:limit] if limit is not None else images, "synset", str(root), len(folders))


def has_class_folders(root: str | Path) -> bool:
    root = Path(root)
    return root.is_dir() and any(p.is_dir() and _WNID.fullmatch(p.name) for p in root.iterdir())


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """This process's share of ``items``: every ``world_size``-th one from ``rank``.

    Shares differ in size by at most one and together cover every item exactly once (unlike
    DistributedSampler, which pads with repeats and would count some images twice).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return list(items[rank::world_size])


class ImageDataset(Dataset):
    """(preprocessed image, label) pairs; ``preprocess`` maps a path to a float32 C x H x W array."""

    def __init__(self, images: Sequence[LabeledImage], preprocess: Callable[[Path], np.ndarray]) -> None:
        self.images = list(images)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.images[index]
        return torch.from_numpy(self.preprocess(item.path)), item.label


@contextlib.contextmanager
def opencv_threads_stopped(stop: bool = True) -> Iterator[None]:
    """Run the body with OpenCV's own thread pool shut down (restored after).

    DataLoader workers are forked (on Linux).  A fork copies the parent's OpenCV pool without its
    threads, and the child then hangs inside OpenCV (seen: ``setNumThreads`` blocking in
    ``pthread_cond_destroy``).  With the pool stopped in the parent while workers are forked, they start
    clean and single-threaded, which is what a worker should be anyway: the workers are the parallelism.
    """
    if not stop:
        yield
        return
    try:
        import cv2
    except ImportError:
        yield
        return
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def make_loader(dataset: Dataset, *, batch_size: int, workers: int, pin_memory: bool) -> DataLoader:
    """Batches in dataset order, decoded by ``workers`` processes (0: in this process).  Iterate it inside
    :func:`opencv_threads_stopped` when ``workers`` > 0."""
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    if workers < 0:
        raise InputError(f"workers must be 0 or more, not {workers}")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=pin_memory, prefetch_factor=4 if workers else None)


class Progress:
    """A one-line progress report on stderr: done/total, images per second, time left.

    Plain text rewritten with ``\\r``; silent when ``enabled`` is false or the stream is not a terminal
    (logs stay clean).
    """

    def __init__(self, total: int, *, enabled: bool = True, stream: TextIO | None = None,
                 unit: str = "images", interval: float = 0.25) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total = total
        self.unit = unit
        self.interval = interval
        self.done = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw >= self.interval or self.done >= self.total):
            self._last_draw = now
            self.stream.write("\r" + self.line(now - self.start))
            self.stream.flush()

    def line(self, elapsed: float) -> str:
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        minutes, seconds = divmod(int(left), 60)
        return (f"{self.done:,}/{self.total:,} {self.unit}  {rate:,.1f} {self.unit}/s  "
                f"ETA {minutes}:{seconds:02d} ")

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
