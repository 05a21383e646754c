"""The Redis job store: job records, which batches are recorded, and counters.

Redis holds what is O(batches) or smaller: the record (counts, state, times), a
bitmap of the recorded batches, the owners of the running ones and where each
batch starts in the plan (:mod:`infra.job_plans`). What is O(items), the keys
and the manifest lines, is in S3. Celery delivers a batch at least once, so
everything here is keyed by ``(job_id, batch_index)`` and applied atomically by
Lua scripts: a batch that runs twice is recorded once, its items are counted
once, and the job is
finalised by exactly one worker: the holder of a short lease, renewed while it
works, so a finaliser that dies frees the job within ``FINALIZE_LEASE_SECONDS``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from bucketvision.infra import keys
from bucketvision.infra.errors import UserError
from bucketvision.infra.job_life import STAGES, create_job, decode_record
from bucketvision.infra.ownership import (
    BEGIN_BATCH_SCRIPT,
    ENDED_STATES,
    BatchLeases,
    BatchStart,
    lease_ms,
)
from bucketvision.infra.vocabulary import CANCELLING, FINAL_STATES

__all__ = ["BatchRecord", "BatchStart", "JobNotFound", "JobStore"]

JOB_TTL_SECONDS = 30 * 24 * 3600
# The finaliser renews its lease every third of it (worker.finalize); a dead one frees it.
FINALIZE_LEASE_SECONDS = 30

# Recording a batch sets its bit in the job's bitmap (KEYS[2]) once, adds its counts and
# ends its owner's lease (infra.ownership): nobody needs to run it. A job in a final state
# (ARGV[13...]) changes no more: a late batch is not recorded. A first recording of a job
# that is not being cancelled (ARGV[12]) also takes the next batch of the plan to send,
# if any is left (the feeding window moves on by one); -1 when none.
_RECORD_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, 0, '', -1} end
redis.call('HDEL', KEYS[3], 'owner:' .. ARGV[1], ARGV[1])
local batches = tonumber(redis.call('HGET', KEYS[1], 'batches'))
local state = redis.call('HGET', KEYS[1], 'state') or ''
local final = false
for i = 13, #ARGV do if state == ARGV[i] then final = true end end
if final or redis.call('SETBIT', KEYS[2], ARGV[1], 1) == 1 then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'done_batches') or '0'), batches, state, -1}
end
redis.call('EXPIRE', KEYS[2], ARGV[11])
for i, name in ipairs({'ok', 'error', 'skipped'}) do
  redis.call('HINCRBY', KEYS[1], name, ARGV[1 + i])
end
for i, stage in ipairs({'download', 'decode', 'infer', 'upload'}) do
  redis.call('HINCRBYFLOAT', KEYS[1], 'stage_' .. stage, ARGV[4 + i])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[9])
if ARGV[10] ~= '' then redis.call('HSETNX', KEYS[1], 'failure', ARGV[10]) end
local done = redis.call('HINCRBY', KEYS[1], 'done_batches', 1)
local following = -1
local sent = tonumber(redis.call('HGET', KEYS[1], 'sent') or batches)
if state ~= ARGV[12] and sent < batches then
  following = sent
  redis.call('HSET', KEYS[1], 'sent', sent + 1)
end
return {1, done, batches, state, following}
"""

