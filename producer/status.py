"""Job status: counts, state, rate and ETA; following a job with a progress bar."""

from __future__ import annotations

import time
from typing import Any

from bucketvision.infra.confidence import DRIFT_PSI
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.outputs import MANIFEST_FILE, SUMMARY_FILE, job_file_uri
from bucketvision.infra.s3 import parse_s3_uri
from bucketvision.infra.vocabulary import FINAL_STATES
from bucketvision.producer.follow import Followed, Patience

JOB_PATIENCE = Patience(poll_seconds=0.5, stall_hint_seconds=30.0)


def job_status(record: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The status view of a job record (what ``status --json`` prints)."""
    now = time.time() if now is None else now
    done = int(record.get("ok", 0)) + int(record.get("error", 0)) + int(record.get("skipped", 0))
    total = int(record.get("total", 0))
    started = record.get("started_at")
    end = record.get("finished_at") or now
    elapsed = (end - started) if started else 0.0
    rate = done / elapsed if elapsed > 0 and done else 0.0
    remaining = max(total - done, 0)
    eta = remaining / rate if rate > 0 and record.get("state") not in FINAL_STATES else None
    status = {
        "job_id": record["job_id"],
        "state": record.get("state"),
        "task": record.get("task"),
        "model": record.get("model"),
        "input": record.get("input"),
        "output": record.get("output"),
        "total": total,
        "done": done,
        "ok": int(record.get("ok", 0)),
        "error": int(record.get("error", 0)),
        "skipped": int(record.get("skipped", 0)),
        "batches": int(record.get("batches", 0)),
        "done_batches": int(record.get("done_batches", 0)),
        "images_per_second": round(rate, 2),
        "eta_seconds": round(eta, 1) if eta is not None else None,
        "elapsed_seconds": round(elapsed, 2),
    }
    if record.get("failure"):
        status["failure"] = record["failure"]
    if record.get("resent_batches"):
        status["resent_batches"] = int(record["resent_batches"])
    if record.get("confidence_psi") is not None:
        status["confidence_psi"] = float(record["confidence_psi"])
        status["confidence_drift"] = float(record["confidence_psi"]) > DRIFT_PSI
    if record.get("review_folder"):
        routed = record.get("review_routed")
        status["review"] = {"routed": routed, "folder": record["review_folder"]}
    if record.get("state") in FINAL_STATES:
        output = parse_s3_uri(str(record["output"]))
        status["manifest"] = job_file_uri(output, str(record["job_id"]), MANIFEST_FILE)
        status["summary"] = job_file_uri(output, str(record["job_id"]), SUMMARY_FILE)
    return status


def format_status(status: dict[str, Any]) -> str:
    """A few human lines for the terminal."""
    lines = [
        f"job {status['job_id']}  {status['state']}  {status['task']} with {status['model']}",
        f"  {status['done']}/{status['total']} done: ok {status['ok']}, error {status['error']},"
        f" skipped {status['skipped']}",
        f"  {status['images_per_second']} images/s over {status['elapsed_seconds']} s"
        + (f", ETA {status['eta_seconds']} s" if status["eta_seconds"] is not None else ""),
        f"  input {status['input']}  ->  output {status['output']}",
    ]
    if status.get("failure"):
        lines.append(f"  failure: {status['failure']}")
    if status.get("resent_batches"):
        lines.append(f"  {status['resent_batches']} batches the broker lost were sent again")
    if status.get("confidence_drift"):
        lines.append(
            f"  confidence drift: PSI {status['confidence_psi']:.2f} against the model card's"
            f" evaluation split (above {DRIFT_PSI}): these images are unlike those the model"
            " was checked on; review them (--review-below) or retrain"
        )
    if status.get("review"):
        review = status["review"]
        lines.append(f"  review   {review['routed']} items routed to {review['folder']}")
    if status.get("summary"):
        lines.append(f"  summary  {status['summary']}")
        lines.append(f"  manifest {status['manifest']}")
    return "\n".join(lines)


def followed_job(jobs: JobStore, job_id: str) -> Followed[dict[str, Any]]:
    """A job to follow with :func:`bucketvision.producer.follow.wait` (``--wait``)."""
    record = jobs.get(job_id)
    label = f"{record['task']} {job_id}"

    def show(bar: Any, status: dict[str, Any]) -> None:
        bar.set_description_str(label, refresh=False)
        bar.set_postfix(ok=status["ok"], error=status["error"], refresh=False)
        bar.update(status["done"] - bar.n)  # draws the frame (or the plain line)

    def hint(status: dict[str, Any], quiet: float) -> str:
        return f"no progress for {quiet:.0f} s: is `bucketvision worker` running on this broker?"

    return Followed(
        f"job {job_id}",
        read=lambda: job_status(jobs.get(job_id)),
        is_final=lambda status: status["state"] in FINAL_STATES,
        progress=lambda status: status["done"],
        stalled_hint=hint,
        show=show,
        label=label,
        total=int(record["total"]),
        unit="img",
    )
