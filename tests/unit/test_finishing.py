"""worker.finishing: one batch finishing behind its task at a time, waited for at exit."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import bucketvision.worker.finishing as finishing
from bucketvision.infra.logs import bind_context, current_context, reset_context
from bucketvision.worker.finishing import Finisher, drain_finisher, get_finisher


def test_the_work_runs_behind_the_caller_and_the_next_waits_for_it() -> None:
    finisher = Finisher()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        release.wait(5)
        order.append("first")

    finisher.hand_over(first, "bv-finish-J:0")
    assert order == [] and not finisher.wait(0.05)  # handed over: the caller goes on

    def hand_over_second() -> None:
        finisher.hand_over(lambda: order.append("second"), "bv-finish-J:1")

    second = threading.Thread(target=hand_over_second)
    second.start()
    time.sleep(0.1)
    assert second.is_alive(), "the next batch was handed over while one was finishing"
    release.set()
    second.join(5)
    assert finisher.wait(5) and order == ["first", "second"]


def test_the_work_carries_the_log_context_of_its_task() -> None:
    finisher, seen = Finisher(), {}
    token = bind_context(job_id="J7", batch=4)
    try:
        finisher.hand_over(lambda: seen.update(current_context()), "bv-finish-J7:4")
    finally:
        reset_context(token)
    assert finisher.wait(5)
    assert seen["job_id"] == "J7" and seen["batch"] == 4
    assert "job_id" not in current_context()


def test_a_failing_work_is_logged_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finisher, ran = Finisher(), []

    def broken() -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="bucketvision.worker"):
        finisher.hand_over(broken, "bv-finish-J:0")
        finisher.hand_over(lambda: ran.append(1), "bv-finish-J:1")
        assert finisher.wait(5)
    assert ran == [1]
    assert "bv-finish-J:0 failed" in caplog.text and "a bug" in caplog.text


def test_a_process_exit_waits_for_the_batch_finishing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finishing, "_finisher", None)
    finisher = get_finisher()
    assert get_finisher() is finisher
    done = []
    finisher.hand_over(lambda: (time.sleep(0.3), done.append(1)), "bv-finish-J:0")
    drain_finisher(pid=0, exitcode=0)
    assert done == [1]


def test_an_exit_that_cannot_wait_says_the_audit_sends_the_batch_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(finishing, "_finisher", None)
    monkeypatch.setattr(finishing, "DRAIN_SECONDS", 0.05)
    release = threading.Event()
    get_finisher().hand_over(lambda: release.wait(5), "bv-finish-J:0")
    with caplog.at_level(logging.ERROR, logger="bucketvision.worker"):
        drain_finisher()
    release.set()
    assert "lost-batch audit sends it again" in caplog.text