# Renew (ARGV[2] ms) or release (0) the lease of its holder ARGV[1] ('': whoever holds it).
_LEASE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# The final state of a job that has not ended, written only by the lease holder ARGV[1] ('':
# anyone): a finaliser that lost its lease, or finds the job abandoned, changes nothing.
# Only the record stays (for its TTL): the per-batch keys go.
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
for i = 7, #ARGV do if state == ARGV[i] then return 0 end end
if ARGV[1] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'failure', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SREM', KEYS[6], ARGV[6])
return 1
"""


class JobNotFound(UserError):
    """No job with that id is known to Redis."""


@dataclass(frozen=True)
class BatchRecord:
    """What recording a batch changed: was it new, and is the job now complete?"""

    first_time: bool
    done_batches: int
    total_batches: int
    job_state: str = "running"  # as the batch was recorded (``cancelling``: finalise sooner)
    next_batch: int | None = None  # the batch of the plan this recording is to send now

    @property
    def job_complete(self) -> bool:
        return self.done_batches >= self.total_batches


class JobStore:
    """Reads and writes job state in Redis; safe to share between threads."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._record_batch = client.register_script(_RECORD_BATCH)
        self._begin_batch = client.register_script(BEGIN_BATCH_SCRIPT)
        self.leases = BatchLeases(client)
        self._lease = client.register_script(_LEASE)
        self._finish = client.register_script(_FINISH)

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        options = {"socket_timeout": 30, "socket_connect_timeout": 5, "health_check_interval": 30}
        return cls(redis.Redis.from_url(url, retry_on_timeout=True, **options))

    def create(self, job_id: str, fields: dict[str, Any]) -> bool:
        """Create the job record (state ``queued``) and index it; False if the id exists."""
        now = time.time()
        record = {"job_id": job_id, "state": "queued", "ok": 0, "error": 0, "skipped": 0}
        record.update({"done_batches": 0, "submitted_at": now})
        record.update(fields)
        encoded = {
            name: json.dumps(value) if isinstance(value, dict | list | bool) else value
            for name, value in record.items()
            if value is not None
        }
        return create_job(self.redis, job_id, encoded, ttl_seconds=JOB_TTL_SECONDS, now=now)

    def mark_planned(self, job_id: str, sent: int) -> None:
        """The job's plan is whole (:mod:`infra.job_plans`); its first ``sent`` batches go now."""
        self.redis.hset(keys.job(job_id), mapping={"planned": 1, "sent": sent})

    def recorded_batches(self, job_id: str, below: int | None = None) -> np.ndarray:
        """The indices of the recorded batches (below ``below``), in order."""
        return np.flatnonzero(self._recorded_bits(job_id, below))

    def unrecorded_batches(self, job_id: str, below: int) -> np.ndarray:
        """The indices below ``below`` of the batches not recorded yet, in order."""
        return np.flatnonzero(~self._recorded_bits(job_id, below))

    def _recorded_bits(self, job_id: str, below: int | None) -> np.ndarray:
        raw = self.redis.get(keys.job_recorded(job_id)) or b""
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8)).astype(bool)
        if below is None:
            return bits
        if len(bits) < below:
            bits = np.concatenate([bits, np.zeros(below - len(bits), dtype=bool)])
        return bits[:below]

    def active_jobs(self) -> list[str]:
        """Jobs created and not yet finished (those created before this set existed are not)."""
        return sorted(item.decode() for item in self.redis.smembers(keys.ACTIVE_JOBS))

    def forget_active(self, job_id: str) -> None:
        self.redis.srem(keys.ACTIVE_JOBS, job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        """The job record with numbers decoded; raises JobNotFound."""
        raw = self.redis.hgetall(keys.job(job_id))
        if not raw:
            raise JobNotFound(
                f"no job {job_id!r} in Redis; check the id (`bucketvision jobs` lists the"
                " recent ones) and BV_BROKER_URL"
            )
        return decode_record(raw)

    def get_many(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        """The records of these jobs in one round trip; None for one that has expired."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [decode_record(raw) if raw else None for raw in pipe.execute()]

    def begin_batch(
        self,
        job_id: str,
        batch_index: int,
        *,
        owner: str | None = None,
        lease_seconds: float | None = None,
    ) -> BatchStart:
        """Mark the job running and make ``owner`` the batch's owner, in one round trip.

        Another owner whose lease has not expired keeps the batch (``owned_elsewhere``);
        one whose lease expired died, and the batch is taken over with one death counted
        (:mod:`bucketvision.infra.ownership`). A batch already recorded, or of a job that
        has ended, gets no owner: a job's state comes back, to skip the batch.
        """
        attempt, recorded, state, expiry, death = self._begin_batch(
            keys=[keys.job(job_id), keys.job_attempts(job_id), keys.job_recorded(job_id)],
            args=[
                *(batch_index, time.time(), owner or secrets.token_hex(8)),
                *(lease_ms(lease_seconds), JOB_TTL_SECONDS, *ENDED_STATES),
            ],
        )
        if int(attempt) < 0:
            raise JobNotFound(f"job {job_id} has no record in Redis (expired or deleted)")
        text = state.decode() if isinstance(state, bytes) else str(state)
        return BatchStart(int(attempt), bool(recorded), text, int(expiry), bool(death))

    def record_batch(
        self,
        job_id: str,
        batch_index: int,
        manifest_lines: Iterable[dict[str, Any]],
        stage_seconds: dict[str, float],
        failure: str | None = None,
    ) -> BatchRecord:
        """Add the counts of a batch's manifest lines, once per batch.

        The lines themselves are the batch's manifest part in S3, written before this
        (:func:`bucketvision.worker.finalize.write_part`); Redis keeps their counts.
        """
        counts = Counter(str(line["status"]) for line in manifest_lines)
        first, done, batches, state, following = self._record_batch(
            keys=[keys.job(job_id), keys.job_recorded(job_id), keys.job_attempts(job_id)],
            args=[
                *(batch_index, counts["ok"], counts["error"], counts["skipped"]),
                *(stage_seconds.get(stage, 0.0) for stage in STAGES),
                *(time.time(), failure or "", JOB_TTL_SECONDS, CANCELLING, *FINAL_STATES),
            ],
        )
        if int(first) < 0:
            raise JobNotFound(f"job {job_id} has no record in Redis (expired or deleted)")
        text = state.decode() if isinstance(state, bytes) else str(state)
        next_batch = int(following) if int(following) >= 0 else None
        return BatchRecord(bool(first), int(done), int(batches), text, next_batch)

    def claim_finalization(
        self, job_id: str, owner: str, lease_seconds: float = FINALIZE_LEASE_SECONDS
    ) -> bool:
        """True for the one worker that may write the job's files now (it holds the lease)."""
        lease_ms = max(1, int(lease_seconds * 1000))
        return bool(self.redis.set(keys.job_finalize_lock(job_id), owner, nx=True, px=lease_ms))

    def renew_finalization(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease; False when it no longer holds it (it expired, or was taken)."""
        lease_ms = max(1, int(lease_seconds * 1000))
        return bool(self._lease(keys=[keys.job_finalize_lock(job_id)], args=[owner, lease_ms]))

    def release_finalization(self, job_id: str, owner: str | None = None) -> None:
        """Give the lease up: ``owner``'s only, or whoever holds it when None."""
        self._lease(keys=[keys.job_finalize_lock(job_id)], args=[owner or "", 0])

    def mark_finished(
        self,
        job_id: str,
        state: str,
        finished_at: float,
        *,
        owner: str | None = None,
        failure: str | None = None,
    ) -> bool:
        """Record the final state (and ``failure``) and release the lease; True if it changed.

        Only a job that has not ended changes, and with ``owner`` only while it holds
        the lease. The per-batch keys are deleted; the record is kept for its TTL.
        """
        names = (keys.job, keys.job_recorded, keys.job_attempts, keys.job_plan_offsets)
        touched = [*(name(job_id) for name in names), keys.job_finalize_lock(job_id)]
        touched.append(keys.ACTIVE_JOBS)
        args = [owner or "", state, finished_at, failure or "", JOB_TTL_SECONDS, job_id]
        args += FINAL_STATES  # a cancelling job is not final: its finaliser ends it
        return bool(self._finish(keys=touched, args=args))

    def abandon(self, job_id: str, reason: str) -> bool:
        """Mark a job whose batches could not all be sent as failed, with the reason.

        Only an unfinished job changes; a job that does not exist (its record was
        never written) is left absent. True when the record changed.
        """
        return self.mark_finished(job_id, "failed", time.time(), failure=reason)

    def recent_jobs(self, count: int = 20, offset: int = 0) -> list[str]:
        """Job ids newest first from the index (``bv:jobs``), ``count`` after ``offset``."""
        newest = self.redis.zrevrange(keys.JOBS_BY_SUBMISSION, offset, offset + count - 1)
        return [item.decode() for item in newest]
