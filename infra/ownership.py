"""Who runs a batch now: one owner per batch, known alive by a lease it renews.

The broker delivers a batch again for reasons other than a death: the visibility
timeout passes while the batch still runs (riding out an outage, say), a worker
hands it back unacknowledged (``Reject(requeue=True)``) after a Redis outage, or
``begin_batch`` is retried after its reply was lost. So a delivery is not taken
for a death. Each delivery that runs a batch owns it: ``begin_batch`` writes its
owner token and a lease (``LEASE_SECONDS``, on Redis's clock) in the field
``owner:<batch>`` of ``bv:job:<id>:attempts``, a :class:`Heartbeat` thread renews
it every fifth of the lease while the batch runs, and recording the batch deletes
it with the batch's attempt count: the hash holds only the batches that run. A
delivery that finds another owner whose lease has not expired is a duplicate
(:attr:`BatchStart.owned_elsewhere`); one that finds an expired lease takes the
batch over and counts one death (:attr:`BatchStart.death`). An owner that hands
its batch back releases its lease first, so its own redelivery is no death.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass

import redis

from bucketvision.infra import keys
from bucketvision.infra.vocabulary import CANCELLING, FINAL_STATES

log = logging.getLogger("bucketvision.ownership")

# A batch's owner renews its lease every fifth of it: a live owner misses four renewals
# (a stalled process, a slow Redis) before its batch may be taken for dead.
LEASE_SECONDS = 10.0
RELEASE_RETRY_SECONDS = 300.0  # how long a hand-back keeps trying to release (Redis down)
# A job in these takes no more work: its batches are skipped (a cancelling one is not final).
ENDED_STATES = (*FINAL_STATES, CANCELLING)

# KEYS: job record, attempts hash, recorded-batches bitmap.
# ARGV: batch, now, owner, lease ms, TTL, ended states...
# Returns {attempt, recorded, state, expiry of another live owner's lease (ms), death}.
BEGIN_BATCH_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0, '', 0, 0} end
local state = redis.call('HGET', KEYS[1], 'state') or ''
for i = 6, #ARGV do if state == ARGV[i] then return {0, 0, state, 0, 0} end end
if redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2]) == 1 then
  redis.call('HSET', KEYS[1], 'state', 'running')
end
local attempt = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if redis.call('GETBIT', KEYS[3], ARGV[1]) == 1 then return {attempt, 1, state, 0, 0} end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local field = 'owner:' .. ARGV[1]
local held = redis.call('HGET', KEYS[2], field)
local death = 0
if held then
  local token, expiry = string.match(held, '^(.*) (%d+)$')
  if token ~= ARGV[3] then
    if tonumber(expiry) > now_ms then return {attempt, 0, state, tonumber(expiry), 0} end
    death = 1
  end
end
if death == 1 or attempt == 0 then attempt = redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
redis.call('HSET', KEYS[2], field, ARGV[3] .. ' ' .. (now_ms + tonumber(ARGV[4])))
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {attempt, 0, state, 0, death}
"""

# Renew (ARGV[3] ms) or release ('0') the lease of owner ARGV[2] on batch ARGV[1].
_LEASE = """
local field = 'owner:' .. ARGV[1]
local held = redis.call('HGET', KEYS[1], field)
if not held or string.match(held, '^(.*) %d+$') ~= ARGV[2] then return 0 end
if ARGV[3] == '0' then return redis.call('HDEL', KEYS[1], field) end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', KEYS[1], field, ARGV[2] .. ' ' .. (now_ms + tonumber(ARGV[3])))
return 1
"""


