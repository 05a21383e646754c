"""The bench's S3 server with every thread on one core, and back; nothing else pinned."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.perf import bench_isolation
from tests.perf.bench import CORPORA
from tests.perf.bench_cpu import available_cpus, process_tree
from tests.perf.bench_isolation import place_server, threads_of

# A process with three threads besides its main one and a child process of its own.
_SLEEPER = """
import subprocess, sys, threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("ready", flush=True)
time.sleep(120)
"""


def _start() -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", _SLEEPER], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 10
    while len(threads_of(process.pid)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)  # its child may not be up yet
    return process


@pytest.fixture
def server_and_other() -> Iterator[tuple[int, int]]:
    processes = [_start(), _start()]
    try:
        yield processes[0].pid, processes[1].pid
    finally:
        for process in processes:
            for member in reversed(process_tree(process.pid)):  # the child first
                with contextlib.suppress(OSError):
                    os.kill(member, signal.SIGKILL)
            process.wait()


def _cores(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(tid)) for tid in threads_of(pid)}


@pytest.mark.skipif(len(available_cpus()) < 2, reason="pinning needs two CPUs (see below)")
def test_every_thread_of_the_server_and_its_children_goes_to_one_core_and_back(
    server_and_other: tuple[int, int],
) -> None:
    server, other = server_and_other
    cpus = available_cpus()
    assert len(threads_of(server)) == 5  # four threads, and the child's one
    assert place_server(server, one_core=True) == f"CPU {min(cpus)} of {len(cpus)}"
    assert _cores(server) == {frozenset({min(cpus)})}
    assert _cores(other) == {frozenset(cpus)}  # nothing else is pinned
    assert os.sched_getaffinity(0) == cpus
    assert place_server(server, one_core=False) == f"all {len(cpus)} CPUs"
    assert _cores(server) == {frozenset(cpus)}


def test_with_one_core_or_no_server_nothing_is_pinned(
    server_and_other: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = server_and_other
    before = _cores(server)
    assert place_server(None, one_core=True) is None
    monkeypatch.setattr(bench_isolation, "available_cpus", lambda: {0})
    assert place_server(server, one_core=True) is None
    assert _cores(server) == before


def test_only_the_digits_model_is_storage_bound() -> None:
    """The bench pins the server for the model whose figures are the server's."""
    assert {key for key, corpus in CORPORA.items() if corpus.storage_bound} == {"cnn"}
