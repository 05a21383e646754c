"""The Redis job store: job records, per-batch manifests and counters.

Celery delivers a batch at least once, so everything here is keyed by
``(job_id, batch_index)`` and applied atomically by Lua scripts: a batch that
runs twice is recorded once, its items are counted once, and the job is
finalised by exactly one worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from bucketvision.infra import keys
from bucketvision.infra.errors import UserError
from bucketvision.infra.outputs import jsonl, parse_jsonl

JOB_TTL_SECONDS = 30 * 24 * 3600
FINALIZE_LOCK_SECONDS = 600

_RECORD_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, 0} end
local batches = tonumber(redis.call('HGET', KEYS[1], 'batches'))
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'done_batches') or '0'), batches}
end
redis.call('HINCRBY', KEYS[1], 'ok', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'error', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[5])
redis.call('HINCRBYFLOAT', KEYS[1], 'stage_download', ARGV[6])
redis.call('HINCRBYFLOAT', KEYS[1], 'stage_decode', ARGV[7])
redis.call('HINCRBYFLOAT', KEYS[1], 'stage_infer', ARGV[8])
redis.call('HINCRBYFLOAT', KEYS[1], 'stage_upload', ARGV[9])
redis.call('HSET', KEYS[1], 'updated_at', ARGV[10])
if ARGV[11] ~= '' then redis.call('HSETNX', KEYS[1], 'failure', ARGV[11]) end
local done = redis.call('HINCRBY', KEYS[1], 'done_batches', 1)
return {1, done, batches}
"""

_BEGIN_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
if redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2]) == 1 then
  redis.call('HSET', KEYS[1], 'state', 'running')
end
return {redis.call('HINCRBY', KEYS[2], ARGV[1], 1), redis.call('HEXISTS', KEYS[3], ARGV[1])}
"""

_ABANDON = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'finished' or state == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'failed', 'failure', ARGV[1], 'finished_at', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
return 1
"""

_FIELDS_INT = (
    "total",
    "batches",
    "ok",
    "error",
    "skipped",
    "done_batches",
    "batch_size",
    "resent_batches",
)
_FIELDS_FLOAT = (
    "submitted_at",
    "audited_at",
    "started_at",
    "finished_at",
    "updated_at",
    "stage_download",
    "stage_decode",
    "stage_infer",
    "stage_upload",
)


class JobNotFound(UserError):
    """No job with that id is known to Redis."""


@dataclass(frozen=True)
class BatchRecord:
    """What recording a batch changed: was it new, and is the job now complete?"""

    first_time: bool
    done_batches: int
    total_batches: int

    @property
    def job_complete(self) -> bool:
        return self.done_batches >= self.total_batches


@dataclass(frozen=True)
class BatchStart:
    """The attempt number of a batch, and whether an earlier attempt already recorded it.

    A batch is redelivered only when its worker died before recording it (outages
    are ridden out in process), so every earlier attempt is a worker death.
    """

    attempt: int
    already_recorded: bool

    @property
    def worker_deaths(self) -> int:
        return self.attempt - 1


