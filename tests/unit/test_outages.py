"""Riding out outages: retried with backoff within a bound, other errors untouched."""

from __future__ import annotations

import pytest
import redis

from bucketvision.infra.outages import Backoff, ride_out
from bucketvision.infra.s3 import StorageError, StorageUnavailable


def test_an_outage_is_retried_until_the_call_succeeds() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise redis.exceptions.ConnectionError("Connection refused")
        return "done"

    assert ride_out(flaky, "test", within_seconds=600, sleep=slept.append) == "done"
    assert len(calls) == 4 and len(slept) == 3
    assert slept[0] <= 1.0 and slept[2] <= 4.0  # exponential: 1, 2, 4 s ceilings


def test_the_bound_is_kept_and_the_last_error_raised() -> None:
    slept: list[float] = []

    def down() -> None:
        raise StorageUnavailable("s3://b/k: S3 is unavailable")

    with pytest.raises(StorageUnavailable):
        ride_out(down, "test", within_seconds=0.5, sleep=slept.append)
    assert slept == []  # the first delay (>= 0.5 s) would already pass the bound


def test_errors_a_user_can_fix_are_not_retried() -> None:
    calls: list[int] = []

    def denied() -> None:
        calls.append(1)
        raise StorageError("access denied")

    with pytest.raises(StorageError, match="access denied"):
        ride_out(denied, "test", within_seconds=600, sleep=lambda _: None)
    assert calls == [1]


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(base=1.0, cap=30.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(0.5 <= delay <= 30.0 for delay in delays)
    assert max(delays[-4:]) >= 15.0  # reached the cap's range
    backoff.reset()
    assert backoff.next_delay() <= 1.0
