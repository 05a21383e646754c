"""A job's life around its batches: created once, listed, cancelled, its runners counted.

- **Created once.** A job record is written only if no record has its id (one Lua
  script), so ``submit --job-id ID`` run twice makes one job.
- **Listed.** ``bv:jobs`` is a sorted set of job ids scored by submission time, what
  ``bucketvision jobs`` reads newest first. It is trimmed whenever a job is created: to
  the jobs whose records may still live (``JOB_TTL_SECONDS``) and to the newest
  ``INDEX_LIMIT``, so it never grows past that whatever the traffic, and a listing
  reads a page of it, never the keyspace.
- **Cancelled.** Cancelling sets the state ``cancelling`` (:data:`vocabulary.CANCELLING`):
  ``begin_batch`` starts no batch of it, a running batch stops after its forward pass
  and records what ran, and the job is finalised as ``cancelled`` once no batch of it
  has a live owner (:mod:`infra.ownership`): by the last batch to record, by a skipped
  delivery, by ``bucketvision cancel`` itself when none runs, or by the lost-batch audit
  when the process that should have done it died.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bucketvision.infra import keys
from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.ownership import ENDED_STATES
from bucketvision.infra.vocabulary import CANCELLING, FINAL_STATES

log = logging.getLogger("bucketvision.jobs")

INDEX_LIMIT = 10_000  # jobs kept in the index of recent jobs (bv:jobs), newest first
STAGES = ("download", "decode", "infer", "upload")  # the stage seconds a job record sums

# KEYS: job record, index, active set. ARGV: id, submitted at, TTL, oldest score kept,
# newest count kept, then field, value, ... of the record. 1: created; 0: it exists.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1)
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# Counts the owners of KEYS[2]'s batches whose lease has not expired (Redis's clock).
_LIVE_OWNERS = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local live = 0
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 6) == 'owner:' then
    local expiry = tonumber(string.match(fields[i + 1], ' (%d+)$'))
    if expiry and expiry > now_ms then live = live + 1 end
  end
end
"""

# KEYS: job record, attempts. ARGV: now, the cancelling state, the final states.
# Returns {state before, live owners}; a job that has ended or does not exist is unchanged.
_CANCEL = (
    """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'', 0} end
for i = 3, #ARGV do if state == ARGV[i] then return {state, 0} end end
if state ~= ARGV[2] then
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'cancel_requested_at', ARGV[1])
end
"""
    + _LIVE_OWNERS
    + "return {state, live}\n"
)


_FIELDS_INT = ("total", "batches", "ok", "error", "skipped", "done_batches", "batch_size")
_FIELDS_INT += ("resent_batches", "sent", "planned", "window", "review_routed")
_FIELDS_FLOAT = ("submitted_at", "audited_at", "started_at", "finished_at", "updated_at")
_FIELDS_FLOAT += ("confidence_psi",)
_FIELDS_FLOAT += tuple(f"stage_{stage}" for stage in STAGES)


def decode_record(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """A job record as read from Redis, with its numbers and options decoded."""
    record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    for name in record.keys() & set(_FIELDS_INT):
        record[name] = int(float(record[name]))
    for name in record.keys() & set(_FIELDS_FLOAT):
        record[name] = float(record[name])
    if "options" in record:
        record["options"] = json.loads(record["options"])
    return record


@dataclass(frozen=True)
class CancelRequest:
    """What cancelling found: the state before ('' for no such job), batches still running."""

    previous_state: str
    running_batches: int

    @property
    def accepted(self) -> bool:
        return self.previous_state not in ("", *FINAL_STATES)


def create_job(
    client: redis.Redis,
    job_id: str,
    record: dict[str, str | int | float],
    *,
    ttl_seconds: int,
    now: float,
) -> bool:
    """Write the record unless one has this id, index it and mark it active; True if new."""
    submitted = float(record["submitted_at"])
    pairs = [part for name, value in record.items() for part in (name, value)]
    script = client.register_script(_CREATE)
    args = [job_id, submitted, ttl_seconds, now - ttl_seconds, INDEX_LIMIT, *pairs]
    names = [keys.job(job_id), keys.JOBS_BY_SUBMISSION, keys.ACTIVE_JOBS]
    return bool(script(keys=names, args=args))


def request_cancel(client: redis.Redis, job_id: str, now: float) -> CancelRequest:
    """Mark a job that has not ended ``cancelling`` (atomically); what it found."""
    script = client.register_script(_CANCEL)
    state, live = script(
        keys=[keys.job(job_id), keys.job_attempts(job_id)], args=[now, CANCELLING, *FINAL_STATES]
    )
    text = state.decode() if isinstance(state, bytes) else str(state)
    return CancelRequest(text, int(live))


def live_owners(client: redis.Redis, job_id: str) -> int:
    """How many batches of the job have an owner whose lease has not expired (are running).

    One pass over the job's ``attempts`` hash (the batches that started), in Redis.
    """
    script = client.register_script(_LIVE_OWNERS + "return live\n")
    return int(script(keys=[keys.job(job_id), keys.job_attempts(job_id)]))


def job_state(client: redis.Redis, job_id: str) -> str | None:
    """The job's state alone (one HGET: cheap enough to ask once per forward pass)."""
    state = client.hget(keys.job(job_id), "state")
    return state.decode() if isinstance(state, bytes) else state


def cancel_check(client: redis.Redis, job_id: str) -> Callable[[], bool]:
    """A running batch's ``should_stop``: True once its job takes no more work (cancelled).

    Redis unreachable says nothing about the job: the batch goes on.
    """

    def stopped() -> bool:
        try:
            return job_state(client, job_id) in ENDED_STATES
        except OUTAGE_ERRORS as error:
            log.info("job %s: state not read (%s); the batch goes on", job_id, error)
            return False

    return stopped
