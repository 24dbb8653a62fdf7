"""Fuzz every reader and the converter for a while; keep a reproducer of anything that is not success or a
clear error (a Caffe2TorchError): crashes, deaths, runs over 10 s, runs over 2x the input size + 200 MB.

    python benchmarks/fuzz.py --seconds 1800 [--kinds caffemodel,hdf5] [--seed 1] [--out fuzz-findings]

Prints, per kind, how many cases ended how, the slowest case and the largest memory use; exits 1 when
anything unacceptable was found. Reproducers go to --out as the case's file plus a .txt with what happened;
replay one with caffe2torch.fuzzing.run_case.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import sys
import time
from pathlib import Path

from caffe2torch.fuzzing import KINDS, Outcome, fuzz

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (all kinds in turn)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="seed of the mutations")
    parser.add_argument("--out", type=Path, default=ROOT / "fuzz-findings", help="where reproducers go")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}")
    shared = ROOT.parent / "shared"
    counts: dict[str, collections.Counter] = {kind: collections.Counter() for kind in kinds}
    slowest: dict[str, float] = dict.fromkeys(kinds, 0.0)
    largest: dict[str, tuple[float, int]] = {kind: (0.0, 0) for kind in kinds}  # (peak / input, peak)
    started = time.monotonic()

    def record(outcome: Outcome) -> None:
        kind = outcome.case.kind
        counts[kind][outcome.status] += 1
        slowest[kind] = max(slowest[kind], outcome.seconds)
        ratio = outcome.peak_bytes / max(len(outcome.case.data), 1)
        if outcome.peak_bytes > largest[kind][1]:
            largest[kind] = (ratio, outcome.peak_bytes)
        if not outcome.acceptable:
            keep(outcome, args.out)
        total = sum(sum(c.values()) for c in counts.values())
        if total % 2000 == 0:
            print(f"  {time.monotonic() - started:7.0f} s  {total} cases", file=sys.stderr, flush=True)

    print(f"fuzzing {', '.join(kinds)} for {args.seconds:.0f} s, seed {args.seed}")
    bad = fuzz(kinds, seed=args.seed, seconds=args.seconds, shared=shared if shared.is_dir() else None,
               on_outcome=record)
    print(f"\n{'kind':<12}{'cases':>8}{'ok':>8}{'error':>8}{'other':>8}{'slowest s':>11}{'peak MiB':>10}")
    for kind in kinds:
        c = counts[kind]
        other = sum(c.values()) - c["ok"] - c["error"]
        print(f"{kind:<12}{sum(c.values()):>8}{c['ok']:>8}{c['error']:>8}{other:>8}{slowest[kind]:>11.2f}"
              f"{largest[kind][1] / 2**20:>10.1f}")
    if bad:
        print(f"\n{len(bad)} unacceptable outcome(s); reproducers in {args.out}")
        for outcome in bad[:20]:
            print(f"  {outcome.case.kind} {outcome.case.label!r}: {outcome.status}: "
                  f"{outcome.detail.strip().splitlines()[-1] if outcome.detail.strip() else ''}")
        return 1
    print("\nevery case ended in success or a Caffe2TorchError, within the time and memory limits")
    return 0


def keep(outcome: Outcome, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(outcome.case.data).hexdigest()[:12]
    stem = directory / f"{outcome.case.kind}-{outcome.status}-{digest}"
    Path(f"{stem}{outcome.case.suffix}").write_bytes(outcome.case.data)
    if outcome.case.net is not None:
        Path(f"{stem}.net.prototxt").write_text(outcome.case.net)
    Path(f"{stem}.txt").write_text(f"{outcome.case.kind} {outcome.case.label!r}: {outcome.status} after "
                                   f"{outcome.seconds:.2f} s, peak {outcome.peak_bytes >> 20} MiB\n{outcome.detail}\n")


if __name__ == "__main__":
    sys.exit(main())
