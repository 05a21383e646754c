"""The producer side: the ``bucketvision`` command and the Python API (:class:`Client`)."""

from typing import Any

__all__ = ["Client", "Job", "JobFailed", "ReviewPolicy", "TrainingRun"]


def __getattr__(name: str) -> Any:
    """``from bucketvision.producer import Client`` without importing Celery for every module."""
    if name in __all__:
        from bucketvision.producer import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
