"""How close ``caffe2torch verify`` comes to ``caffe2torch bench``: verify's images/s (reading, decoding,
resizing and preprocessing every image, the forward pass, counting) against bench's (the forward pass alone,
on random inputs, after a warm-up), at the same batch size, measured in one process with the two alternated
round by round; the medians and their ratio are reported (the issue's target: verify >= 0.9x bench).

The images are the 100 ImageNet validation JPEGs of ../shared/realmodels/imagenet-val-100, each listed
``--repeat`` times (symbolic links in a temporary folder, labels from ../shared/senet/ILSVRC2017_val.txt); the
net is a zoo net (SE-ResNeXt-50 by default) with seeded weights written to a caffemodel
(caffe2torch.testing.seeded_weights: speed does not depend on the values; the errors verify measures with
them mean nothing).  verify runs once per ``--workers`` value in each round, through
caffe2torch.runtime.verify.verify, which is what the command calls, and its own images/s is taken (the time
of the evaluation, as the command reports it).

Before timing, a profile pass prepares two batches in this thread, step by step, and runs the net on them:
milliseconds per image of reading+decoding, resizing, crop/convert/mean, copying into the batch, the
forward pass (the first batch of a size may be slower, oneDNN preparing its kernels, so it is shown apart)
and the counting, and the share of each.  After the rounds, one evaluation per ``--workers`` value with the
net's calls timed says which share of verify's time is the forward pass.

Other processes on the machine distort the figures: before each measurement the benchmark waits (up to
``--quiet-wait`` seconds) for them to use less than ``--quiet-below`` of the CPU, prints the share they
used during it, and reports besides the ratio of the medians the median of each round's ratio (a verify
run against the bench run of its round).  The net is not equally fast on every input (SE-ResNeXt-50 with
seeded weights runs real images faster than bench's random ones), so the same forward passes on the same
images, preprocessed beforehand, are timed too ("forward, same images"): verify against them is the cost
of the data path alone.

    python benchmarks/bench_verify.py [--net se_resnext50] [--batch-size 32] [--repeat 3] [--rounds 3]
                                      [--workers 0 2] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caffe2torch import zoo
from caffe2torch.caffe_proto import write_caffemodel
from caffe2torch.optimize import keep_freed_memory
from caffe2torch.runtime.bench import bench
from caffe2torch.runtime.data import LabeledImage, default_workers
from caffe2torch.runtime.device import Inference, choose_device
from caffe2torch.runtime.evaluate import correct_counts, evaluate
from caffe2torch.runtime.preprocess import decode_image, resize_image, resized_size
from caffe2torch.runtime.session import open_session
from caffe2torch.runtime.verify import verify
from caffe2torch.testing import seeded_weights, smooth_images
from cpu_share import CpuShare  # beside this script

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT.parent / "shared" / "realmodels" / "imagenet-val-100"
SENET_LABELS = ROOT.parent / "shared" / "senet" / "ILSVRC2017_val.txt"
TARGET_RATIO = 0.9


def wait_for_quiet(threshold: float, timeout: float, interval: float = 2.0) -> float | None:
    """Wait (at most ``timeout`` seconds) until other processes use less than ``threshold`` of the CPU over
    ``interval``; the share last seen (None where /proc is absent)."""
    deadline = time.perf_counter() + timeout
    while True:
        with CpuShare() as share:
            time.sleep(interval)
        if share.others is None or share.others < threshold or time.perf_counter() >= deadline:
            return share.others


def make_image_set(folder: Path, repeat: int) -> tuple[Path, Path]:
    """A folder of links to the 100 images, ``repeat`` times over, and its label file (SENet order)."""
    labels = dict(line.split() for line in SENET_LABELS.read_text().splitlines() if line.strip())
    images = folder / "images"
    images.mkdir()
    lines = []
    for copy in range(repeat):
        for source in sorted(IMAGES.glob("*.JPEG")):
            name = f"{copy}_{source.name}"
            (images / name).symlink_to(source)
            lines.append(f"{name} {labels[source.name]}\n")
    label_file = folder / "labels.txt"
    label_file.write_text("".join(lines))
    return images, label_file


def profile(session: Any, paths: list[Path], batch_size: int, batches: int = 2) -> dict[str, float]:
    """Milliseconds per image of each step, in this thread, over ``batches`` batches."""
    preprocess = session.preprocessor()
    times = dict.fromkeys(["read+decode", "resize", "crop/convert/mean", "copy into batch",
                           "forward (first batch)", "forward (later batches)", "counting"], 0.0)
    counted = dict.fromkeys(times, 0)
    for index in range(batches):
        chunk = paths[index * batch_size:(index + 1) * batch_size]
        batch = np.empty((len(chunk), 3, *preprocess.crop), np.float32)
        for slot, path in enumerate(chunk):
            start = time.perf_counter()
            image = decode_image(path)
            decoded = time.perf_counter()
            resize_image(image, resized_size(*image.shape[:2], preprocess.resize), preprocess.preset.interpolation)
            resized = time.perf_counter()
            array = preprocess.transform(image)  # resizes again: its resize time is taken off below
            transformed = time.perf_counter()
            np.copyto(batch[slot], array)
            copied = time.perf_counter()
            for key, seconds in (("read+decode", decoded - start), ("resize", resized - decoded),
                                 ("crop/convert/mean", (transformed - resized) - (resized - decoded)),
                                 ("copy into batch", copied - transformed)):
                times[key] += seconds
                counted[key] += 1
        start = time.perf_counter()
        scores = session.scores(torch.from_numpy(batch))
        session.inference.synchronize()
        forward = time.perf_counter()
        correct_counts(scores, torch.zeros(len(chunk), dtype=torch.int64, device=scores.device)).tolist()
        done = time.perf_counter()
        key = "forward (first batch)" if index == 0 else "forward (later batches)"
        times[key] += forward - start
        counted[key] += len(chunk)
        times["counting"] += done - forward
        counted["counting"] += len(chunk)
    return {key: 1000.0 * times[key] / counted[key] for key in times if counted[key]}


class Timed(torch.nn.Module):
    """``model`` with the seconds of its calls added up (device work included)."""

    def __init__(self, model: torch.nn.Module, inference: Inference) -> None:
        super().__init__()
        self.model, self.inference, self.seconds = model, inference, 0.0

    def forward(self, *inputs: torch.Tensor) -> Any:
        start = time.perf_counter()
        result = self.model(*inputs)
        self.inference.synchronize()
        self.seconds += time.perf_counter() - start
        return result


def forward_share(session: Any, paths: list[Path], batch_size: int, workers: int) -> float:
    """The share of an evaluation's time that the net's forward passes take."""
    timed = Timed(session.runnable, session.inference)
    images = [LabeledImage(path, 0, str(path)) for path in paths]
    start = time.perf_counter()
    evaluate(timed, images, session.preprocessor(), session.inference, batch_size=batch_size, workers=workers,
             progress=False)
    return timed.seconds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="se_resnext50", choices=list(zoo.MODELS), help="zoo net")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="times each of the 100 images is listed")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of bench and verify")
    parser.add_argument("--workers", type=int, nargs="+", help=f"verify's --workers values (default: 0 and "
                        f"the command's default, {default_workers()} here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--quiet-below", type=float, default=0.1, help="before each measurement, wait until "
                        "other processes use less than this share of the CPU ...")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="... for at most this many seconds")
    parser.add_argument("--json", type=Path, help="also write the medians and ratios here")
    args = parser.parse_args()
    if not IMAGES.is_dir() or not SENET_LABELS.is_file():
        raise SystemExit(f"needs {IMAGES} and {SENET_LABELS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = args.workers if args.workers is not None else sorted({0, default_workers()})
    keep_freed_memory()  # as the verify and bench commands do in their own processes (caffe2torch.cli.run)
    entry = zoo.get(args.net)
    inference = Inference(choose_device(args.device))
    print(f"{entry.title}, seeded weights, fp32 on {inference.device}, batch {args.batch_size}, "
          f"{100 * args.repeat} images, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory(prefix="bench-verify-") as temporary:
        folder = Path(temporary)
        net = entry.build()
        caffemodel = folder / "weights.caffemodel"
        write_caffemodel(net, seeded_weights(net, smooth_images(2, seed=1)), caffemodel)
        images, labels = make_image_set(folder, args.repeat)
        session = open_session(args.net, caffemodel, inference)
        steps = profile(session, sorted(images.iterdir()), args.batch_size)
        total = sum(value for key, value in steps.items() if key != "forward (first batch)")
        print("\nprofile, this thread, ms per image (share of a steady batch's time):")
        for key, value in steps.items():
            share = "" if key == "forward (first batch)" else f"  ({value / total:.1%})"
            print(f"  {key:<26}{value:8.2f}{share}")

        def run_bench() -> float:
            iterations = max(1, -(-100 * args.repeat // args.batch_size))
            result = bench(session.runnable, session.input_shapes, inference, batch_size=args.batch_size,
                           iterations=iterations, warmup=2)
            return result.images_per_second

        # The same forward passes as verify's, on the same images preprocessed beforehand: bench runs random
        # inputs, and the net is not equally fast on every input.
        preprocess = session.preprocessor()
        ordered = [images / line.split()[0] for line in labels.read_text().splitlines()]
        real_batches = [torch.from_numpy(np.stack([preprocess(path) for path in ordered[i:i + args.batch_size]]))
                        for i in range(0, len(ordered), args.batch_size)]

        def run_forward_real() -> float:
            inference(session.runnable, real_batches[0])  # warm-up, as bench's
            inference.synchronize()
            start = time.perf_counter()
            for batch in real_batches:
                inference(session.runnable, batch)
            inference.synchronize()
            return len(ordered) / (time.perf_counter() - start)

        def run_verify(count: int) -> float:
            result = verify(args.net, caffemodel, images, labels, batch_size=args.batch_size, device=args.device,
                            workers=count, progress=False)
            return float(result.details["images_per_second"])

        runners = {"bench": run_bench, "forward, same images": run_forward_real,
                   **{f"verify --workers {w}": (lambda w=w: run_verify(w)) for w in workers}}
        rates: dict[str, list[float]] = {name: [] for name in runners}
        others: list[float] = []
        print()
        for round_ in range(args.rounds):
            names = list(runners)
            names = names[round_ % len(names):] + names[:round_ % len(names)]  # nobody always runs first
            for name in names:
                wait_for_quiet(args.quiet_below, args.quiet_wait)
                with CpuShare() as share:
                    rate = runners[name]()
                rates[name].append(rate)
                if share.others is not None:
                    others.append(share.others)
                print(f"round {round_ + 1}: {name:<20}{rate:8.2f} images/s"
                      + (f"  (other processes: {share.others:.0%} of the CPU)" if share.others is not None else ""),
                      flush=True)
        print()
        shares = {}
        for count in workers:
            wait_for_quiet(args.quiet_below, args.quiet_wait)
            with CpuShare() as share:
                shares[count] = forward_share(session, sorted(images.iterdir()), args.batch_size, count)
            print(f"a verify run with --workers {count}: the forward passes take {shares[count]:.1%} of its time"
                  + (f"  (other processes: {share.others:.0%} of the CPU)" if share.others is not None else ""))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"\nmedians of {args.rounds} rounds, batch {args.batch_size}:")
    report: dict[str, Any] = {"net": args.net, "device": str(inference.device), "batch_size": args.batch_size,
                              "images": 100 * args.repeat, "threads": torch.get_num_threads(), "profile_ms": steps,
                              "forward_share": shares,
                              "rates": rates, "medians": medians, "ratios": {},
                              "other_processes_cpu_share_max": max(others) if others else None}
    for name, median in medians.items():
        print(f"  {name:<22}{median:8.2f} images/s")
    for name, median in medians.items():
        if not name.startswith("verify"):
            continue
        report["ratios"][name] = {}
        for baseline in ("bench", "forward, same images"):
            ratio = median / medians[baseline]
            # each verify run against the baseline's run of its round: less exposed to load that comes and goes
            paired = statistics.median(v / b for v, b in zip(rates[name], rates[baseline]))
            report["ratios"][name][baseline] = {"of_medians": ratio, "median_of_rounds": paired}
            met = "meets" if ratio >= TARGET_RATIO else "misses"
            verdict = f" ({met} {TARGET_RATIO}x)" if baseline == "bench" else ""
            print(f"  {name} / {baseline}: {ratio:.2f}x{verdict}; median of the rounds' ratios {paired:.2f}x")
    if others and max(others) > 0.1:
        print(f"note: other processes used up to {max(others):.0%} of the CPU during a measurement; repeat on a "
              "quiet machine for figures to rely on")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
