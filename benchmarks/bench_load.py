"""How fast, and in how much memory, a Caffe net is loaded: caffe2torch.load against OpenCV's reader.

Writes the net's prototxt and a caffemodel of seeded weights (caffe2torch.testing.seeded_weights, by our
writer) into a temporary directory, then measures, each run in a fresh subprocess (so imports and earlier
runs do not mix into its peak memory) with NUMPY_MADVISE_HUGEPAGE=0 and Python's bytecode cache on (as installed):

- imports: ``import torch, caffe2torch`` alone: the memory every load starts from;
- caffe2torch.load(prototxt, caffemodel): the whole load (read, convert, parameters), with its phases:
  reading the weights (read_weights), the converters' parameters (LayerContext.blob: checks, the float32
  copy out of the file), shape inference (build._infer_shapes) and the rest (prototxt, zoo identification,
  modules, fx graph, lazy imports);
- the same load as the second in its process, after loading a small net (so that whatever a first load
  imports lazily is already there): the load's own time and memory;
- cv2.dnn.readNetFromCaffe(prototxt, caffemodel), after ``import cv2``.

Time is that of the load call alone (the imports named above excluded; whatever the load imports lazily
included); peak memory is the process's VmHWM (resident set high-water mark, imports included), also
shown above the imports' own resident set. Median of --runs runs, page cache warm. Ratios: time against
OpenCV's, peak memory against the caffemodel's size (target: load peak at most 1.3x the file).

Then ``caffe2torch info lenet.prototxt`` (the console script beside this python) against ``python -c
"import torch"``, wall time of each process (target: at most 1.5x).

    PYTHONPATH=. python benchmarks/bench_load.py [--net senet154|se_resnext50|lenet] [--runs 5]
    PYTHONPATH=. python benchmarks/bench_load.py --prototxt net.prototxt --caffemodel net.caffemodel
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT.parent / "shared" / "realmodels" / "lenet"
SEED = 154
MEMORY_TARGET = 1.3  # load peak memory at most this many times the caffemodel's size
INFO_TARGET = 1.5  # `caffe2torch info lenet.prototxt` at most this many times `python -c "import torch"`
ZOO_NETS = ("senet154", "se_resnext50")
# Loaded (randomly initialised) before the measured load in "ours_warm": a layer of each common kind.
WARM_UP_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "sigmoid" type: "Sigmoid" bottom: "pool" top: "gate" }
layer { name: "axpy" type: "Axpy" bottom: "gate" bottom: "conv" bottom: "conv" top: "axpy" }
layer { name: "eltwise" type: "Eltwise" bottom: "axpy" bottom: "conv" top: "sum" }
layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def peak_memory() -> int:
    return _status("VmHWM")


def resident_memory() -> int:
    return _status("VmRSS")


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


# --- in the child -------------------------------------------------------------------------------------


def _timed(owner, name: str, totals: dict, key: str) -> None:
    """Wrap ``owner.name`` so that the time spent in it (outermost calls only) adds up in totals[key]; a
    function that is not there (the code changed) is left out of the phases."""
    function = getattr(owner, name, None)
    if function is None:
        del totals[key]
        return
    depth = [0]

    def wrapper(*args, **kwargs):
        depth[0] += 1
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                totals[key] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def measure(method: str, prototxt: str, caffemodel: str) -> dict:
    """Run one method in this (fresh) process: its time, the process's peak memory, the imports' memory."""
    phases: dict[str, float] = {}
    if method == "imports":
        import caffe2torch  # noqa: F401
        import torch  # noqa: F401

        return {"seconds": 0.0, "peak_bytes": peak_memory(), "base_bytes": resident_memory(), "phases": phases}
    if method == "ours":
        import torch  # noqa: F401

        import caffe2torch

        base = resident_memory()
        start = time.perf_counter()
        model = caffe2torch.load(prototxt, caffemodel)
        elapsed = time.perf_counter() - start
        del model
    elif method == "ours_phases":  # the same load with its phases timed (the wrappers cost a little)
        import torch  # noqa: F401

        import caffe2torch
        import caffe2torch.converter as converter
        from caffe2torch.converter import build, registry

        phases = {"read_weights": 0.0, "blobs": 0.0, "shape_inference": 0.0}
        _timed(converter, "resolve_weights", phases, "read_weights")
        _timed(registry.LayerContext, "blob", phases, "blobs")
        _timed(build, "_infer_shapes", phases, "shape_inference")
        base = resident_memory()
        start = time.perf_counter()
        caffe2torch.load(prototxt, caffemodel)
        elapsed = time.perf_counter() - start
    elif method == "ours_warm":  # a second load in a process: whatever a first load imports lazily is there
        import torch  # noqa: F401

        import caffe2torch
        from caffe2torch.caffe_proto import parse_prototxt

        caffe2torch.load(parse_prototxt(WARM_UP_NET), random_init=True)
        base = resident_memory()
        start = time.perf_counter()
        caffe2torch.load(prototxt, caffemodel)
        elapsed = time.perf_counter() - start
    elif method == "opencv":
        import cv2

        base = resident_memory()
        start = time.perf_counter()
        cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
        elapsed = time.perf_counter() - start
    else:
        raise SystemExit(f"unknown method {method}")
    return {"seconds": elapsed, "peak_bytes": peak_memory(), "base_bytes": base, "phases": phases}


# --- in the parent -------------------------------------------------------------------------------------


def child_environment(**settings: str) -> dict[str, str]:
    """This environment for a measured process, with this checkout importable and Python's bytecode cache on,
    as it is for an installed copy (pip compiles the bytecode): under PYTHONDONTWRITEBYTECODE every process
    would compile caffe2torch's sources again, 0.06 s that no user pays."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), **settings)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_child(method: str, prototxt: Path, caffemodel: Path) -> dict:
    env = child_environment(NUMPY_MADVISE_HUGEPAGE="0")
    result = subprocess.run(
        [sys.executable, __file__, "--measure", method, str(prototxt), str(caffemodel)],
        env=env, capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"bench_load: {method} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_zoo_net(name: str, directory: Path) -> tuple[Path, Path]:
    """The zoo net's prototxt and a caffemodel of seeded weights (BatchNorms calibrated), in ``directory``."""
    from caffe2torch.caffe_proto import write_caffemodel
    from caffe2torch.testing import seeded_weights, smooth_images
    from caffe2torch.zoo import export_prototxt, get

    prototxt = export_prototxt(name, directory / f"{name}.prototxt")
    net = get(name).build()
    print(f"writing seeded weights for {name} ...", file=sys.stderr)
    weights = seeded_weights(net, smooth_images(1, seed=SEED), seed=SEED)
    caffemodel = directory / f"{name}.caffemodel"
    write_caffemodel(net, weights, caffemodel)
    return prototxt, caffemodel


def info_command(prototxt: Path) -> list[str]:
    """`caffe2torch info PROTOTXT`: the console script installed beside this python, else -m."""
    script = Path(sys.executable).with_name("caffe2torch")
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "caffe2torch.cli"]
    return [*prefix, "info", str(prototxt)]


