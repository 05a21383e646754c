"""The Redis job store: job records, per-batch manifests and counters.

Celery delivers a batch at least once, so everything here is keyed by
``(job_id, batch_index)`` and applied atomically by Lua scripts: a batch that
runs twice is recorded once, its items are counted once, and the job is
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

import redis

from bucketvision.infra import keys
from bucketvision.infra.errors import UserError
from bucketvision.infra.job_life import STAGES, create_job, decode_record
from bucketvision.infra.outputs import jsonl, parse_jsonl
from bucketvision.infra.ownership import (
    BEGIN_BATCH_SCRIPT,
    ENDED_STATES,
    BatchLeases,
    BatchStart,
    lease_ms,
)
from bucketvision.infra.vocabulary import FINAL_STATES

__all__ = ["BatchRecord", "BatchStart", "JobNotFound", "JobStore"]

JOB_TTL_SECONDS = 30 * 24 * 3600
# The finaliser renews its lease every third of it (worker.finalize); a dead one frees it.
FINALIZE_LEASE_SECONDS = 30

# Recording a batch also ends its owner's lease (infra.ownership): nobody needs to run it.
# A job in a final state (ARGV[12...]) changes no more: a late batch is not recorded.
_RECORD_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, 0, ''} end
redis.call('HDEL', KEYS[3], 'owner:' .. ARGV[1])
local batches = tonumber(redis.call('HGET', KEYS[1], 'batches'))
local state = redis.call('HGET', KEYS[1], 'state') or ''
local final = false
for i = 12, #ARGV do if state == ARGV[i] then final = true end end
if final or redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'done_batches') or '0'), batches, state}
end
for i, name in ipairs({'ok', 'error', 'skipped'}) do
  redis.call('HINCRBY', KEYS[1], name, ARGV[2 + i])
end
for i, stage in ipairs({'download', 'decode', 'infer', 'upload'}) do
  redis.call('HINCRBYFLOAT', KEYS[1], 'stage_' .. stage, ARGV[5 + i])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[10])
if ARGV[11] ~= '' then redis.call('HSETNX', KEYS[1], 'failure', ARGV[11]) end
local done = redis.call('HINCRBY', KEYS[1], 'done_batches', 1)
return {1, done, batches, state}
"""

# Renew (ARGV[2] ms) or release (0) the lease of its holder ARGV[1] ('': whoever holds it).
_LEASE = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# The final state of a job that has not ended, written only by the lease holder ARGV[1] ('':
# anyone): a finaliser that lost its lease, or finds the job abandoned, changes nothing.
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
for i = 7, #ARGV do if state == ARGV[i] then return 0 end end
if ARGV[1] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'finished_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'failure', ARGV[4]) end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
redis.call('DEL', KEYS[4], KEYS[5])
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

    def store_plan(self, job_id: str, messages: Iterable[dict[str, Any]]) -> None:
        """Keep the task bodies of a job's batches until it finishes (to re-send lost ones)."""
        mapping = {str(message["batch"]): json.dumps(message) for message in messages}
        if mapping:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(keys.job_plan(job_id), mapping=mapping)
            pipe.expire(keys.job_plan(job_id), JOB_TTL_SECONDS)
            pipe.execute()

    def planned_batches(self, job_id: str) -> set[int]:
        return {int(index) for index in self.redis.hkeys(keys.job_plan(job_id))}

    def plan(self, job_id: str, batches: list[int]) -> dict[int, dict[str, Any]]:
        """The stored task bodies of these batches, by batch index."""
        bodies = self.redis.hmget(keys.job_plan(job_id), [str(index) for index in batches])
        pairs = zip(batches, bodies, strict=True)
        return {index: json.loads(body) for index, body in pairs if body}

    def recorded_batches(self, job_id: str) -> set[int]:
        return {int(index) for index in self.redis.hkeys(keys.job_manifest(job_id))}

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
            keys=[keys.job(job_id), keys.job_attempts(job_id), keys.job_manifest(job_id)],
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
        """Store a batch's manifest lines and add its counts, once per batch."""
        lines = list(manifest_lines)
        counts = Counter(str(line["status"]) for line in lines)
        manifest = jsonl(lines)
        first, done, batches, state = self._record_batch(
            keys=[keys.job(job_id), keys.job_manifest(job_id), keys.job_attempts(job_id)],
            args=[
                *(batch_index, manifest, counts["ok"], counts["error"], counts["skipped"]),
                *(stage_seconds.get(stage, 0.0) for stage in STAGES),
                *(time.time(), failure or "", *FINAL_STATES),
            ],
        )
        if int(first) < 0:
            raise JobNotFound(f"job {job_id} has no record in Redis (expired or deleted)")
        text = state.decode() if isinstance(state, bytes) else str(state)
        return BatchRecord(bool(first), int(done), int(batches), text)

    def manifest_lines(self, job_id: str) -> list[dict[str, Any]]:
        """All recorded manifest lines, in batch order."""
        raw = self.redis.hgetall(keys.job_manifest(job_id))
        lines: list[dict[str, Any]] = []
        for _, text in sorted(raw.items(), key=lambda item: int(item[0])):
            lines.extend(parse_jsonl(text.decode()))
        return lines

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
        the lease. The per-batch data is kept until the TTL expires.
        """
        names = (keys.job, keys.job_manifest, keys.job_attempts, keys.job_plan)
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
