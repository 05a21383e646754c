"""producer.follow: the one poll loop of --wait, with a fake clock (no sleeping)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from bucketvision.infra.errors import WaitTimedOut
from bucketvision.producer.follow import Followed, Patience, follow, wait


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def reader(states: list[Any]) -> Any:
    """Each call reads the next state: a (state, done) pair, or an error to raise."""
    pending = list(states)

    def read() -> dict[str, Any]:
        state = pending.pop(0)
        if isinstance(state, Exception):
            raise state
        return {"state": state[0], "done": state[1]}

    return read


def run(states: list[Any], timeout: float | None = None) -> tuple[Any, list[str], list[Any]]:
    time, told, shown = FakeTime(), [], []
    followed = Followed(
        "job J",
        read=reader(states),
        is_final=lambda record: record["state"] == "finished",
        progress=lambda record: record["done"],
        stalled_hint=lambda record, quiet: f"quiet for {quiet:.0f} s",
    )
    result = follow(
        followed,
        show=shown.append,
        tell=told.append,
        patience=Patience(poll_seconds=1.0, stall_hint_seconds=2.5, timeout_seconds=timeout),
        clock=time.clock,
        sleep=time.sleep,
    )
    return result, told, shown


def test_it_returns_the_final_record_and_shows_each_one() -> None:
    result, told, shown = run([("running", 0), ("running", 5), ("finished", 9)])
    assert result == {"state": "finished", "done": 9}
    assert [record["done"] for record in shown] == [0, 5, 9]
    assert told == []


def test_a_quiet_record_gets_the_hint() -> None:
    _, told, _ = run([("running", 1)] * 5 + [("finished", 2)])
    assert told == ["quiet for 3 s", "quiet for 4 s"]


def test_redis_going_away_is_ridden_out() -> None:
    down = redis.exceptions.ConnectionError("connection refused")
    result, told, _ = run([("running", 0), down, down, ("finished", 3)])
    assert result["done"] == 3
    assert told == ["Redis unavailable: connection refused"] * 2


def test_a_wait_that_runs_out_says_so() -> None:
    with pytest.raises(WaitTimedOut, match="job J did not finish within 3 s"):
        run([("running", index) for index in range(10)], timeout=3)


def test_wait_draws_each_record_on_its_bar_and_closes_it() -> None:
    time, drawn = FakeTime(), []
    followed = Followed(
        "job J",
        read=reader([("running", 0), ("finished", 4)]),
        is_final=lambda record: record["state"] == "finished",
        progress=lambda record: record["done"],
        stalled_hint=lambda record, quiet: None,
        show=lambda bar, record: drawn.append((bar.total, record["done"])),
        total=4,
        unit="img",
    )
    patience = Patience(poll_seconds=1.0, stall_hint_seconds=30.0)
    result = wait(followed, progress=False, patience=patience, clock=time.clock, sleep=time.sleep)
    assert result["done"] == 4
    assert drawn == [(4, 0), (4, 4)]
