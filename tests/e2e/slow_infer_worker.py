"""``bucketvision`` whose pool children take a while over each forward pass of some keys.

A job whose items take long is needed to cancel it while some batches have not started
and one is mid-way: each child sleeps ``BV_TEST_INFER_SECONDS`` before every forward
pass over a group holding a key with ``/slow/`` in it (other jobs run at full speed).
The patch is applied in each child, inside Celery's ``worker_process_init`` (the parent
never imports the pipeline's models). Test-only: run as
``python -m tests.e2e.slow_infer_worker worker ...``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import bucketvision.worker.runtime as runtime_module
from bucketvision.producer.cli import main

_real_configure = runtime_module.configure_tensorflow


def _configure_and_slow_down(*args: Any, **kwargs: Any) -> Any:
    import bucketvision.worker.pipeline as pipeline

    real_forward = pipeline._forward  # the forward pass of one group (renamed: fail loudly)
    seconds = float(os.environ.get("BV_TEST_INFER_SECONDS", "0.5"))

    def slow_forward(model: Any, group: list[Any], *rest: Any) -> Any:
        if any("/slow/" in item.key for item in group):
            time.sleep(seconds)
        return real_forward(model, group, *rest)

    pipeline._forward = slow_forward  # type: ignore[assignment]
    return _real_configure(*args, **kwargs)


runtime_module.configure_tensorflow = _configure_and_slow_down  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
