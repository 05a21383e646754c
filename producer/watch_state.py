"""What a watcher is asked to do (:class:`WatchRequest`), and what it has done so far."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bucketvision.infra.jobs import JobNotFound, JobStore
from bucketvision.infra.review import ReviewPolicy
from bucketvision.infra.vocabulary import FINAL_STATES, IMAGE_PATTERNS
from bucketvision.producer.job_start import DEFAULT_WINDOW

if TYPE_CHECKING:
    from bucketvision.infra.s3 import ObjectInfo
    from bucketvision.producer.watch_events import BucketEvent

ABANDONED = "the watcher could not send all its batches; its objects are enqueued again"


def holds_its_objects(jobs: JobStore, job_id: str) -> bool:
    """Whether ``job_id``, bound to a lapsed claim, holds its objects: its whole plan was
    written (the lost-batch audit sends what was not sent) or it finished, and its watcher
    did not abandon it."""
    try:
        record = jobs.get(job_id)
    except JobNotFound:
        return False
    if record["state"] in FINAL_STATES:
        return record.get("failure") != ABANDONED
    return bool(record.get("planned"))


@dataclass
class EventCounts:
    """Bucket events so far (``--events``): what the metrics export and the docs promise."""

    received: int = 0  # objects announced for the watched bucket
    duplicate: int = 0  # announced again, or for a version that was overwritten since
    reconciled: int = 0  # objects found by a reconciliation listing, not by an event
    lags: list[float] = field(default_factory=list)  # event time to claim, seconds (drained)

    def count(self, announced: Sequence[BucketEvent], claimed: list[ObjectInfo]) -> None:
        """One read's tally: each announced object was claimed now, or it is a duplicate."""
        self.received += len(announced)
        self.duplicate += len(announced) - len(claimed)
        taken = {info.key for info in claimed}
        now = time.time()
        self.lags += [
            max(0.0, now - e.time) for e in announced if e.time is not None and e.key in taken
        ]


@dataclass(frozen=True)
class WatchRequest:
    """``bucketvision watch``'s flags: the prefix, the task, where results go, how often."""

    input: str
    task: str
    output: str
    model: str | None = None
    interval: float = 5.0
    move_to: str | None = None
    once: bool = False
    batch_size: int = 32
    window: int = DEFAULT_WINDOW  # batches of a job on the queue at a time (BV_JOB_WINDOW)
    max_in_flight: int = 5000
    rescan_seconds: float = 60.0
    includes: tuple[str, ...] = IMAGE_PATTERNS  # globs on the key relative to the input
    excludes: tuple[str, ...] = ()
    review: ReviewPolicy | None = None  # --review-below ...; else the card's review_below
    full_listing_max: int = 10_000  # without events, a prefix this small is listed every cycle


@dataclass
class WatchState:
    """What this watcher started and has not settled yet."""

    jobs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # jobs that ended failed or cancelled
    cycles: int = 0
    enqueued: int = 0
    last_rescan: float = 0.0
    prefix_size: int | None = None  # objects in the prefix at the last full listing
    throttled: bool = False  # the last cycle waited for --max-in-flight
    events: EventCounts = field(default_factory=EventCounts)
    # Writes to Redis that an outage interrupted (confirming or releasing claims,
    # abandoning a half-sent job), applied in order before anything new is claimed.
    unsettled: list[Callable[[], object]] = field(default_factory=list)
