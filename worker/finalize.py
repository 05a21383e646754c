"""Completing a job: ``manifest.jsonl`` and ``summary.json``, written once.

The worker whose batch completes the job takes the job's finalisation lease in
Redis (``FINALIZE_LEASE_SECONDS``), renews it from a heartbeat thread while it
composes the manifest from the batches' parts (:mod:`worker.manifest_parts`) and
writes the summary under ``<output>/_jobs/<job_id>/``, and marks the job ended,
which releases it; then it deletes the parts and the plan. A finaliser that dies
(OOM, kill -9) stops renewing: the lease expires and the lost-batch audit
(:mod:`infra.batches`) has the job finalised again, from the same parts. Each
file is written whole (a completed multipart upload or a PUT), so a second
finaliser replaces rather than appends, and only the lease holder can mark the
job ended.

An outage while writing (S3 or Redis unreachable) releases the lease and is
raised, for the task to ride out or hand back. Any other S3 error (access
denied, a bucket policy, a missing bucket) will not mend by retrying: the job
ends ``failed`` with that error as its failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from bucketvision.infra import keys
from bucketvision.infra.job_life import live_owners
from bucketvision.infra.jobs import FINALIZE_LEASE_SECONDS, JobStore
from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.outputs import SUMMARY_FILE, job_file_key
from bucketvision.infra.review import ReviewPolicy
from bucketvision.infra.s3 import S3Store, StorageError, parse_s3_uri
from bucketvision.infra.vocabulary import CANCELLING, FINAL_STATES
from bucketvision.worker.manifest_parts import compose_manifest, delete_parts
from bucketvision.worker.review_files import write_review
from bucketvision.worker.review_select import ReviewSelector
from bucketvision.worker.shadow import finish_shadow
from bucketvision.worker.summary import SummaryTally

log = logging.getLogger("bucketvision.worker")


def finalize_job(
    jobs: JobStore,
    store: S3Store,
    job_id: str,
    owner: str,
    *,
    lease_seconds: float = FINALIZE_LEASE_SECONDS,
) -> dict[str, Any] | None:
    """Write the job files if this caller takes the lease; the job's summary if it ended it.

    None when the job has ended already, another finaliser holds the lease, or this
    one lost it while writing. A summary whose ``state`` is ``failed`` and that has
    a ``failure`` naming an S3 error was not written (see the module docstring).
    A cancelling job is finalised (as ``cancelled``) only once none of its batches runs.
    """
    state = jobs.get(job_id).get("state")
    if state in FINAL_STATES or (state == CANCELLING and live_owners(jobs.redis, job_id)):
        return None
    if not jobs.claim_finalization(job_id, owner, lease_seconds):
        return None
    with _Heartbeat(jobs, job_id, owner, lease_seconds):
        try:
            record = jobs.get(job_id)  # read under the lease: ended since the first look?
            if record.get("state") in FINAL_STATES:
                jobs.release_finalization(job_id, owner)
                return None
            finished_at = float(record.get("updated_at") or time.time())
            batches = jobs.recorded_batches(job_id)
            summary = _write_job_files(store, record, batches, finished_at)
            finish_shadow(store, jobs, record, batches)  # settled before the job ends
            _note_on_record(jobs, job_id, summary)
        except OUTAGE_ERRORS:
            _release_quietly(jobs, job_id, owner)
            raise
        except StorageError as error:  # not an outage: retrying will not help
            summary, batches = _failed_summary(record, error), None  # keep its parts
        except BaseException:
            _release_quietly(jobs, job_id, owner)
            raise
        ended = jobs.mark_finished(
            job_id, summary["state"], finished_at, owner=owner, failure=summary.get("failure")
        )
    if not ended:
        log.warning("job %s: lost the finalisation lease while writing; not ending it", job_id)
        return None
    if batches is not None:
        shadowed = bool(record.get("shadow"))
        delete_parts(store, parse_s3_uri(record["output"]), job_id, batches, shadowed=shadowed)
    return summary


def _write_job_files(
    store: S3Store, record: dict[str, Any], batches: Sequence[int], finished_at: float
) -> dict[str, Any]:
    """Compose the manifest from the parts of ``batches``, then PUT the summary; the summary."""
    output = parse_s3_uri(record["output"])
    job_id = str(record["job_id"])
    tally = SummaryTally(str(record["task"]))
    policy = ReviewPolicy.from_json(record.get("review"))
    if policy is None:
        compose_manifest(store, output, job_id, batches, tally.add)
        summary = tally.summary(record, finished_at)
    else:  # the review files are written before the summary that counts them
        selector = ReviewSelector(str(record["task"]), policy)
        compose_manifest(store, output, job_id, batches, lambda line: _both(tally, selector, line))
        summary = tally.summary(record, finished_at)
        routed = write_review(store, record, policy, selector.selected())
        summary["review"] = {**routed, "below": policy.below, "candidates": selector.candidates}
    store.put_json(output.bucket, job_file_key(output, job_id, SUMMARY_FILE), summary)
    return summary


def _both(tally: SummaryTally, selector: ReviewSelector, line: dict[str, Any]) -> None:
    tally.add(line)
    selector.add(line)


def _note_on_record(jobs: JobStore, job_id: str, summary: dict[str, Any]) -> None:
    """What ``status`` shows of the summary: drift, review (a second finaliser rewrites it)."""
    fields: dict[str, Any] = {}
    psi = (summary.get("confidence") or {}).get("psi")
    if psi is not None:
        fields["confidence_psi"] = psi
    if "review" in summary:
        fields["review_routed"] = summary["review"]["routed"]
        fields["review_folder"] = summary["review"]["folder"]
    if fields:
        jobs.redis.hset(keys.job(job_id), mapping=fields)


def _failed_summary(record: dict[str, Any], error: StorageError) -> dict[str, Any]:
    """What ends a job whose files S3 refused to take (not an outage: retrying will not help)."""
    reason = f"could not write the job files: {error}"
    if record.get("failure"):
        reason = f"{record['failure']}; {reason}"
    log.error("job %s failed: %s", record["job_id"], reason)
    return {"job_id": record["job_id"], "state": "failed", "failure": reason}


def _release_quietly(jobs: JobStore, job_id: str, owner: str) -> None:
    """Release the lease for a prompt retry; in a Redis outage it expires on its own."""
    try:
        jobs.release_finalization(job_id, owner)
    except OUTAGE_ERRORS as error:
        log.info("job %s: finalisation lease left to expire (%s)", job_id, error)


class _Heartbeat:
    """Renews the finaliser's lease every third of its length until the block ends.

    It stops on its own once the lease is no longer this finaliser's (expired or
    taken over); an outage only skips a beat.
    """

    def __init__(self, jobs: JobStore, job_id: str, owner: str, lease_seconds: float) -> None:
        self.jobs, self.job_id, self.owner = jobs, job_id, owner
        self.lease_seconds = lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="bv-finalize-lease", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                if not self.jobs.renew_finalization(self.job_id, self.owner, self.lease_seconds):
                    log.warning("job %s: finalisation lease lost", self.job_id)
                    return
            except OUTAGE_ERRORS as error:
                log.info("job %s: finalisation lease not renewed (%s)", self.job_id, error)
