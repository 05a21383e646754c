"""What counts as an outage, and how long-running loops ride one out.

Redis or S3 being unreachable says nothing about the work: loops (the watcher,
``submit --wait``) keep going with capped exponential backoff, and a worker
rides an outage out in process (:func:`ride_out`) rather than through Celery's
retry, which must publish to the broker — the very thing that may be down.
Errors outside :data:`OUTAGE_ERRORS` are the user's to fix and are not retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from kombu.exceptions import OperationalError

from bucketvision.infra.s3 import StorageUnavailable

log = logging.getLogger("bucketvision.outages")
T = TypeVar("T")

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,  # BusyLoadingError (replaying the AOF) is a ConnectionError
    OperationalError,  # kombu: the broker connection failed while sending
    StorageUnavailable,
)


class Backoff:
    """Capped exponential backoff with full jitter: 1, 2, 4 … ``cap`` seconds."""

    def __init__(self, base: float = 1.0, cap: float = 30.0) -> None:
        self.base, self.cap = base, cap
        self.failures = 0

    def next_delay(self) -> float:
        """Seconds to wait after one more consecutive failure."""
        self.failures += 1
        ceiling = min(self.cap, self.base * 2 ** (self.failures - 1))
        # Jitter spreads retries out; it needs no cryptographic randomness (bandit B311).
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # nosec B311

    def reset(self) -> None:
        self.failures = 0


def ride_out(
    call: Callable[[], T],
    what: str,
    *,
    within_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, repeated with backoff while it fails with an outage, for ``within_seconds``.

    The last outage error is raised once the time is up, so the caller can record
    what happened instead of waiting forever.
    """
    backoff = Backoff()
    started = time.monotonic()
    while True:
        try:
            return call()
        except OUTAGE_ERRORS as error:
            delay = backoff.next_delay()
            if time.monotonic() - started + delay > within_seconds:
                raise
            log.warning("%s: %s; retrying in %.1f s", what, error, delay)
            sleep(delay)
