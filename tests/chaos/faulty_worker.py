"""``python -m tests.chaos.faulty_worker worker ...``: the real worker with poison payloads.

The chaos tests need images that kill the process decoding them, as a decoder
bug or a runaway allocation would, and a worker to kill at a chosen moment. This
wrapper arms the real worker before the ``bucketvision`` command line runs (the
pool children are forked after this, so they inherit it):

- a payload starting with ``BV-CHAOS-SIGKILL`` makes the process SIGKILL itself;
- a payload starting with ``BV-CHAOS-OOM`` allocates and touches memory until
  the kernel's OOM killer ends it (run the worker in a memory-limited cgroup);
- with ``BV_CHAOS_PAUSE_FINALIZE=PATH`` in its environment, a process that
  finalises a job stops inside finalisation (the lease taken and renewed, no job
  file written yet), writes ``PATH`` (its pid and job id) and waits there, so
  the test can kill the worker while it finalises;
- with ``BV_CHAOS_PAUSE_RECORD=PATH``, a pool child's finisher stops before it
  records its batch (the task returned, its message acknowledged, the owner
  lease renewed), writes ``PATH`` (its pid, job id and batch) and waits there.

Nothing here ships with the service; production workers never see it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import bucketvision.worker.finalize as finalize_module
import bucketvision.worker.finishing as finishing_module
import bucketvision.worker.item_steps as item_steps_module
from bucketvision.producer.cli import main

KILL_MARKER = b"BV-CHAOS-SIGKILL"
OOM_MARKER = b"BV-CHAOS-OOM"
PAUSE_FINALIZE_ENV = "BV_CHAOS_PAUSE_FINALIZE"
PAUSE_RECORD_ENV = "BV_CHAOS_PAUSE_RECORD"
_real_decode = item_steps_module.decode_image
_real_write_job_files = getattr(finalize_module, "_write_job_files", None)
_real_record_outcome = finishing_module.record_outcome  # renamed: fail loudly


def _poisoned_decode(data: bytes, **options: Any) -> Any:
    if data.startswith(KILL_MARKER):
        os.kill(os.getpid(), signal.SIGKILL)
    if data.startswith(OOM_MARKER):
        hoard = []
        while True:  # 64 MiB at a time, every page touched, until the OOM killer acts
            block = bytearray(64 * 1024 * 1024)
            block[::4096] = b"\x01" * len(block[::4096])
            hoard.append(block)
    return _real_decode(data, **options)


def _hold(signal_path: str, words: str) -> None:
    """Say where this process is (``words`` in ``signal_path``), then wait to be killed."""
    with open(signal_path + f".{os.getpid()}", "w") as handle:
        handle.write(words + "\n")
    os.replace(signal_path + f".{os.getpid()}", signal_path)  # the test sees it whole
    while True:
        time.sleep(1)


def _paused_record_outcome(runtime: Any, message: Any, *rest: Any) -> Any:
    """A finisher's record, held before it starts (the batch's lease still renewed)."""
    signal_path = os.environ.get(PAUSE_RECORD_ENV)
    if signal_path:
        _hold(signal_path, f"{os.getpid()} {message.job_id} {message.batch}")
    return _real_record_outcome(runtime, message, *rest)


def _paused_write_job_files(store: Any, record: Any, *rest: Any) -> Any:
    """Finalisation, held (lease and heartbeat running) before any job file is written."""
    signal_path = os.environ.get(PAUSE_FINALIZE_ENV)
    if signal_path:
        _hold(signal_path, f"{os.getpid()} {record['job_id']}")
    assert _real_write_job_files is not None
    return _real_write_job_files(store, record, *rest)


item_steps_module.decode_image = _poisoned_decode  # type: ignore[assignment]
finishing_module.record_outcome = _paused_record_outcome  # type: ignore[assignment]
if _real_write_job_files is not None:
    finalize_module._write_job_files = _paused_write_job_files  # type: ignore[attr-defined]

if __name__ == "__main__":
    if os.environ.get(PAUSE_FINALIZE_ENV) and _real_write_job_files is None:
        sys.exit("faulty_worker: worker.finalize has no _write_job_files to pause in")
    sys.exit(main(sys.argv[1:]))