class JobStore:
    """Reads and writes job state in Redis; safe to share between threads."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._record_batch = client.register_script(_RECORD_BATCH)
        self._begin_batch = client.register_script(_BEGIN_BATCH)
        self._abandon = client.register_script(_ABANDON)

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        return cls(
            redis.Redis.from_url(
                url,
                socket_timeout=30,
                socket_connect_timeout=5,
                health_check_interval=30,
                retry_on_timeout=True,
            )
        )

    def create(self, job_id: str, fields: dict[str, Any]) -> None:
        """Create the job record (state ``queued``)."""
        record = {"job_id": job_id, "state": "queued", "ok": 0, "error": 0, "skipped": 0}
        record.update({"done_batches": 0, "submitted_at": time.time()})
        record.update(fields)
        encoded = {
            name: json.dumps(value) if isinstance(value, dict | list | bool) else value
            for name, value in record.items()
            if value is not None
        }
        pipe = self.redis.pipeline()
        pipe.hset(keys.job(job_id), mapping=encoded)
        pipe.expire(keys.job(job_id), JOB_TTL_SECONDS)
        pipe.zadd(keys.JOBS_BY_SUBMISSION, {job_id: float(record["submitted_at"])})
        pipe.sadd(keys.ACTIVE_JOBS, job_id)
        pipe.execute()

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
                f"no job {job_id!r} in Redis; check the id (`bucketvision status` takes the id"
                " that `submit` printed) and BV_BROKER_URL"
            )
        record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        for name in _FIELDS_INT:
            if name in record:
                record[name] = int(float(record[name]))
        for name in _FIELDS_FLOAT:
            if name in record:
                record[name] = float(record[name])
        for name in ("options",):
            if name in record:
                record[name] = json.loads(record[name])
        return record

    def begin_batch(self, job_id: str, batch_index: int) -> BatchStart:
        """Mark the job running and count an attempt of this batch, in one round trip."""
        key = keys.job(job_id)
        attempt, recorded = self._begin_batch(
            keys=[key, keys.job_attempts(job_id), keys.job_manifest(job_id)],
            args=[batch_index, time.time()],
        )
        if int(attempt) < 0:
            raise JobNotFound(f"job {job_id} has no record in Redis (expired or deleted)")
        return BatchStart(int(attempt), bool(recorded))

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
        counts = {"ok": 0, "error": 0, "skipped": 0}
        for line in lines:
            counts[line["status"]] += 1
        manifest = jsonl(lines)
        first, done, batches = self._record_batch(
            keys=[keys.job(job_id), keys.job_manifest(job_id)],
            args=[
                batch_index,
                manifest,
                counts["ok"],
                counts["error"],
                counts["skipped"],
                stage_seconds.get("download", 0.0),
                stage_seconds.get("decode", 0.0),
                stage_seconds.get("infer", 0.0),
                stage_seconds.get("upload", 0.0),
                time.time(),
                failure or "",
            ],
        )
        if int(first) < 0:
            raise JobNotFound(f"job {job_id} has no record in Redis (expired or deleted)")
        return BatchRecord(bool(first), int(done), int(batches))

    def manifest_lines(self, job_id: str) -> list[dict[str, Any]]:
        """All recorded manifest lines, in batch order."""
        raw = self.redis.hgetall(keys.job_manifest(job_id))
        lines: list[dict[str, Any]] = []
        for _, text in sorted(raw.items(), key=lambda item: int(item[0])):
            lines.extend(parse_jsonl(text.decode()))
        return lines

    def claim_finalization(self, job_id: str, owner: str) -> bool:
        """True for the one worker that may write the job's manifest and summary now."""
        return bool(
            self.redis.set(keys.job_finalize_lock(job_id), owner, nx=True, ex=FINALIZE_LOCK_SECONDS)
        )

    def release_finalization(self, job_id: str) -> None:
        self.redis.delete(keys.job_finalize_lock(job_id))

    def mark_finished(self, job_id: str, state: str, finished_at: float) -> None:
        """Record the final state; the per-batch data is kept until the TTL expires."""
        pipe = self.redis.pipeline()
        pipe.hset(keys.job(job_id), mapping={"state": state, "finished_at": finished_at})
        for key in (keys.job(job_id), keys.job_manifest(job_id), keys.job_attempts(job_id)):
            pipe.expire(key, JOB_TTL_SECONDS)
        pipe.delete(keys.job_plan(job_id))
        pipe.srem(keys.ACTIVE_JOBS, job_id)
        pipe.execute()

    def abandon(self, job_id: str, reason: str) -> bool:
        """Mark a job whose batches could not all be sent as failed, with the reason.

        Only an unfinished job changes; a job that does not exist (its record was
        never written) is left absent. True when the record changed.
        """
        touched = [keys.job(job_id), keys.ACTIVE_JOBS, keys.job_plan(job_id)]
        return bool(self._abandon(keys=touched, args=[reason, time.time(), job_id]))

    def recent_jobs(self, count: int = 20) -> list[str]:
        return [
            item.decode() for item in self.redis.zrevrange(keys.JOBS_BY_SUBMISSION, 0, count - 1)
        ]
