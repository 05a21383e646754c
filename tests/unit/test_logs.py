"""infra.logs: one JSON object a line, and the job id and batch on every line of a batch."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from bucketvision.infra.errors import UserError
from bucketvision.infra.logs import (
    ContextThreadPool,
    bind_context,
    configure_logging,
    current_context,
    reset_context,
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
    reset_context()


def _json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_bound_context(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    log = logging.getLogger("bucketvision.test")
    log.info("before any batch")
    token = bind_context(job_id="J1", batch=4, task="classify")
    log.warning("in the batch: %s", "a\nnewline")
    log.debug("below the level")
    reset_context(token)
    log.info("after the batch")
    first, during, after = _json_lines(stream)
    assert set(first) == {"ts", "level", "logger", "message", "process", "process_name"}
    assert first["message"] == "before any batch" and first["level"] == "INFO"
    assert first["ts"].endswith("+00:00") and first["logger"] == "bucketvision.test"
    assert during["message"] == "in the batch: a\nnewline"
    assert (during["job_id"], during["batch"], during["task"]) == ("J1", 4, "classify")
    assert "job_id" not in after


def test_exceptions_are_one_json_line(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    try:
        raise ValueError("broken image")
    except ValueError:
        logging.getLogger("x").exception("batch failed")
    (line,) = _json_lines(stream)
    assert line["level"] == "ERROR"
    assert "Traceback" in line["exc_info"] and "ValueError: broken image" in line["exc_info"]


def test_celery_task_lines_are_tagged_from_the_logged_arguments(restore_logging: None) -> None:
    """Celery logs "Task ... received" in the parent with the arguments' repr as ``data``."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    arguments = "[{'job_id': '20261129T000000Z-abcd1234', 'batch': 12, 'task': 'classify'}]"
    data = {"id": "celery-id-1", "name": "bucketvision.classify", "args": arguments}
    logging.getLogger("celery.worker.strategy").info(
        "Task %(name)s[%(id)s] received", data, extra={"data": data}
    )
    (line,) = _json_lines(stream)
    assert line["message"] == "Task bucketvision.classify[celery-id-1] received"
    assert line["job_id"] == "20261129T000000Z-abcd1234" and line["batch"] == 12
    assert line["task_id"] == "celery-id-1"


def test_warnings_and_pool_threads_are_logged_in_context(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    bind_context(job_id="J2", batch=0)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("odd image", UserWarning, stacklevel=1)
    with ContextThreadPool(2) as pool:
        seen = list(pool.map(lambda _: current_context().get("job_id"), range(4)))
        pool.submit(logging.getLogger("bucketvision.io").info, "from a thread").result()
    assert seen == ["J2"] * 4
    warned, threaded = _json_lines(stream)
    assert warned["logger"] == "py.warnings" and "odd image" in warned["message"]
    assert warned["job_id"] == "J2"
    assert threaded["job_id"] == "J2" and threaded["batch"] == 0


def test_text_lines_name_the_job_and_batch(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream)
    bind_context(job_id="J3", batch=1)
    logging.getLogger("bucketvision.test").info("hello")
    line = stream.getvalue().strip()
    assert line.endswith("INFO bucketvision.test: hello [job_id=J3 batch=1]")


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(UserError, match="yaml"):
        configure_logging("INFO", "yaml")
