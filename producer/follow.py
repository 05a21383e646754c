"""Following a record in Redis until it ends: the one poll loop of ``--wait``.

A job (``submit --wait``, ``generate --wait``) and a training run (``train --wait``)
are followed the same way: read the record, show it, stop at a final state,
hint at what to check when nothing has moved for a while, give up after a
timeout, and ride out a Redis restart (the work goes on without us).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bucketvision.infra.errors import WaitTimedOut
from bucketvision.infra.outages import OUTAGE_ERRORS, Backoff

T = TypeVar("T")


@dataclass(frozen=True)
class Patience:
    """How a wait polls: how often, when to hint that nothing moves, when to give up."""

    poll_seconds: float
    stall_hint_seconds: float
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class Followed(Generic[T]):
    """What is followed and how to tell that it moves or has ended."""

    name: str  # "job J", "training run R": for the timeout message
    read: Callable[[], T]
    is_final: Callable[[T], bool]
    progress: Callable[[T], Hashable]  # changes whenever the work moves on
    stalled_hint: Callable[[T, float], str | None]  # what to check after N quiet seconds
    show: Callable[[Any, T], None] = lambda bar, record: None  # draw a record on the bar
    label: str = ""  # the bar's description
    total: int | None = None  # the bar's length (items, epochs), None while unknown
    unit: str = "it"


def wait(followed: Followed[T], *, progress: bool = True, patience: Patience, **clocks: Any) -> T:
    """Follow ``followed`` with a progress bar on stderr (when ``progress``) to its end."""
    label = followed.label or followed.name
    bar = progress_bar(label, total=followed.total, unit=followed.unit, enabled=progress)
    try:
        return follow(
            followed,
            show=lambda record: followed.show(bar, record),
            tell=lambda news: bar.set_description_str(f"{label} ({news})"),
            patience=patience,
            **clocks,
        )
    finally:
        bar.close()


def progress_bar(description: str, *, total: int | None, unit: str, enabled: bool) -> Any:
    """A progress bar on stderr (tqdm), or one that draws nothing when not ``enabled``."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit=unit,
        desc=description,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def follow(
    followed: Followed[T],
    *,
    show: Callable[[T], None],
    tell: Callable[[str], None],
    patience: Patience,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] = time.sleep,
) -> T:
    """Poll ``followed`` until it is final; returns the last record read.

    ``show`` draws each record (a progress bar); ``tell`` replaces the bar's
    description with news: Redis unavailable, or the stall hint. Raises
    WaitTimedOut after ``patience.timeout_seconds``, and the outage error itself
    when Redis is still down at the timeout.
    """
    timeout_seconds = patience.timeout_seconds
    began = last_change = clock()
    last_progress: Hashable = None
    backoff = Backoff(cap=10.0)
    while True:
        try:
            record = followed.read()
        except OUTAGE_ERRORS as error:
            tell(f"Redis unavailable: {error}")
            if timeout_seconds is not None and clock() - began > timeout_seconds:
                raise
            sleep(backoff.next_delay())
            continue
        backoff.reset()
        show(record)
        if followed.is_final(record):
            return record
        now = clock()
        if followed.progress(record) != last_progress:
            last_progress, last_change = followed.progress(record), now
        elif now - last_change > patience.stall_hint_seconds:
            hint = followed.stalled_hint(record, now - last_change)
            if hint:
                tell(hint)
        if timeout_seconds is not None and now - began > timeout_seconds:
            raise WaitTimedOut(
                f"{followed.name} did not finish within {timeout_seconds:.0f} s "
                "(it goes on without this command)"
            )
        sleep(patience.poll_seconds)