def wall_time(command: list[str]) -> float:
    env = child_environment()
    start = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def bench_info(runs: int) -> None:
    prototxt = LENET / "lenet.prototxt"
    if not prototxt.exists():
        print(f"info: {prototxt} is missing; skipped")
        return
    info, torch_only = info_command(prototxt), [sys.executable, "-c", "import torch"]
    wall_time(torch_only)  # warm the page cache
    wall_time(info)
    info_times, torch_times = [], []
    for _ in range(runs):  # interleaved, so that a busy machine slows both alike
        torch_times.append(wall_time(torch_only))
        info_times.append(wall_time(info))
    ours, base = statistics.median(info_times), statistics.median(torch_times)
    print(f"`caffe2torch info lenet.prototxt` {ours:.3f} s, `python -c \"import torch\"` {base:.3f} s: "
          f"{ours / base:.2f}x (target <= {INFO_TARGET}x: {'met' if ours <= INFO_TARGET * base else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="senet154", choices=[*ZOO_NETS, "lenet"],
                        help="a zoo net with seeded weights, or LeNet's real files from ../shared/realmodels/lenet")
    parser.add_argument("--prototxt", type=Path, help="measure this prototxt (with --caffemodel) instead of --net")
    parser.add_argument("--caffemodel", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-opencv", action="store_true", help="leave out OpenCV (a net it cannot read)")
    parser.add_argument("--no-info", action="store_true", help="leave out the `caffe2torch info` timing")
    parser.add_argument("--keep", type=Path, help="write the zoo net's files here (kept) instead of a temporary dir")
    parser.add_argument("--measure", nargs=3, metavar=("METHOD", "PROTOTXT", "CAFFEMODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if (args.prototxt is None) != (args.caffemodel is None):
        parser.error("--prototxt and --caffemodel go together")

    with contextlib.ExitStack() as stack:
        if args.prototxt is not None:
            prototxt, caffemodel, label = args.prototxt, args.caffemodel, str(args.prototxt)
        elif args.net == "lenet":
            prototxt, caffemodel, label = LENET / "lenet.prototxt", LENET / "lenet_iter_10000.caffemodel", "LeNet"
        else:
            if args.keep is not None:
                directory = args.keep
                directory.mkdir(parents=True, exist_ok=True)
            else:
                directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_load_")))
            prototxt, caffemodel = directory / f"{args.net}.prototxt", directory / f"{args.net}.caffemodel"
            if not (prototxt.exists() and caffemodel.exists()):
                prototxt, caffemodel = write_zoo_net(args.net, directory)
            label = f"{args.net} (seeded weights)"
        run_benchmark(args, prototxt, caffemodel, label)
    if not args.no_info:
        bench_info(args.runs)


def run_benchmark(args, prototxt: Path, caffemodel: Path, label: str) -> None:
    size = caffemodel.stat().st_size
    methods = ["imports", "ours", "ours_phases", "ours_warm"] + ([] if args.no_opencv else ["opencv"])
    run_child("imports", prototxt, caffemodel)  # warm the page cache
    runs: dict[str, list[dict]] = {method: [] for method in methods}
    for _ in range(args.runs):  # interleaved, so that a busy machine slows every method alike
        for method in methods:
            runs[method].append(run_child(method, prototxt, caffemodel))

    def median(method: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[method])

    def above_base(method: str) -> float:
        """The call's own peak: the process's peak less its resident set when the call began."""
        return statistics.median(run["peak_bytes"] - run["base_bytes"] for run in runs[method])

    opencv_seconds = median("opencv", "seconds") if "opencv" in runs else float("nan")
    print(f"{label}: {caffemodel.name} {size / 2**20:.1f} MiB, median of {args.runs} runs, each in its own process")
    print(f"{'method':37s} {'time s':>8s} {'x OpenCV':>8s} {'peak MiB':>9s} {'x file':>7s} "
          f"{'base MiB':>9s} {'peak-base':>10s} {'x file':>7s}")
    names = {"imports": "import torch, caffe2torch", "ours": "caffe2torch.load",
             "ours_phases": "caffe2torch.load (phases timed)", "ours_warm": "caffe2torch.load, second in process",
             "opencv": "cv2.dnn.readNetFromCaffe"}
    for method in methods:
        seconds, peak, base = median(method, "seconds"), median(method, "peak_bytes"), median(method, "base_bytes")
        own = above_base(method)
        print(f"{names[method]:37s} {seconds:8.3f} {seconds / opencv_seconds:8.2f} {peak / 2**20:9.1f} "
              f"{peak / size:7.3f} {base / 2**20:9.1f} {own / 2**20:10.1f} {own / size:7.3f}")
    total = median("ours_phases", "seconds")
    phases = {key: statistics.median(run["phases"][key] for run in runs["ours_phases"])
              for key in runs["ours_phases"][0]["phases"]}
    rest = total - sum(phases.values())
    shown = ", ".join(f"{key} {value:.3f} s" for key, value in phases.items())
    print(f"load phases (each with what it imports lazily): {shown}, the rest (prototxt, zoo check, modules, "
          f"fx graph, other lazy imports) {rest:.3f} s")
    peak = median("ours", "peak_bytes")
    print(f"target: load peak memory <= {MEMORY_TARGET}x the caffemodel: "
          f"{'met' if peak <= MEMORY_TARGET * size else 'MISSED'} ({peak / size:.3f}x of which the imports "
          f"{median('ours', 'base_bytes') / size:.3f}x; the load itself {above_base('ours') / size:.3f}x, "
          f"{above_base('ours_warm') / size:.3f}x as a second load)")


if __name__ == "__main__":
    main()
