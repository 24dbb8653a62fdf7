"""How fast, and in how much memory, a large caffemodel is read: ours against the alternatives.

Builds once (cached in .bench/, git-ignored) a caffemodel with the blob shapes of SENet-154
(115 M parameters, 440 MiB) filled with seeded random numbers by our writer, then measures
each reader in a fresh subprocess (so imports and earlier runs do not mix into its peak memory),
with NUMPY_MADVISE_HUGEPAGE=0 so that numpy does not back large arrays with huge pages:

- np.fromfile: the whole file into one array: the baseline, the least a reader must cost;
- read_weights + touch: our reader, then one element of every 4 KiB page of every blob read, so
  every byte of the file is in memory as it is after np.fromfile;
- read_weights + sum: as above but summing every blob (all values used once; more compute);
- protobuf: NetParameter.ParseFromString of the file, then np.array(blob.data) for every blob;
- OpenCV: cv2.dnn.readNetFromCaffe(prototxt, caffemodel).

Time is that of the read alone (imports excluded); peak memory is the process's VmHWM (resident
set high-water mark, imports included). Median of --runs runs, page cache warm.

    PYTHONPATH=. python benchmarks/bench_read.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENET_PROTOTXT = ROOT.parent / "shared" / "senet" / "models" / "SENet-154.prototxt"
CACHE = ROOT / ".bench"
MODEL = CACHE / "senet154_seeded.caffemodel"
SEED = 154
TIME_TARGET = 1.3  # read_weights + touch, at most this many times np.fromfile's time
MEMORY_TARGET = 1.15  # and at most this many times the file size in peak memory
PAGE_FLOATS = 4096 // 4


def blob_shapes(net) -> dict[str, list[tuple[int, ...]]]:
    """The learned blobs of each layer, from the net's definition (shapes tracked through the net)."""
    shapes: dict[str, tuple[int, ...]] = {}
    blobs: dict[str, list[tuple[int, ...]]] = {}
    for layer in net.layer:
        bottom = [shapes[name] for name in layer.bottom]
        kind = layer.type
        if kind == "Input":
            (output,) = [tuple(shape.dim) for shape in layer.input_param.shape]
        elif kind == "Convolution":
            param = layer.convolution_param
            n, c, h, w = bottom[0]
            kernel = _pair(param.kernel_size, param.kernel_h, param.kernel_w)
            stride = _pair(param.stride, param.stride_h, param.stride_w, default=1)
            pad = _pair(param.pad, param.pad_h, param.pad_w, default=0)
            dilation = _pair(param.dilation, 0, 0, default=1)
            size = [
                (extent + 2 * p - (d * (k - 1) + 1)) // s + 1
                for extent, k, s, p, d in zip((h, w), kernel, stride, pad, dilation)
            ]
            output = (n, param.num_output, *size)
            blobs[layer.name] = [(param.num_output, c // param.group, *kernel)]
            if param.bias_term:
                blobs[layer.name].append((param.num_output,))
        elif kind == "Pooling":
            param = layer.pooling_param
            n, c, h, w = bottom[0]
            if param.global_pooling:
                size = [1, 1]
            else:
                kernel = _pair(param.kernel_size, param.kernel_h, param.kernel_w)
                stride = _pair(param.stride, param.stride_h, param.stride_w, default=1)
                pad = _pair(param.pad, param.pad_h, param.pad_w, default=0)
                size = []
                for extent, k, s, p in zip((h, w), kernel, stride, pad):
                    out = math.ceil((extent + 2 * p - k) / s) + 1
                    if p and (out - 1) * s >= extent + p:
                        out -= 1
                    size.append(out)
            output = (n, c, *size)
        elif kind == "InnerProduct":
            param = layer.inner_product_param
            flat = math.prod(bottom[0][1:])
            output = (bottom[0][0], param.num_output)
            blobs[layer.name] = [(param.num_output, flat)]
            if param.bias_term:
                blobs[layer.name].append((param.num_output,))
        elif kind == "BatchNorm":
            output = bottom[0]
            blobs[layer.name] = [(bottom[0][1],), (bottom[0][1],), (1,)]
        elif kind == "Scale":
            output = bottom[0]
            if len(bottom) == 1:
                blobs[layer.name] = [(bottom[0][1],)] * (2 if layer.scale_param.bias_term else 1)
        elif kind == "Axpy":
            output = bottom[1]
        elif kind in ("ReLU", "Sigmoid", "Dropout", "Softmax", "Eltwise"):
            output = bottom[0]
        else:
            raise SystemExit(f"bench_read: layer type {kind} of {layer.name} is not handled")
        for top in layer.top:
            shapes[top] = output
    return blobs


def _pair(value, height: int, width: int, default: int | None = None) -> tuple[int, int]:
    """Caffe's per-axis value: `_h`/`_w` when given, else the (repeated for Convolution) common one."""
    if height or width:
        return height, width
    if isinstance(value, int):
        return (value, value) if value or default is None else (default, default)
    if len(value) == 0:
        return default, default
    return value[0], value[-1]


def ensure_model() -> Path:
    """The cached seeded SENet-154 caffemodel, written by our writer on first use."""
    if MODEL.exists():
        return MODEL
    from caffe2torch.caffe_proto.text import read_prototxt
    from caffe2torch.caffe_proto.weights import write_caffemodel

    net = read_prototxt(SENET_PROTOTXT)
    rng = np.random.default_rng(SEED)
    weights = {
        name: [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
        for name, shapes in blob_shapes(net).items()
    }
    CACHE.mkdir(exist_ok=True)
    print(f"writing {MODEL} ...", file=sys.stderr)
    write_caffemodel(net, weights, MODEL)
    return MODEL


def peak_memory() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(method: str, model: Path) -> dict:
    """Run one method in this (fresh) process; returns its read time and the process's peak memory."""
    if method == "fromfile":
        start = time.perf_counter()
        np.fromfile(model, dtype=np.uint8)
        elapsed = time.perf_counter() - start
    elif method in ("ours_touch", "ours_sum"):
        from caffe2torch.caffe_proto.weights import read_weights

        start = time.perf_counter()
        weights = read_weights(model)
        step = PAGE_FLOATS if method == "ours_touch" else 1
        for blobs in weights.values():
            for blob in blobs:
                blob.reshape(-1)[::step].sum()
        elapsed = time.perf_counter() - start
    elif method == "protobuf":
        from caffe2torch.caffe_proto import caffe_pb2

        start = time.perf_counter()
        net = caffe_pb2.NetParameter()
        net.ParseFromString(model.read_bytes())
        [np.array(blob.data, dtype=np.float32) for layer in net.layer for blob in layer.blobs]
        elapsed = time.perf_counter() - start
    elif method == "opencv":
        import cv2

        start = time.perf_counter()
        cv2.dnn.readNetFromCaffe(str(SENET_PROTOTXT), str(model))
        elapsed = time.perf_counter() - start
    else:
        raise SystemExit(f"unknown method {method}")
    return {"seconds": elapsed, "peak_bytes": peak_memory()}


METHODS = {
    "fromfile": "np.fromfile (baseline)",
    "ours_touch": "read_weights + touch every page",
    "ours_sum": "read_weights + sum every blob",
    "protobuf": "protobuf parse + np.array(blob.data)",
    "opencv": "cv2.dnn.readNetFromCaffe",
}


def run_child(method: str, model: Path) -> dict:
    env = dict(os.environ, NUMPY_MADVISE_HUGEPAGE="0", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, __file__, "--measure", method, str(model)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"bench_read: {method} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--measure", nargs=2, metavar=("METHOD", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return

    model = ensure_model()
    size = model.stat().st_size
    methods = args.methods.split(",")
    run_child("fromfile", model)  # warm the page cache
    medians = {}
    for method in methods:
        runs = [run_child(method, model) for _ in range(args.runs)]
        medians[method] = (
            statistics.median(run["seconds"] for run in runs),
            statistics.median(run["peak_bytes"] for run in runs),
        )
    base_seconds, base_peak = medians.get("fromfile", (float("nan"), float("nan")))
    print(f"model: {model} ({size / 2**20:.1f} MiB), median of {args.runs} runs, each in its own process")
    print(f"{'method':40s} {'time s':>8s} {'x fromfile':>10s} {'peak MiB':>9s} {'x file':>7s} {'x fromfile':>10s}")
    for method in methods:
        seconds, peak = medians[method]
        print(
            f"{METHODS[method]:40s} {seconds:8.3f} {seconds / base_seconds:10.2f} "
            f"{peak / 2**20:9.1f} {peak / size:7.3f} {peak / base_peak:10.2f}"
        )
    if "ours_touch" in medians and "fromfile" in medians:
        seconds, peak = medians["ours_touch"]
        time_ok = seconds <= TIME_TARGET * base_seconds
        memory_ok = peak <= MEMORY_TARGET * size
        print(
            f"targets: time <= {TIME_TARGET}x np.fromfile: {'met' if time_ok else 'MISSED'} "
            f"({seconds / base_seconds:.2f}x); peak memory <= {MEMORY_TARGET}x file size: "
            f"{'met' if memory_ok else 'MISSED'} ({peak / size:.3f}x)"
        )


if __name__ == "__main__":
    main()
