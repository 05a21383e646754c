"""Every Redis key the service writes, named in one place.

Jobs, training runs, watcher claims and the locks of beat and the lost-batch
audit all live under ``bv:``; Celery's own keys (the ``inference`` and
``training`` lists, kombu's ``unacked`` hash) are kombu's. ``docs/design.md``
lists what each key holds and how long it lives.
"""

from __future__ import annotations

import hashlib

# Sorted set: job id scored by submission time; trimmed to 30 days and the newest 10,000
# whenever a job is created (infra.job_life), so `bucketvision jobs` reads a bounded index.
JOBS_BY_SUBMISSION = "bv:jobs"
ACTIVE_JOBS = "bv:jobs:active"  # set: jobs created and not yet finished
TRAINING_RUNS_BY_SUBMISSION = "bv:trains"  # sorted set: run id scored by submission time
BEAT_LOCK = "bv:beat:lock"  # one beat per broker
LOST_BATCH_AUDIT_LOCK = "bv:lost-batch-audit"  # one audit per interval among the workers


def job(job_id: str) -> str:
    """Hash: the job record (state, counts, stage seconds, timestamps)."""
    return f"bv:job:{job_id}"


def job_recorded(job_id: str) -> str:
    """Bitmap: bit ``b`` set once batch ``b`` is recorded (its lines are in its S3 part)."""
    return f"{job(job_id)}:recorded"


def job_attempts(job_id: str) -> str:
    """Hash, of the batches begun and not yet recorded: batch index -> 1 + its worker
    deaths; ``owner:<batch>`` -> its owner and lease end."""
    return f"{job(job_id)}:attempts"


def job_plan_offsets(job_id: str) -> str:
    """String: 8 bytes per batch (and one more), where each batch's message starts in the
    job's plan in S3 (``_jobs/<id>/plan.jsonl``); kept until the job ends."""
    return f"{job(job_id)}:offsets"


def job_finalize_lock(job_id: str) -> str:
    """String: the finalisation lease of the worker writing the job's files (30 s, renewed)."""
    return f"{job(job_id)}:finalize"


def job_isolation(job_id: str, batch: int) -> str:
    """Hash: a batch run one item at a time after a worker death (done lines, item in flight)."""
    return f"{job(job_id)}:isolate:{batch}"


def training_run(run_id: str) -> str:
    """Hash: a training run's record (request, state, epoch, metrics)."""
    return f"bv:train:{run_id}"


def training_lock(model_name: str) -> str:
    """String: the run training ``model_name`` now (one run per model at a time)."""
    return f"bv:train:lock:{model_name}"


def watch_claims(prefix: str) -> str:
    """Hash: the watcher's claims on the objects of one watched prefix (``s3://B/P/``)."""
    digest = hashlib.sha1(prefix.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"bv:watch:{digest}"
