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


def progress_bar(
    description: str, *, total: int | None, unit: str, enabled: bool, stream: Any = None
) -> Any:
    """A progress bar on a terminal (tqdm); elsewhere (CI logs, ``docker logs``) a plain line
    every :data:`PLAIN_SECONDS` (:class:`PlainProgress`); nothing when not ``enabled``."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if enabled and not stream.isatty():
        return PlainProgress(description, total=total, unit=unit, stream=stream)
    return tqdm(
        total=total,
        unit=unit,
        desc=description,
        disable=not enabled,
        file=stream,
        dynamic_ncols=True,
    )


PLAIN_SECONDS = 5.0


class PlainProgress:
    """The part of tqdm's interface ``--wait`` uses, as a plain line every few seconds.

    A bar redrawn with carriage returns is thousands of frames in a log; this writes one
    ``description: n/total unit (postfix)`` line when something changed and at least
    ``every`` seconds have passed, and a last one when closed.
    """

    def __init__(
        self,
        description: str,
        *,
        total: int | None,
        unit: str,
        stream: Any,
        every: float = PLAIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.desc, self.total, self.unit, self.n = description, total, unit, 0
        self.stream, self.every, self.clock = stream, every, clock
        self.postfix = ""
        self._written, self._last = "", -every

    def set_description_str(self, description: str, refresh: bool = True) -> None:
        self.desc = description
        if refresh:
            self._maybe_write()

    def update(self, count: float = 1) -> None:
        self.n += int(count)
        self._maybe_write()

    def set_postfix(
        self, ordered: dict[str, Any] | None = None, refresh: bool = True, **values: Any
    ) -> None:
        merged = {**(ordered or {}), **values}
        self.postfix = ", ".join(f"{key}={value}" for key, value in merged.items())
        if refresh:
            self._maybe_write()

    def _line(self) -> str:
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        return f"{self.desc}: {done} {self.unit}" + (f" ({self.postfix})" if self.postfix else "")

    def _maybe_write(self, force: bool = False) -> None:
        line, now = self._line(), self.clock()
        if line != self._written and (force or now - self._last >= self.every):
            print(line, file=self.stream, flush=True)
            self._written, self._last = line, now

    def close(self) -> None:
        self._maybe_write(force=True)


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
