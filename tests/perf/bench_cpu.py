"""Where the CPU went during a timed run: user+system seconds per process tree, from /proc.

On a 2-core machine the S3 server (moto), Redis, the worker and the bench's
own producer all share the cores, so a run's figure means more next to how
much CPU each of them used. Linux only; elsewhere the meter records nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available_cpus() -> set[int]:
    """The CPUs this process may run on (empty where the platform cannot say or pin)."""
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else set()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (threads are counted inside their process)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                pending.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU seconds of ``pid`` (and its tree) so far (live processes only)."""
    total = 0
    for member in process_tree(pid) if tree else [pid]:
        try:
            with open(f"/proc/{member}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICKS


class CpuMeter:
    """CPU seconds of named process trees between ``start()`` and ``stop()``."""

    def __init__(
        self, roots: dict[str, int | list[int] | None], alone: frozenset[str] = frozenset()
    ) -> None:
        """``roots``: name -> pid(s) of process trees; names in ``alone``: that process only."""
        self.roots = {
            name: pids if isinstance(pids, list) else [pids] for name, pids in roots.items() if pids
        }
        self.alone = alone
        self.before: dict[str, float] = {}
        self.started = 0.0

    def _now(self) -> dict[str, float]:
        return {
            name: sum(cpu_seconds(pid, tree=name not in self.alone) for pid in pids)
            for name, pids in self.roots.items()
        }

    def start(self) -> None:
        self.before = self._now()
        self.started = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.started
        now = self._now()
        used = {name: round(now[name] - self.before.get(name, 0.0), 2) for name in now}
        cores = len(available_cpus()) or 1
        return {
            "wall_seconds": round(wall, 3),
            "cpu_seconds": used,
            "cores_busy": round(sum(used.values()) / wall, 2) if wall > 0 else None,
            "cores": cores,
        }
