"""A bounded, seeded fuzz run: every mutated file and random net ends in success or a Caffe2TorchError, in
under 10 s and within 2x its size + 200 MB (the long run is benchmarks/fuzz.py --seconds N)."""

from __future__ import annotations

import collections
import os
import random
import time
from pathlib import Path

import pytest

import torch
from torch import nn

import caffe2torch
from caffe2torch.caffe_proto import parse_prototxt
from caffe2torch.converter.registry import registered
from caffe2torch.fuzzing import KINDS, Case, run_forward, fuzz, mutate_bytes, run_cases

from conftest import SHARED

# Text cases convert whole nets (about 30 ms each today), the others only read a file (a few ms).
CASES = {"caffemodel": 2000, "binaryproto": 2000, "hdf5": 2000, "prototxt": 1200, "converter": 400}


def _shared() -> Path | None:
    if SHARED.is_dir():
        return SHARED
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"reference data {SHARED} is absent; CI must have it")
    return None  # the generated seeds still cover every kind


@pytest.mark.parametrize("kind", KINDS)
def test_fuzzed_inputs_end_in_success_or_a_clear_error(kind: str) -> None:
    counts: collections.Counter = collections.Counter()
    bad = fuzz([kind], seed=20261202, cases_per_kind=CASES[kind],
               shared=_shared(), on_outcome=lambda outcome: counts.update([outcome.status]))
    report = "\n".join(f"{o.case.label!r}: {o.status}: {o.detail.strip()[-800:]}" for o in bad[:5])
    assert not bad, f"{len(bad)} of {sum(counts.values())} cases: {dict(counts)}\n{report}"
    # The cases reach deep: some succeed (mutations that keep the file valid), most are refused.
    assert counts["ok"] > 0 and counts["error"] > 0, dict(counts)


def misbehave(case: Case, path: Path) -> None:
    """A runner doing what its case says, for the positive controls below (run in a fuzz worker)."""
    action = case.data.decode()
    if action == "crash":
        raise KeyError("boom")
    if action == "hang":
        time.sleep(60)
    if action == "die":
        os.kill(os.getpid(), 9)
    if action == "memory":
        block = bytearray(300 << 20)
        block[::4096] = b"x" * len(block[::4096])


def test_the_harness_sees_crashes_hangs_deaths_and_memory(tmp_path: Path, monkeypatch) -> None:
    """Positive controls: each unacceptable outcome is classified as such, and the cases after it still run."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    actions = ("crash", "fine", "hang", "die", "memory", "fine")
    cases = [Case("prototxt", action, action.encode()) for action in actions]
    outcomes = list(run_cases(cases, tmp_path, time_limit=3, runner="test_fuzz:misbehave"))
    assert [outcome.status for outcome in outcomes] == ["crash", "ok", "timeout", "died", "memory", "ok"]


def test_mutations_are_seeded() -> None:
    data = bytes(range(200))
    assert mutate_bytes(data, random.Random(3)) == mutate_bytes(data, random.Random(3))


# Layers whose parameters once asked for memory out of all proportion to their blobs when run.
_BIG_WINDOWS = """
input: "data"
input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { local_size: 2147483647 } }
layer { name: "pool" type: "Pooling" bottom: "lrn" top: "pool"
        pooling_param { kernel_size: 2000000000 pad: 1500000000 stride: 1000000000 } }
"""


def test_converted_nets_also_run_once_within_memory(tmp_path: Path) -> None:
    """A prototxt case runs its net once where the blobs are small: memory beyond them is an outcome."""
    outcomes = list(run_cases([Case("prototxt", "big windows", _BIG_WINDOWS.encode())], tmp_path))
    assert [(o.status, o.detail) for o in outcomes] == [("ok", "")]


class _Liar(nn.Module):
    def output_shapes(self, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(input_shapes[0])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x])


def test_the_forward_run_sees_a_shape_rule_broken() -> None:
    net = parse_prototxt('input: "data" input_shape { dim: 1 dim: 3 } '
                         'layer { name: "l" type: "Liar" bottom: "data" top: "l" }')
    with registered("Liar", lambda ctx: _Liar(), bottoms=1, tops=1):
        model = caffe2torch.load(net)
    with pytest.raises(AssertionError, match=r"output 'l' has shape \[2, 3\], shape inference said \[1, 3\]"):
        run_forward(model)
