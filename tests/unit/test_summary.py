"""worker.finalize summaries and percentiles; producer.status rate, ETA and text."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.producer.status import format_status, job_status
from bucketvision.worker.finalize import finalize_job
from bucketvision.worker.manifest_parts import write_part
from bucketvision.worker.summary import build_summary, iso, percentiles

SUMMARY_FIELDS = {
    "job_id",
    "task",
    "model",
    "input",
    "output",
    "state",
    "total",
    "ok",
    "error",
    "skipped",
    "submitted_at",
    "started_at",
    "finished_at",
    "wall_seconds",
    "images_per_second",
    "latency_ms",
    "stage_seconds",
}
# Beyond the first summary's fields: why items failed, and redeliveries.
EXTRA_FIELDS = {"errors_by_type", "redelivered_items", "confidence"}
BUCKET = "unit-bucket"


def record(**changes: Any) -> dict[str, Any]:
    """A job record as JobStore.get returns it (numbers decoded)."""
    base: dict[str, Any] = {
        "job_id": "20260101T000000Z-abcdef01",
        "state": "running",
        "task": "classify",
        "model": "digits@v1",
        "input": f"s3://{BUCKET}/incoming/",
        "output": f"s3://{BUCKET}/results/",
        "total": 4,
        "batches": 2,
        "done_batches": 2,
        "ok": 2,
        "error": 1,
        "skipped": 1,
        "submitted_at": 1000.0,
        "started_at": 1001.0,
        "stage_download": 1.23456,
        "stage_decode": 0.5,
        "stage_infer": 2.0,
        "stage_upload": 0.25,
    }
    base.update(changes)
    return base


def line(status: str, latency_ms: float) -> dict[str, Any]:
    return {"key": f"k{latency_ms}", "status": status, "latency_ms": latency_ms}


LINES = [line("ok", 10.0), line("ok", 20.0), line("error", 30.0), line("skipped", 40.0)]


# --- percentiles -------------------------------------------------------------------------------


def test_percentiles_of_one_to_a_hundred() -> None:
    assert percentiles([float(v) for v in range(1, 101)]) == {
        "p50": 50.5,
        "p95": 95.05,
        "p99": 99.01,
    }


def test_percentiles_do_not_depend_on_order() -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0]
    assert percentiles(values) == percentiles(sorted(values))
    assert percentiles(values)["p50"] == 5.0


def test_percentiles_of_one_value_and_of_none() -> None:
    assert percentiles([12.3456]) == {"p50": 12.346, "p95": 12.346, "p99": 12.346}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}


# --- build_summary -----------------------------------------------------------------------------


def test_summary_has_exactly_the_design_fields() -> None:
    summary = build_summary(record(), LINES, finished_at=1010.0)
    assert set(summary) == SUMMARY_FIELDS | EXTRA_FIELDS
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99"}
    assert set(summary["stage_seconds"]) == {"download", "decode", "infer", "upload"}
    json.dumps(summary)  # it is written as JSON


def test_summary_values() -> None:
    summary = build_summary(record(), LINES, finished_at=1010.0)
    assert summary["state"] == "finished"
    assert (summary["total"], summary["ok"], summary["error"], summary["skipped"]) == (4, 2, 1, 1)
    assert summary["ok"] + summary["error"] + summary["skipped"] == summary["total"]
    assert summary["wall_seconds"] == 10.0
    assert summary["images_per_second"] == 0.4
    assert summary["latency_ms"] == {"p50": 25.0, "p95": 38.5, "p99": 39.7}
    assert summary["stage_seconds"] == {
        "download": 1.235,
        "decode": 0.5,
        "infer": 2.0,
        "upload": 0.25,
    }
    assert summary["submitted_at"] == "1970-01-01T00:16:40.000+00:00"
    assert summary["started_at"] == "1970-01-01T00:16:41.000+00:00"
    assert summary["finished_at"] == "1970-01-01T00:16:50.000+00:00"
    for name in ("job_id", "task", "model", "input", "output"):
        assert summary[name] == record()[name]


def test_counts_come_from_the_manifest_lines_not_the_record_counters() -> None:
    summary = build_summary(record(ok=99, error=99, skipped=99), LINES, finished_at=1010.0)
    assert (summary["ok"], summary["error"], summary["skipped"]) == (2, 1, 1)


def test_images_per_second_is_lines_over_wall_time() -> None:
    lines = [line("ok", 1.0)] * 300
    summary = build_summary(record(total=300), lines, finished_at=1000.0 + 120.0)
    assert summary["images_per_second"] == 2.5
    assert summary["wall_seconds"] == 120.0


def test_a_record_with_a_failure_is_failed() -> None:
    failed = record(failure="model digits@v9 could not be loaded: gone")
    summary = build_summary(failed, LINES, finished_at=1010.0)
    assert summary["state"] == "failed"
    assert summary["failure"] == "model digits@v9 could not be loaded: gone"
    assert set(summary) - SUMMARY_FIELDS - EXTRA_FIELDS == {"failure"}


def test_summary_of_a_job_that_never_started() -> None:
    summary = build_summary(record(started_at=None, total=0), [], finished_at=1000.0)
    assert summary["started_at"] is None
    assert (summary["ok"], summary["error"], summary["skipped"]) == (0, 0, 0)
    assert summary["images_per_second"] == 0.0
    assert summary["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    missing_stages = build_summary({k: v for k, v in record().items() if "stage" not in k}, [], 1.0)
    assert missing_stages["stage_seconds"] == dict.fromkeys(
        ("download", "decode", "infer", "upload"), 0.0
    )


def test_iso() -> None:
    assert iso(None) is None
    assert iso(0.0) == "1970-01-01T00:00:00.000+00:00"
    assert iso(1.2345) == "1970-01-01T00:00:01.234+00:00"


# --- finalize_job with a fake job store and a real (moto) S3 store -----------------------------


class FakeJobs:
    """The JobStore methods finalize_job uses, in memory."""

    def __init__(
        self, job: dict[str, Any], lines: list[dict[str, Any]], store: S3Store | None = None
    ) -> None:
        """With ``store``, the lines are written as the job's one recorded batch (part 0)."""
        self.job = job
        self.lines = lines
        if store is not None:
            write_part(store, parse_s3_uri(job["output"]), job["job_id"], 0, lines)
        self.claimed_by: str | None = None
        self.finished: list[tuple[str, str, float]] = []
        self.released = 0

    def get(self, job_id: str) -> dict[str, Any]:
        return dict(self.job)

    def claim_finalization(self, job_id: str, owner: str, lease_seconds: float = 30) -> bool:
        if self.claimed_by is not None:
            return False
        self.claimed_by = owner
        return True

    def renew_finalization(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        return self.claimed_by == owner

    def release_finalization(self, job_id: str, owner: str | None = None) -> None:
        if owner is None or self.claimed_by == owner:
            self.claimed_by = None
            self.released += 1

    def recorded_batches(self, job_id: str) -> np.ndarray:
        return np.arange(1 if self.lines else 0)

    def mark_finished(
        self,
        job_id: str,
        state: str,
        finished_at: float,
        *,
        owner: str | None = None,
        failure: str | None = None,
    ) -> bool:
        if owner is not None and self.claimed_by != owner:
            return False
        self.finished.append((job_id, state, finished_at))
        self.job.update({"state": state, **({"failure": failure} if failure else {})})
        self.claimed_by = None
        return True


def test_finalize_job_writes_manifest_and_summary_once(store: S3Store) -> None:
    job = record(updated_at=1010.0)
    lines = [dict(entry, key=f"incoming/{i}.png") for i, entry in enumerate(LINES)]
    jobs = FakeJobs(job, lines, store)

    summary = finalize_job(jobs, store, job["job_id"], "worker-1")  # type: ignore[arg-type]

    assert summary is not None
    prefix = f"results/_jobs/{job['job_id']}/"
    manifest = store.get_text(BUCKET, prefix + "manifest.jsonl")
    assert [json.loads(row) for row in manifest.splitlines()] == lines
    assert manifest.endswith("\n")
    assert store.get_json(BUCKET, prefix + "summary.json") == summary
    assert summary["wall_seconds"] == 10.0
    assert jobs.finished == [(job["job_id"], "finished", 1010.0)]
    # a second finaliser (redelivered batch) does nothing
    assert finalize_job(jobs, store, job["job_id"], "worker-2") is None  # type: ignore[arg-type]
    assert len(jobs.finished) == 1


def test_finalize_job_loses_the_claim(store: S3Store) -> None:
    jobs = FakeJobs(record(), LINES)
    jobs.claimed_by = "someone-else"
    assert finalize_job(jobs, store, "J", "me") is None  # type: ignore[arg-type]
    assert jobs.finished == []
    assert not store.exists(BUCKET, "results/_jobs/J/summary.json")


def test_finalize_job_fails_the_job_when_s3_refuses_the_files(store: S3Store) -> None:
    """A missing bucket will not mend by retrying: the job ends failed, saying why."""
    jobs = FakeJobs(record(output="s3://no-such-bucket/results/"), LINES)
    summary = finalize_job(jobs, store, "J", "me")  # type: ignore[arg-type]
    assert summary is not None and summary["state"] == "failed"
    assert "s3://no-such-bucket/results/_jobs/" in summary["failure"]
    assert "the bucket does not exist" in summary["failure"]
    assert [state for _, state, _ in jobs.finished] == ["failed"]
    assert jobs.job["failure"] == summary["failure"]
    assert jobs.claimed_by is None


def test_finalize_job_releases_the_claim_in_an_outage(store: S3Store) -> None:
    from bucketvision.infra.s3 import StorageUnavailable

    class Down(S3Store):
        def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "") -> None:
            raise StorageUnavailable(f"writing s3://{bucket}/{key}: S3 is unavailable")

    jobs = FakeJobs(record(), LINES, store)
    with pytest.raises(StorageUnavailable):
        finalize_job(jobs, Down(store.client), "J", "me")  # type: ignore[arg-type]
    assert jobs.released == 1
    assert jobs.claimed_by is None
    assert jobs.finished == []


