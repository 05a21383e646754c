"""``bucketvision`` whose pool children take a while to start, as on a GPU machine.

Importing TensorFlow with CUDA and initialising a GPU can take tens of seconds;
here each child sleeps ``BV_TEST_CHILD_START_SECONDS`` before configuring
TensorFlow, inside Celery's ``worker_process_init``. Test-only: run as
``python -m tests.e2e.slow_start_worker worker ...``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import bucketvision.worker.runtime as runtime_module
from bucketvision.producer.cli import main

_real_configure = runtime_module.configure_tensorflow


def _slow_configure(*args: Any, **kwargs: Any) -> Any:
    time.sleep(float(os.environ.get("BV_TEST_CHILD_START_SECONDS", "6")))
    return _real_configure(*args, **kwargs)


runtime_module.configure_tensorflow = _slow_configure  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
