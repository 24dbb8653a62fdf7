"""A bounded, seeded fuzz run: every mutated file and random net ends in success or a Caffe2TorchError, in
under 10 s and within 2x its size + 200 MB (the long run is benchmarks/fuzz.py --seconds N)."""

from __future__ import annotations

import collections
import os
import random
import time
from pathlib import Path

import pytest

from caffe2torch.fuzzing import KINDS, Case, fuzz, mutate_bytes, run_cases

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
