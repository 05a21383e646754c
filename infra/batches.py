"""Sending a job's batches, and sending again the ones the broker lost.

Celery on Redis can lose a message outright: kombu pops it (BRPOP) before it
records it as unacknowledged, so a connection cut or a warm shutdown between
the two drops it (celery/celery#4354, celery/kombu#305), and a Redis crash
with ``appendfsync everysec`` can forget the last second of writes. A job
with a lost batch would wait forever. So every batch's task body is kept in
the job's plan in S3 (:mod:`infra.job_plans`) until the job finishes, and each
task id names its job and batch. :class:`LostBatchAudit`, run by the workers,
looks at jobs that made no progress for ``quiet_seconds``: a batch sent (within
the job's feeding window) but not recorded, in no queue and not unacknowledged
is sent again. So is one whose sender died between taking it from the plan and
sending it. A batch sent twice is recorded once (:mod:`infra.jobs`), so the
cost of a false alarm is one no-op. A batch whose owner lease expired before it
was recorded, and which the broker does not hold, is sent again at the next
look, quiet or not: its owner died after acknowledging its message, while a
pool child's finisher completed it (:mod:`worker.finishing`).

The audit also drives finalisation to its end. A job whose batches are all
recorded but which has not ended, whose finalisation lease nobody holds and of
which no batch is queued or unacknowledged has lost its finaliser (it died
after recording, or while writing the job files): one of its batches is sent
again, and the worker that finds it recorded finalises the job. So is a job
being cancelled none of whose batches runs (no live owner): the worker that
skips the batch finalises it as ``cancelled``. The audit runs every
``FINALIZE_CHECK_SECONDS`` at most: such a job ends within about 45 s.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery
from kombu.transport.redis import Channel

from bucketvision.infra import keys
from bucketvision.infra.job_life import live_owners
from bucketvision.infra.job_plans import read_plan
from bucketvision.infra.jobs import FINALIZE_LEASE_SECONDS, JobNotFound, JobStore
from bucketvision.infra.messages import JobMessage
from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.ownership import expired_owners
from bucketvision.infra.queue import INFERENCE_QUEUE, task_ids_of
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.vocabulary import CANCELLING, FINAL_STATES, TASK_NAMES

log = logging.getLogger("bucketvision.batches")

FINALIZE_CHECK_SECONDS = FINALIZE_LEASE_SECONDS / 2  # the longest wait between two audits
_LOST = "after {quiet:.0f} s without progress (lost by the broker)"
_ORPHANED = "and their owner's lease expired (it died after its task returned)"


def task_id_for(job_id: str, batch: int) -> str:
    """A task id that says which job and batch it carries, and differs per sending."""
    return f"{job_id}:{batch}:{secrets.token_hex(4)}"


def batch_of_task_id(task_id: str) -> tuple[str, int] | None:
    """The job and batch a task id names (:func:`task_id_for`), or None."""
    parts = task_id.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def send_batches(app: Celery, messages: Iterable[JobMessage]) -> int:
    """Send each task message (stamped with ``enqueued_at``); returns how many were sent.

    The messages are in their job's plan already, so a send cut short (Redis gone
    mid-job) leaves batches that the lost-batch audit sends later.
    """
    planned = list(messages)
    with app.producer_or_acquire() as producer:
        for message in planned:
            stamped = replace(message, enqueued_at=time.time())
            app.send_task(
                TASK_NAMES[message.task],
                args=[stamped.to_json()],
                queue=INFERENCE_QUEUE,
                producer=producer,
                task_id=task_id_for(message.job_id, message.batch),
                # Celery's log line of the task names the job and batch, and nothing
                # more: by default it repeats the whole body (a third of the message).
                argsrepr=repr([{"job_id": message.job_id, "batch": message.batch}]),
            )
    return len(planned)


def send_from_plan(
    app: Celery,
    jobs: JobStore,
    store: S3Store,
    job: tuple[str, S3Uri],
    batches: Iterable[int],
) -> list[int]:
    """Read these batches of ``job`` (its id, its output) from its plan and send them.

    Returns the batches sent: those the plan holds.
    """
    job_id, output = job
    found = read_plan(store, jobs.redis, job_id, output, batches)
    send_batches(app, [found[batch] for batch in sorted(found)])
    return sorted(found)


@dataclass
class LostBatchAudit:
    """Finds the batches of quiet jobs that the broker no longer holds, and sends them again.

    It also sends a batch of each job left unfinalised by a dead finaliser, for a
    worker to finalise it. ``resend_lost=False`` does only that.
    """

    app: Celery
    jobs: JobStore
    store: S3Store
    quiet_seconds: float
    scan_limit: int = 200_000
    clock: Callable[[], float] = time.time
    resend_lost: bool = True

    def run_once(self) -> dict[str, list[int]]:
        """One look at every active job; returns the batches sent again, by job."""
        unfinalised: dict[str, dict[str, Any]] = {}
        stalled = {
            job_id: (record, missing, why)
            for job_id, record, missing, why in self._stalled(unfinalised)
            if missing
        }
        if not stalled and not unfinalised:
            return {}
        held = self._held_by_broker(set(stalled) | set(unfinalised))
        if held is None:
            return {}
        resent: dict[str, list[int]] = {}
        for job_id, (record, missing, why) in stalled.items():
            lost = sorted(missing - held.get(job_id, set()))
            if lost and (sent := self._send_again(record, lost, why)):
                resent[job_id] = sent
        for job_id, record in unfinalised.items():
            if not held.get(job_id) and (batch := self._send_to_finalize(record)) is not None:
                resent[job_id] = [batch]
        return resent

    def _stalled(
        self, unfinalised: dict[str, dict[str, Any]]
    ) -> Iterator[tuple[str, dict[str, Any], set[int], str]]:
        """Active jobs with batches to look for: id, record, those batches, and why.

        They are the batches of a job whose owner died holding them (lease expired,
        not recorded), else the unrecorded batches of a job quiet for ``quiet_seconds``.

        Jobs with every batch recorded (or cancelling with none running), not ended
        and with no finaliser holding their lease are added to ``unfinalised``.
        """
        for job_id in self.jobs.active_jobs():
            try:
                record = self.jobs.get(job_id)
            except JobNotFound:
                self.jobs.forget_active(job_id)
                continue
            if record["state"] in FINAL_STATES:
                self.jobs.forget_active(job_id)
                continue
            cancelling = record["state"] == CANCELLING
            if cancelling and live_owners(self.jobs.redis, job_id):
                continue  # the batches that run finalise it once they stop
            if cancelling or 0 < record.get("batches", 0) <= record.get("done_batches", 0):
                if not self.jobs.redis.exists(keys.job_finalize_lock(job_id)):
                    unfinalised[job_id] = record
                continue
            if not self.resend_lost or not record.get("planned"):
                continue  # a job whose plan is not whole yet has sent nothing
            if orphaned := self._orphaned(job_id):
                yield job_id, record, orphaned, _ORPHANED
                continue
            # A job waiting behind a long queue stays quiet: it is looked at again only
            # a quiet period after the last look (by any worker), not every interval.
            moments = ("submitted_at", "started_at", "updated_at", "audited_at")
            last = max(float(record.get(name) or 0) for name in moments)
            if self.clock() - last >= self.quiet_seconds:
                self.jobs.redis.hset(keys.job(job_id), "audited_at", self.clock())
                sent = int(record.get("sent", record.get("batches", 0)))
                unrecorded = self.jobs.unrecorded_batches(job_id, sent)
                yield job_id, record, {int(batch) for batch in unrecorded}, _LOST

    def _orphaned(self, job_id: str) -> set[int]:
        """Unrecorded batches whose owner lease expired (their owner died)."""
        expired = expired_owners(self.jobs.redis, job_id)
        if expired:
            expired -= set(self.jobs.recorded_batches(job_id).tolist())
        return expired

    def _held_by_broker(self, job_ids: set[str]) -> dict[str, set[int]] | None:
        """The batches of these jobs waiting in the queue or unacknowledged; None: too many."""
        client = self.jobs.redis
        queued, unacked = client.llen(INFERENCE_QUEUE), client.hlen(Channel.unacked_key)
        if queued + unacked > self.scan_limit:
            log.info(
                "lost-batch audit skipped: %s messages held, above %s",
                queued + unacked,
                self.scan_limit,
            )
            return None
        task_ids = list(
            task_ids_of(
                (
                    raw
                    for start in range(0, queued, 1000)
                    for raw in client.lrange(INFERENCE_QUEUE, start, start + 999)
                ),
                unacked=False,
            )
        )
        raws = (raw for _, raw in client.hscan_iter(Channel.unacked_key, count=1000))
        task_ids += task_ids_of(raws, unacked=True)
        held: dict[str, set[int]] = {}
        for task_id in task_ids:
            batch = batch_of_task_id(task_id)
            if batch and batch[0] in job_ids:
                held.setdefault(batch[0], set()).add(batch[1])
        return held

    def _send_to_finalize(self, record: dict[str, Any]) -> int | None:
        """Send the last batch of a job that lost its finaliser again; the batch sent."""
        job_id = str(record["job_id"])
        last = int(record.get("sent", record.get("batches", 0))) - 1
        job = (job_id, parse_s3_uri(record["output"]))
        sent = send_from_plan(self.app, self.jobs, self.store, job, [last]) if last >= 0 else []
        if not sent:
            log.warning("job %s: recorded but not finalised, and no plan to drive it", job_id)
            return None
        log.warning(
            "job %s: done (every batch recorded, or cancelled), yet no worker is finalising it"
            " (its finaliser died); sent batch %d again for a worker to finalise it",
            job_id,
            last,
        )
        return last

    def _send_again(self, record: dict[str, Any], batches: list[int], why: str) -> list[int]:
        job_id = str(record["job_id"])
        job = (job_id, parse_s3_uri(record["output"]))
        sent = send_from_plan(self.app, self.jobs, self.store, job, batches)
        self.jobs.redis.hincrby(keys.job(job_id), "resent_batches", len(sent))
        log.warning(
            "job %s: batches %s were in no queue, not unacknowledged and not recorded %s; "
            "sent again",
            job_id,
            sent,
            why.format(quiet=self.quiet_seconds),
        )
        return sent


def start_lost_batch_audit(
    app: Celery, jobs: JobStore, store: S3Store, quiet_seconds: float, stop: threading.Event
) -> threading.Thread:
    """Audit every quarter of ``quiet_seconds`` (at most every 15 s) in a daemon thread.

    Several workers may run one; a lock in Redis lets one of them look per interval.
    With ``quiet_seconds`` 0 lost batches are not sent again, but jobs that lost
    their finaliser are still finalised.
    """
    audit = LostBatchAudit(app, jobs, store, quiet_seconds, resend_lost=quiet_seconds > 0)
    interval = FINALIZE_CHECK_SECONDS
    if quiet_seconds > 0:
        interval = max(1.0, min(interval, quiet_seconds / 4))
    owner = f"{os.uname().nodename}:{os.getpid()}"

    def loop() -> None:
        while not stop.wait(interval):
            try:
                if jobs.redis.set(
                    keys.LOST_BATCH_AUDIT_LOCK, owner, nx=True, ex=int(interval) or 1
                ):
                    audit.run_once()
            except OUTAGE_ERRORS as error:
                log.info("lost-batch audit skipped: %s", error)
            except Exception:  # a bug here must not take the worker down
                log.exception("lost-batch audit failed")

    thread = threading.Thread(target=loop, name="lost-batch-audit", daemon=True)
    thread.start()
    return thread