@dataclass(frozen=True)
class BatchStart:
    """What a delivery found: the batch's attempt, and who runs it.

    ``attempt`` is 1 plus the deaths counted for the batch: a death is counted only
    when a delivery takes the batch over from an owner whose lease expired. A batch
    of a job that has ended (``job_ended``), or already recorded (its count went with
    its recording), has attempt 0.
    """

    attempt: int
    already_recorded: bool
    job_state: str = "running"
    owner_expiry_ms: int = 0  # another live owner's lease end (Redis clock); 0: none
    death: bool = False  # this delivery took the batch over from a dead owner

    @property
    def job_ended(self) -> bool:
        return self.job_state in ENDED_STATES

    @property
    def owned_elsewhere(self) -> bool:
        """Another delivery owns the batch and its lease has not expired."""
        return self.owner_expiry_ms > 0

    @property
    def worker_deaths(self) -> int:
        return max(0, self.attempt - 1)


def owner_token(identity: str) -> str:
    """A token for one delivery: the worker (host and pid) and a random part."""
    return f"{identity}:{secrets.token_hex(4)}"


def lease_ms(seconds: float | None) -> int:
    return max(1, int((LEASE_SECONDS if seconds is None else seconds) * 1000))


class BatchLeases:
    """Renews and releases the owner leases of batches (``begin_batch`` takes them)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._lease = client.register_script(_LEASE)

    def renew(self, job_id: str, batch: int, owner: str, seconds: float | None = None) -> bool:
        """Extend ``owner``'s lease; False when it no longer owns the batch."""
        args = [batch, owner, lease_ms(seconds)]
        return bool(self._lease(keys=[keys.job_attempts(job_id)], args=args))

    def release(self, job_id: str, batch: int, owner: str) -> bool:
        """Give the batch up (to hand it back): its next delivery counts no death."""
        return bool(self._lease(keys=[keys.job_attempts(job_id)], args=[batch, owner, 0]))


class Heartbeat:
    """Renews a batch owner's lease every fifth of it, in a thread, until stopped."""

    def __init__(
        self, leases: BatchLeases, job_id: str, batch: int, owner: str, seconds: float | None = None
    ) -> None:
        self.leases, self.job_id, self.batch, self.owner = leases, job_id, batch, owner
        self.seconds = LEASE_SECONDS if seconds is None else seconds
        self._stop = threading.Event()
        self._handed_back = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._beat, name="bv-batch-lease", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 5):
            try:
                renewed = self.leases.renew(self.job_id, self.batch, self.owner, self.seconds)
            except redis.exceptions.RedisError as error:
                log.warning(
                    "batch %s of job %s: lease not renewed: %s", self.batch, self.job_id, error
                )
                continue
            if not renewed and not self._stop.is_set():
                log.warning(
                    "batch %s of job %s: no longer its owner (its lease expired and another "
                    "delivery took it over); its result is recorded once whoever ends first",
                    self.batch,
                    self.job_id,
                )
                return

    def hand_back(self) -> None:
        """Stop renewing and release the lease; while Redis is down, keep trying in a thread."""
        if self._handed_back.is_set():
            return
        self._handed_back.set()
        self.stop()
        if not self._release():
            thread = threading.Thread(target=self._release_soon, name="bv-batch-release")
            thread.daemon = True
            thread.start()

    def _release(self) -> bool:
        try:
            self.leases.release(self.job_id, self.batch, self.owner)
        except redis.exceptions.RedisError:
            return False
        return True

    def _release_soon(self) -> None:
        deadline = time.monotonic() + RELEASE_RETRY_SECONDS
        while time.monotonic() < deadline and not self._release():
            time.sleep(1.0)


def expired_owners(client: redis.Redis, job_id: str) -> set[int]:
    """The job's batches whose owner's lease has expired: their owner died holding them.

    A batch is in the attempts hash only while it runs (recording deletes its owner), so
    an expired lease is an owner that stopped renewing: the process died, or it gave the
    batch up to the lost-batch audit (:mod:`worker.finishing`).
    """
    held = client.hgetall(keys.job_attempts(job_id))
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    expired = set()
    for field, value in held.items():
        name, _, expiry = value.decode().rpartition(" ")
        if field.startswith(b"owner:") and name and expiry.isdigit() and int(expiry) < now_ms:
            expired.add(int(field[len(b"owner:") :]))
    return expired
