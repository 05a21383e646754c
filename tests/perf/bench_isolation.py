"""The bench's S3 server on one core while a storage-bound model is measured.

The bench's S3 server (moto behind cheroot) stands in for a remote S3. It is one Python
process whose sixteen request threads take turns at one GIL, and on the digits model it is
the bottleneck, busy about one core. Left to the scheduler, its threads spread over both
cores of this machine, and each hand-off of the GIL between threads on different cores
waits for a wake-up across cores. On 2026-12-05 moto read 0.90-0.92 busy under the
pipeline against 0.97-0.99 under the bare client of the GET+PUT ceiling, with no gap
longer than a sampling tick in either; with its threads on one core, 0.97-0.98 under the
pipeline and 1.00 under the ceiling (``tests/perf/NOTES.md``, "The S3 server's threads on
one core"). A real S3 has no GIL to hand over.

So while a storage-bound model's contenders run (all of them alike: ceilings, pipeline,
peers), every thread of the server is on one core; for the other models it has every core
again, where it is a side player (0.2-0.4 cores beside a compute-bound worker) and one
core would only take away its choice of core. Nothing else is ever pinned: the worker,
the peers and the ceilings keep every core the bench has.

Linux only (``os.sched_setaffinity`` on thread ids, which new threads inherit from the
thread that starts them); with one core, or elsewhere, nothing is pinned.
"""

from __future__ import annotations

import contextlib
import os

from tests.perf.bench_cpu import available_cpus, process_tree


def threads_of(pid: int) -> set[int]:
    """The thread ids of ``pid`` and of all its descendants (live ones only)."""
    found: set[int] = set()
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            found.update(int(tid) for tid in os.listdir(f"/proc/{member}/task"))
    return found


def place_server(pid: int | None, *, one_core: bool) -> str | None:
    """Every thread of the server ``pid`` (and its children) on the first CPU the bench may
    use (``one_core``), or back on all of them. Says where, or None when it cannot pin
    (no server, one CPU, not Linux)."""
    cpus = available_cpus()
    if pid is None or len(cpus) < 2:
        return None
    target = {min(cpus)} if one_core else cpus
    for _ in range(2):  # a second pass catches threads started during the first
        for tid in threads_of(pid):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, target)
    return f"CPU {min(cpus)} of {len(cpus)}" if one_core else f"all {len(cpus)} CPUs"
