"""Labelled image sets, their batches (prepared by worker threads), shards for data-parallel runs, and a
progress line."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, TextIO

import numpy as np
import torch

from caffe2torch.errors import Caffe2TorchError, InputError
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


@contextlib.contextmanager
def opencv_threads_stopped(stop: bool = True) -> Iterator[None]:
    """Run the body with OpenCV's own thread pool shut down (restored after).

    While images are decoded by worker threads, the workers are the parallelism: OpenCV's pool would only
    add threads that wait actively for work beside torch's, on the same cores.  It must also be stopped
    before a process is forked (torchrun-like tests do): a fork copies the parent's OpenCV pool without its
    threads, and the child then hangs inside OpenCV (seen: ``setNumThreads`` blocking in
    ``pthread_cond_destroy``).
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


def default_workers() -> int:
    """Image-decoding threads by default: one per CPU, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _Batch:
    """One batch being assembled: images are written into ``images`` (allocated by the first image to
    arrive, with its shape) at their slot, by whichever thread preprocessed them."""

    def __init__(self, items: Sequence[LabeledImage], pin_memory: bool) -> None:
        self.items = items
        self.pin_memory = pin_memory
        self.images: torch.Tensor | None = None
        self._array: np.ndarray | None = None  # numpy view of ``images``
        self._first: Path | None = None
        self._lock = threading.Lock()
        self.futures: list[Future] = []

    def put(self, slot: int, array: np.ndarray, path: Path) -> None:
        with self._lock:
            if self._array is None:
                dtype = torch.from_numpy(np.empty(0, array.dtype)).dtype
                self.images = torch.empty((len(self.items), *array.shape), dtype=dtype, pin_memory=self.pin_memory)
                self._array = self.images.numpy()
                self._first = path
            target = self._array
        if array.shape != target.shape[1:]:
            shape = "x".join(map(str, array.shape))
            first = "x".join(map(str, target.shape[1:]))
            raise InputError(f"{path}: preprocessed to {shape}, but {self._first} of the same batch to {first} "
                             "(the images of a batch need one size: give --crop, or --resize HxW)")
        np.copyto(target[slot], array, casting="same_kind")

    def labels(self) -> torch.Tensor:
        labels = torch.tensor([item.label for item in self.items], dtype=torch.int64)
        return labels.pin_memory() if self.pin_memory else labels


class BatchLoader:
    """Batches of preprocessed images and their labels, in the order of ``images``.

    ``preprocess`` maps an image path to the net's C x H x W array (float32).  With ``workers`` > 0, that
    many threads decode and preprocess ahead of the consumer (OpenCV's decoder and resizer and numpy's
    arithmetic release the GIL), each copying its image into its slot of the batch tensor, with at most
    ``prefetch`` batches prepared beyond the one being used; with 0 everything runs in the calling
    thread when a batch is asked for.  The same code fills the batches either way, so they are equal bit
    for bit.  ``pin_memory`` allocates the batches in pinned host memory (for non-blocking copies to a
    CUDA device).

    An image that cannot be read raises its :class:`InputError` (one line naming the file) from the
    iteration, the first such image in order, as the sequential path would; other exceptions from the
    preprocessing are turned into one naming the file.  Iterate through :meth:`batches` inside a ``with
    closing(...)`` (or to the end): on an error, ``break``, or Ctrl-C the queued images are dropped and
    the threads finish the image each has started, then stop.
    """

    def __init__(self, images: Sequence[LabeledImage], preprocess: Callable[[Path], np.ndarray], *,
                 batch_size: int, workers: int = 0, pin_memory: bool = False, prefetch: int = 2) -> None:
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, not {batch_size}")
        if workers < 0:
            raise InputError(f"workers must be 0 or more, not {workers}")
        if prefetch < 0:
            raise InputError(f"prefetch must be 0 or more, not {prefetch}")
        self.images = list(images)
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.workers = workers
        self.pin_memory = pin_memory
        self.prefetch = prefetch

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    def _load(self, batch: _Batch, slot: int) -> None:
        item = batch.items[slot]
        try:
            array = self.preprocess(item.path)
        except Caffe2TorchError:
            raise
        except Exception as error:  # cv2.error, MemoryError, a custom preprocess's bug: name the file
            raise InputError(f"{item.path}: {type(error).__name__}: {_first_line(error)}") from error
        batch.put(slot, np.asarray(array), item.path)

    def _chunks(self) -> Iterator[Sequence[LabeledImage]]:
        for start in range(0, len(self.images), self.batch_size):
            yield self.images[start:start + self.batch_size]

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images N x C x H x W, labels N) per batch, in order."""
        if self.workers == 0:
            for items in self._chunks():
                batch = _Batch(items, self.pin_memory)
                for slot in range(len(items)):
                    self._load(batch, slot)
                yield batch.images, batch.labels()
            return
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="caffe2torch-images")
        chunks = self._chunks()
        in_flight: collections.deque[_Batch] = collections.deque()

        def submit_next() -> None:
            items = next(chunks, None)
            if items is not None:
                batch = _Batch(items, self.pin_memory)
                batch.futures = [executor.submit(self._load, batch, slot) for slot in range(len(items))]
                in_flight.append(batch)

        try:
            for _ in range(self.prefetch + 1):
                submit_next()
            while in_flight:
                batch = in_flight.popleft()
                for future in batch.futures:
                    future.result()  # the worker's exception, raised here
                yield batch.images, batch.labels()
                submit_next()
        finally:
            for batch in in_flight:
                for future in batch.futures:
                    future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)


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
