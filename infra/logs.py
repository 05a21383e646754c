"""Log lines for every long-running process: text for a terminal, JSON for a log shipper.

``configure_logging(level, fmt)`` installs one handler on the root logger. Its
:class:`ContextFilter` adds what is known about the work in hand to every record:
the worker's task hook binds ``job_id``, ``batch`` and ``task`` (or ``run_id``)
with :func:`bind_context` while a batch runs, so every line logged during the
batch carries them, from any logger. Celery's own task lines (``received``,
``succeeded``) are tagged from the task arguments Celery logs with them.

The context lives in a :class:`contextvars.ContextVar`; :class:`ContextThreadPool`
runs each submitted call in a copy of the submitter's context, so lines logged by
the batch's I/O threads carry it too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import IO, Any, ParamSpec, TypeVar

from bucketvision.infra.errors import UserError
from bucketvision.infra.settings import LOG_FORMATS

CONTEXT_FIELDS = ("job_id", "batch", "task", "run_id", "task_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "bucketvision_log_context", default=None
)
# Celery logs a task's arguments as their repr (``argsrepr``); a batch body starts
# with {'job_id': '...', 'batch': N, ...}.
_ARG_PATTERNS = {
    "job_id": re.compile(r"'job_id': '([^']{1,200})'"),
    "batch": re.compile(r"'batch': (\d{1,9})\b"),
    "run_id": re.compile(r"'run_id': '([^']{1,200})'"),
}

P = ParamSpec("P")
T = TypeVar("T")


def bind_context(**fields: Any) -> contextvars.Token[Mapping[str, Any] | None]:
    """Add ``fields`` to the log context of this thread of work; returns a reset token."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    return _context.set(merged)


def reset_context(token: contextvars.Token[Mapping[str, Any] | None] | None = None) -> None:
    """Undo a :func:`bind_context` (or, without a token, clear the context)."""
    if token is None:
        _context.set({})
    else:
        _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get() or {})


class ContextFilter(logging.Filter):
    """Puts the bound context (and Celery's task ids) on each record as ``bv_context``."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = dict(_context.get() or {})
        data = getattr(record, "data", None)
        if isinstance(data, Mapping):  # Celery's trace and strategy lines
            if data.get("id") and "task_id" not in fields:
                fields["task_id"] = str(data["id"])
            arguments = data.get("args")
            if isinstance(arguments, str):
                for name, pattern in _ARG_PATTERNS.items():
                    found = pattern.search(arguments)
                    if found and name not in fields:
                        fields[name] = int(found[1]) if name == "batch" else found[1]
        record.bv_context = fields
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, process, context, exc_info."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "process_name": record.processName,
        }
        context = getattr(record, "bv_context", None) or {}
        entry.update({name: context[name] for name in CONTEXT_FIELDS if name in context})
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic text line, with ``[job=... batch=...]`` appended while a batch runs."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = getattr(record, "bv_context", None) or {}
        tags = [
            f"{name}={context[name]}" for name in ("job_id", "batch", "run_id") if name in context
        ]
        if not tags:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{' '.join(tags)}]{newline}{rest}"


def configure_logging(
    level: str | int = "INFO", fmt: str = "text", stream: IO[str] | None = None
) -> None:
    """One handler on the root logger, in ``fmt`` (text or json); Python warnings included."""
    if fmt not in LOG_FORMATS:
        raise UserError(f"log format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)


def leave_logging_to_us() -> None:
    """Stop Celery (worker or beat) from configuring logging: it is configured already."""
    from celery.signals import setup_logging

    setup_logging.connect(_keep_configuration, weak=False)


def _keep_configuration(**_: Any) -> None:
    """A ``setup_logging`` receiver: its presence alone tells Celery to leave logging be."""


class ContextThreadPool(ThreadPoolExecutor):
    """A thread pool whose calls run in the submitter's log context."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        context = contextvars.copy_context()
        return super().submit(context.run, fn, *args, **kwargs)  # type: ignore[arg-type]
