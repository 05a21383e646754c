"""``python -m tests.chaos.faulty_worker worker ...``: the real worker with poison payloads.

The chaos tests need images that kill the process decoding them, as a decoder
bug or a runaway allocation would. This wrapper arms the worker's decoder with
two triggers before the real ``bucketvision`` command line runs (the pool
children are forked after this, so they inherit it):

- a payload starting with ``BV-CHAOS-SIGKILL`` makes the process SIGKILL itself;
- a payload starting with ``BV-CHAOS-OOM`` allocates and touches memory until
  the kernel's OOM killer ends it (run the worker in a memory-limited cgroup).

Nothing here ships with the service; production workers never see it.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import bucketvision.worker.pipeline as pipeline_module
from bucketvision.producer.cli import main

KILL_MARKER = b"BV-CHAOS-SIGKILL"
OOM_MARKER = b"BV-CHAOS-OOM"
_real_decode = pipeline_module.decode_image


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


pipeline_module.decode_image = _poisoned_decode  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
