"""How fast a converted net's forward pass is on the CPU: caffe2torch.optimize() against the faithful graph,
ONNX Runtime and OpenCV's dnn, measured in one process with the contenders alternated.

The net is a zoo net (SE-ResNeXt-50 by default) with seeded weights (caffe2torch.testing.seeded_weights:
speed does not depend on the values, but they make the agreement check below mean something), fp32,
N x 3 x 224 x 224 inputs.  Contenders:

- faithful: the graph caffe2torch.load() returns (every Caffe layer a module, every blob available);
- optimized: caffe2torch.optimize(model) with its default memory format (``optimized-nchw``, with
  ``--formats``, is channels_last=False: what the default was chosen against);
- compiled: what ``caffe2torch bench --compile`` runs: torch.compile (inductor) of the optimized graph
  prepared for compilation (NCHW; inductor chooses its own layouts and reorders weights itself), compiled
  during the warm-up call;
- onnxruntime: the faithful net exported by caffe2torch.export(formats=("onnx",)), run by ONNX Runtime's
  CPU provider with all graph optimizations (its own folding and fusions), when onnxruntime is installed;
- opencv: OpenCV's dnn (4.x) on the deploy prototxt and a caffemodel of the same weights, with its own
  defaults (layer fusion and Winograd on).  Its importer gets the release's Axpy wrong (and fails on it
  beyond batch 1), so Axpy runs as caffe2torch.runtime.reference runs it: a Python layer computing
  ``a * x + y`` in numpy, one pass per SE block.

Each batch size runs every contender once to warm up, then ``--rounds`` rounds of one call each, in turn.
Reported: the medians with their ratios (a contender's median / optimized's: above 1, optimized is faster),
the paired ratios (the median over rounds of the two times of one round: what the targets are checked on),
the fastest calls (which other processes disturb least) with theirs, and the CPU time of a call (median; all
threads, user and kernel: with 2 threads at most twice the wall time when nothing waits).

``--keep-freed-memory`` first makes glibc's malloc keep freed memory for reuse
(caffe2torch.optimize.keep_freed_memory): by default the kernel zeroes and faults in fresh pages for every
large intermediate tensor of every forward pass, which costs eager PyTorch (faithful and optimized) a third
of its time at batch 32.

Other processes on the machine distort the figures, eager PyTorch's (OpenMP) most: the share of the CPU
they took during the kept rounds is printed, and ``--max-others 0.1`` drops and reruns every round during
which they took more than 10% (for up to ``--budget`` seconds per batch size).

    python benchmarks/bench_forward.py [--net se_resnext50] [--batch 1 8 32] [--threads 2] [--keep-freed-memory]
        [--contenders faithful optimized optimized-nchw onnxruntime opencv] [--max-others 0.1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import caffe2torch
from caffe2torch import zoo
from caffe2torch.runtime.device import Inference
from caffe2torch.runtime.session import inference_graph
from caffe2torch.testing import seeded_weights, smooth_images
from cpu_share import CpuShare  # beside this script

# The targets at 2 threads: optimized at batch 8 at least as fast as ONNX Runtime and 1.5x the
# faithful graph; time per image at batch 32 at most 1.1x that at batch 8; compiled at least 1.3x ONNX Runtime.
TARGET_VS_ORT, TARGET_VS_FAITHFUL, TARGET_BATCH_32_PER_IMAGE = 1.0, 1.5, 1.1
TARGET_COMPILED_VS_ORT = 1.3
DEFAULT_ROUNDS = {1: 15, 8: 7, 32: 4}

Runner = Callable[[np.ndarray], np.ndarray]
_AXPY_REGISTERED = False


def torch_runner(model: torch.nn.Module, output: str) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            result = model(torch.from_numpy(x))
        return (result[output] if isinstance(result, dict) else result).numpy()

    return run


def onnxruntime_runner(model: Any, directory: Path, threads: int, output: str) -> Runner | None:
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed: no ONNX Runtime contender")
        return None
    paths = caffe2torch.export(model, directory / "onnx", formats=("onnx",))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(paths["model.onnx"]), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run([output], {name: x})[0]


def opencv_runner(model: Any, weights: dict, directory: Path, batch: int, threads: int,
                  output: str) -> Runner | None:
    try:
        import cv2
    except ImportError:
        print("OpenCV is not installed: no OpenCV contender")
        return None
    if not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        print(f"OpenCV {cv2.__version__} has no Caffe importer: no OpenCV contender")
        return None
    from caffe2torch.runtime.reference import AXPY_TYPE, OpenCVAxpy

    cv2.setNumThreads(threads)
    global _AXPY_REGISTERED
    if not _AXPY_REGISTERED:
        cv2.dnn_registerLayer(AXPY_TYPE, OpenCVAxpy)  # for this process's lifetime
        _AXPY_REGISTERED = True
    prototxt, caffemodel = directory / f"deploy_{batch}.prototxt", directory / "weights.caffemodel"
    name = model.input_names[0]
    text = model.deploy.prototxt({name: (batch, *model.input_shapes[0][1:])}, layer_types={"Axpy": AXPY_TYPE})
    prototxt.write_text(text, encoding="utf-8")
    if not caffemodel.exists():
        model.deploy.write_caffemodel(weights, caffemodel)
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    blob = model.deploy.output(output).blob

    def run(x: np.ndarray) -> np.ndarray:
        net.setInput(x, name)
        return net.forward(blob)

    return run


@dataclass
class Measured:
    """Seconds per call of each runner, wall clock and this process's CPU time (all its threads, user and
    kernel), over the rounds kept; each runner's result; the rounds dropped as disturbed; the share of the CPU
    other processes took during the kept rounds."""

    times: dict[str, list[float]]
    cpu: dict[str, list[float]]
    results: dict[str, np.ndarray]
    dropped: int
    others: float | None


def measure(runners: dict[str, Runner], x: np.ndarray, rounds: int, *, max_others: float | None = None,
            budget_s: float = 0.0) -> Measured:
    """Each runner called once per round, in turn (starting one further each round, so that nobody always
    runs first).  With ``max_others``, a round during which other processes took more of the CPU is dropped
    and another one run, until ``rounds`` are kept or ``budget_s`` seconds have passed."""
    results = {name: run(x) for name, run in runners.items()}  # warm-up (and oneDNN's weight reorders)
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    kept, dropped, others, deadline = 0, 0, [], time.perf_counter() + budget_s
    while kept < rounds:
        names = list(runners)
        names = names[(kept + dropped) % len(names):] + names[:(kept + dropped) % len(names)]
        round_times, round_cpu = {}, {}
        with CpuShare() as share:
            for name in names:
                start, start_cpu = time.perf_counter(), time.process_time()
                runners[name](x)
                round_times[name] = time.perf_counter() - start
                round_cpu[name] = time.process_time() - start_cpu
        disturbed = max_others is not None and share.others is not None and share.others > max_others
        if disturbed and time.perf_counter() < deadline:  # past the budget, disturbed rounds count
            dropped += 1
            continue
        for name in names:
            times[name].append(round_times[name])
            cpu[name].append(round_cpu[name])
        if share.others is not None:
            others.append(share.others)
        kept += 1
    return Measured(times, cpu, results, dropped, statistics.mean(others) if others else None)


def paired(times: dict[str, list[float]], slower: str, faster: str) -> float:
    """The median over rounds of ``slower``'s time / ``faster``'s in the same round: the machine's speed drifts
    (other tenants of its host, its clock), and the contenders of one round ran within a second of each other,
    so this ratio moves less than the ratio of the medians."""
    return statistics.median(a / b for a, b in zip(times[slower], times[faster]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default="se_resnext50", choices=list(zoo.MODELS), help="zoo net")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes")
    parser.add_argument("--threads", type=int, default=2, help="threads of every contender")
    parser.add_argument("--rounds", type=int, help="timed calls per contender and batch (default: 15/7/4 "
                                                   "for batch 1/8/32, 4 above)")
    parser.add_argument("--contenders", nargs="+", default=["faithful", "optimized", "onnxruntime", "opencv"],
                        choices=["faithful", "optimized", "optimized-nchw", "compiled", "onnxruntime", "opencv"])
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="first call caffe2torch.optimize.keep_freed_memory() (glibc keeps freed memory for "
                             "reuse: no kernel page zeroing at every forward pass; process-wide)")
    parser.add_argument("--max-others", type=float, metavar="SHARE",
                        help="drop (and rerun) a round during which other processes took more than this share of "
                             "the CPU (0.1: 10%%), within --budget")
    parser.add_argument("--budget", type=float, default=1800.0, metavar="SECONDS",
                        help="per batch size, how long to keep rerunning disturbed rounds (default 1800)")
    parser.add_argument("--json", type=Path, help="also write the medians and ratios here")
    args = parser.parse_args()
    if args.keep_freed_memory:
        from caffe2torch.optimize import keep_freed_memory

        if not keep_freed_memory():
            parser.error("--keep-freed-memory needs glibc's malloc")

    torch.set_num_threads(args.threads)
    entry = zoo.get(args.net)
    net = entry.build()
    calibration = smooth_images(2, seed=1)
    weights = seeded_weights(net, calibration)
    model = caffe2torch.load(net, weights)
    output = next(iter(model.output_shapes))
    logits = [layer for layer in net.layer if layer.type == "Softmax"][-1].bottom[0]
    optimized = {"optimized": caffe2torch.optimize(model)}
    if "optimized-nchw" in args.contenders:
        optimized["optimized-nchw"] = caffe2torch.optimize(model, channels_last=False)
    if "compiled" in args.contenders:  # what `caffe2torch bench --compile` runs
        compiled = Inference(torch.device("cpu"), compile=True)
        optimized["compiled"] = compiled.prepare(inference_graph(model, compiled))
    versions = [f"torch {torch.__version__}"]
    for package in ("onnxruntime", "cv2"):
        try:
            versions.append(f"{package} {__import__(package).__version__}")
        except ImportError:
            pass
    print(f"{entry.title}, seeded weights, fp32, {args.threads} threads, default optimize(): "
          f"channels_last={optimized['optimized'].channels_last}, freed memory "
          f"{'kept by malloc' if args.keep_freed_memory else 'returned to the kernel (glibc default)'}; "
          f"{', '.join(versions)}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")

    # The probabilities hide differences in the logits: compare those once, before timing.
    check = smooth_images(2, seed=2)
    with_logits = caffe2torch.load(net, weights, outputs=[logits], input_shape=check.shape)
    with torch.inference_mode():
        difference = (caffe2torch.optimize(with_logits)(torch.from_numpy(check))[logits]
                      - with_logits(torch.from_numpy(check))[logits]).abs().max()
    print(f"logits ({logits!r}) of 2 images: max |optimized - faithful| = {float(difference):.1e}")

    report: dict[str, Any] = {"net": args.net, "threads": args.threads, "versions": versions,
                              "keep_freed_memory": args.keep_freed_memory, "batches": {}}
    with tempfile.TemporaryDirectory(prefix="bench-forward-") as temporary:
        directory = Path(temporary)
        ort = None
        if "onnxruntime" in args.contenders:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ort = onnxruntime_runner(model, directory, args.threads, output)
        for batch in args.batch:
            x = smooth_images(batch, seed=3)
            runners: dict[str, Runner] = {}
            for name in args.contenders:
                if name == "faithful":
                    runners[name] = torch_runner(model, output)
                elif name in optimized:
                    runners[name] = torch_runner(optimized[name], output)
                elif name == "onnxruntime" and ort is not None:
                    runners[name] = ort
                elif name == "opencv":
                    runner = opencv_runner(model, weights, directory, batch, args.threads, output)
                    if runner is not None:
                        runners[name] = runner
            rounds = args.rounds or DEFAULT_ROUNDS.get(batch, 4)
            measured = measure(runners, x, rounds, max_others=args.max_others, budget_s=args.budget)
            times, cpu, results = measured.times, measured.cpu, measured.results
            medians = {name: statistics.median(values) for name, values in times.items()}
            fastest = {name: min(values) for name, values in times.items()}
            dropped = f", {measured.dropped} disturbed ones dropped" if args.max_others is not None else ""
            print(f"\nbatch {batch} ({len(times[next(iter(times))])} rounds{dropped}"
                  + (f"; other processes used {measured.others:.0%} of the CPU)" if measured.others is not None
                     else ")"))
            print(f"  {'contender':<16}{'median ms':>11}{'ms/image':>10}{'vs optimized':>14}{'paired':>9}"
                  f"{'fastest ms':>12}{'vs optimized':>14}{'CPU ms':>9}  max |prob - faithful's|")
            reference = results.get("faithful")
            nan = float("nan")
            for name, seconds in medians.items():
                ratio = seconds / medians["optimized"] if "optimized" in medians else nan
                in_rounds = paired(times, name, "optimized") if "optimized" in times else nan
                best = fastest[name] / fastest["optimized"] if "optimized" in fastest else nan
                agreement = f"{np.abs(results[name] - reference).max():.1e}" if reference is not None else ""
                print(f"  {name:<16}{seconds * 1e3:>11.1f}{seconds * 1e3 / batch:>10.2f}{ratio:>13.2f}x"
                      f"{in_rounds:>8.2f}x{fastest[name] * 1e3:>12.1f}{best:>13.2f}x"
                      f"{statistics.median(cpu[name]) * 1e3:>9.0f}  {agreement}")
            report["batches"][batch] = {"medians_s": medians, "fastest_s": fastest, "times_s": times, "cpu_s": cpu,
                                        "other_processes_cpu_share": measured.others,
                                        "rounds_dropped": measured.dropped}
    print("\ntargets (from the issue; within a batch size, paired ratios):")
    batches = report["batches"]
    checks = []
    if 8 in batches and "optimized" in batches[8]["times_s"]:
        times = batches[8]["times_s"]
        if "onnxruntime" in times:
            checks.append(("batch 8: optimized vs ONNX Runtime", paired(times, "onnxruntime", "optimized"),
                           ">=", TARGET_VS_ORT))
        if "onnxruntime" in times and "compiled" in times:
            checks.append(("batch 8: compiled vs ONNX Runtime", paired(times, "onnxruntime", "compiled"),
                           ">=", TARGET_COMPILED_VS_ORT))
        if "faithful" in times:
            checks.append(("batch 8: optimized vs faithful", paired(times, "faithful", "optimized"),
                           ">=", TARGET_VS_FAITHFUL))
    if 8 in batches and 32 in batches and "optimized" in batches[32]["medians_s"]:
        per_image = {b: batches[b]["medians_s"]["optimized"] / b for b in (8, 32)}
        checks.append(("optimized time per image, batch 32 / batch 8", per_image[32] / per_image[8],
                       "<=", TARGET_BATCH_32_PER_IMAGE))
    for label, value, relation, target in checks:
        met = value >= target if relation == ">=" else value <= target
        print(f"  {label}: {value:.2f}x (target {relation} {target}x): {'met' if met else 'NOT met'}")
    report["targets"] = [{"check": label, "value": value, "target": f"{relation} {target}"}
                         for label, value, relation, target in checks]
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