# --- job_status and format_status --------------------------------------------------------------


def test_running_job_rate_and_eta() -> None:
    status = job_status(record(total=20, ok=3, error=1, skipped=1), now=1011.0)
    assert status["done"] == 5
    assert status["elapsed_seconds"] == 10.0
    assert status["images_per_second"] == 0.5
    assert status["eta_seconds"] == 30.0  # 15 remaining at 0.5 per second
    assert "manifest" not in status and "summary" not in status


def test_finished_job_uses_finished_at_and_has_no_eta() -> None:
    job = record(state="finished", total=4, finished_at=1021.0)
    status = job_status(job, now=5000.0)
    assert status["elapsed_seconds"] == 20.0
    assert status["images_per_second"] == 0.2
    assert status["eta_seconds"] is None
    assert status["manifest"] == f"s3://{BUCKET}/results/_jobs/{job['job_id']}/manifest.jsonl"
    assert status["summary"] == f"s3://{BUCKET}/results/_jobs/{job['job_id']}/summary.json"


def test_queued_job_has_no_rate_and_no_eta() -> None:
    job = record(state="queued", ok=0, error=0, skipped=0, total=10)
    del job["started_at"]
    status = job_status(job, now=2000.0)
    assert (status["done"], status["images_per_second"], status["eta_seconds"]) == (0, 0.0, None)
    assert status["elapsed_seconds"] == 0.0


