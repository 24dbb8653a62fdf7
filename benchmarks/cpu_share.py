"""How much of the machine other processes used while a benchmark measured: shared by the benchmarks that
run contenders in one process, where another process's load would distort their ratios."""

from __future__ import annotations

import os
import time
from pathlib import Path


class CpuShare:
    """The share of the machine's CPU time that other processes used while measuring (from /proc/stat and
    this process's own CPU time); None where /proc is absent."""

    def __enter__(self) -> CpuShare:
        self.start = self._busy(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, own, wall = self._busy(), time.process_time(), time.perf_counter()
        if busy is None or self.start[0] is None:
            self.others = None
            return
        total = (wall - self.start[2]) * (os.cpu_count() or 1)
        used = (busy - self.start[0]) / os.sysconf("SC_CLK_TCK") - (own - self.start[1])
        self.others = min(1.0, max(0.0, used / total))

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return float(user + nice + system + irq + softirq + steal)