def test_started_job_with_nothing_done_has_no_eta() -> None:
    status = job_status(record(ok=0, error=0, skipped=0, total=10), now=1100.0)
    assert status["images_per_second"] == 0.0
    assert status["eta_seconds"] is None


def test_done_never_makes_remaining_negative() -> None:
    status = job_status(record(total=3, ok=3, error=1, skipped=0), now=1003.0)
    assert status["eta_seconds"] == 0.0


def test_failed_job_status_carries_the_failure() -> None:
    status = job_status(record(state="failed", failure="boom", finished_at=1002.0), now=1e9)
    assert status["failure"] == "boom"
    assert status["eta_seconds"] is None


def test_format_status_running() -> None:
    text = format_status(job_status(record(total=20, ok=3, error=1, skipped=1), now=1011.0))
    lines = text.splitlines()
    assert lines[0] == "job 20260101T000000Z-abcdef01  running  classify with digits@v1"
    assert "5/20 done: ok 3, error 1, skipped 1" in lines[1]
    assert "0.5 images/s over 10.0 s, ETA 30.0 s" in lines[2]
    assert f"input s3://{BUCKET}/incoming/  ->  output s3://{BUCKET}/results/" in lines[3]
    assert "summary" not in text and "failure" not in text


def test_format_status_finished_and_failed() -> None:
    finished = format_status(job_status(record(state="finished", finished_at=1021.0), now=0.0))
    assert "ETA" not in finished
    assert "summary  s3://unit-bucket/results/_jobs/" in finished
    assert "manifest s3://unit-bucket/results/_jobs/" in finished
    failed = format_status(
        job_status(record(state="failed", failure="model gone", finished_at=1002.0))
    )
    assert "  failure: model gone" in failed.splitlines()


def test_summary_says_why_items_failed_and_what_was_redelivered() -> None:
    lines = [
        {**LINES[0], "attempts": 2},
        {
            **LINES[0],
            "key": "b",
            "status": "error",
            "error": {"type": "DeadLetter", "message": "m"},
        },
        {
            **LINES[0],
            "key": "c",
            "status": "error",
            "error": {"type": "DeadLetter", "message": "m"},
        },
        {
            **LINES[0],
            "key": "d",
            "status": "error",
            "error": {"type": "CorruptImage", "message": "m"},
        },
    ]
    summary = build_summary(record(total=4), lines, finished_at=1010.0)
    assert summary["errors_by_type"] == {"CorruptImage": 1, "DeadLetter": 2}
    assert summary["redelivered_items"] == 1


def test_status_says_when_a_job_drifted_and_what_went_to_review() -> None:
    folder = f"s3://{BUCKET}/results/_review/J/"
    drifted = record(
        state="finished", finished_at=1021.0, confidence_psi=0.83, review_routed=7,
        review_folder=folder,
    )  # fmt: skip
    status = job_status(drifted, now=0.0)
    assert status["confidence_drift"] is True and status["review"] == {
        "routed": 7,
        "folder": folder,
    }
    text = format_status(status)
    assert "confidence drift: PSI 0.83" in text and f"7 items routed to {folder}" in text
    calm = job_status(record(state="finished", finished_at=1021.0, confidence_psi=0.05), now=0.0)
    assert calm["confidence_drift"] is False and "drift" not in format_status(calm)
