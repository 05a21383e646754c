"""Drop-folder claims in Redis: each object version (key + ETag) is taken once.

The claim lives in Redis, not in a watcher's memory, so it holds across
restarts and between several watchers on one prefix: a Lua script records a
key's ETag only when nobody holds that version, atomically, and only the
watcher whose call recorded it processes the object. An overwritten object has
a new ETag and is claimed again.

A claim is two-phase so that a watcher dying (or Redis failing) between claiming
and enqueuing cannot lose an object: it is first a *lease*, ``ETAG pending
EXPIRES TOKEN JOB``, and becomes plain ``ETAG`` once its job is enqueued.
``TOKEN`` is the holder's (one per :class:`Claims`, so per watcher process) and
fences it: only the holder renews, binds, confirms or releases the lease, each a
compare-and-set on the token, so a watcher whose lease lapsed and was taken over
changes nothing. The holder renews its leases every third of ``lease_seconds``
while it enqueues (:meth:`Claims.holding`), so a lease lapses only when its
holder is dead or cut off from Redis; and right before enqueuing it binds the
leases to the job id (:meth:`Claims.fence`), enqueuing only the objects it still
holds. A lapsed lease is taken over by the next watcher, unless it is bound to a
job that was enqueued (its holder died before confirming): then it is confirmed.
Expiry times are Redis's clock (``TIME``), so watchers' clocks need not agree.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import redis

from bucketvision.infra import keys
from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.s3 import ObjectInfo, S3Uri

log = logging.getLogger("bucketvision.watch")

LEASE_SECONDS = 60.0
_CHUNK = 500

# parse(value): etag, expires, token, job of a lease; nil for a final claim. A lease
# written before leases had tokens ("ETAG pending TIME") lapses 300 s after TIME.
_PRELUDE = """
local function parse(value)
  local etag, rest = string.match(value, '^(.-) pending (.+)$')
  if not etag then return nil end
  local expires, token, job = string.match(rest, '^(%S+) (%S+) (%S+)$')
  if not expires then return etag, (tonumber(rest) or 0) + 300, '', '-' end
  return etag, tonumber(expires), token, job
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function lease(etag, job)
  return etag .. ' pending ' .. string.format('%.3f', now + tonumber(ARGV[1])) .. ' '
    .. ARGV[2] .. ' ' .. job
end
"""

# KEYS[1] = claims hash; ARGV = lease seconds, token, key1, etag1, ...
# Returns {indexes taken (1-based pairs), {index, value} of lapsed leases bound to a job}.
_CLAIM = (
    _PRELUDE
    + """
local taken, lapsed = {}, {}
for i = 3, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  local take = current ~= ARGV[i + 1]
  if take and current then
    local etag, expires, _, job = parse(current)
    if etag == ARGV[i + 1] then
      take = false
      if expires <= now and job == '-' then take = true
      elseif expires <= now then table.insert(lapsed, {(i - 1) / 2, current}) end
    end
  end
  if take then
    redis.call('HSET', KEYS[1], ARGV[i], lease(ARGV[i + 1], '-'))
    table.insert(taken, (i - 1) / 2)
  end
end
return {taken, lapsed}
"""
)

# KEYS[1]; ARGV = lease seconds, token, key1, value1, action1, ...: each lapsed lease
# still ``value`` is taken (action "take") or confirmed (action "confirm"). Returns indexes.
_TAKE_OVER = (
    _PRELUDE
    + """
local done = {}
for i = 3, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current == ARGV[i + 1] then
    local etag = parse(current)
    local value = etag
    if ARGV[i + 2] == 'take' then value = lease(etag, '-') end
    redis.call('HSET', KEYS[1], ARGV[i], value)
    table.insert(done, i / 3)
  end
end
return done
"""
)

# KEYS[1]; ARGV = lease seconds, token, action, key1, etag1, ...: for each lease this token
# holds, "renew" extends it, "bind:JOB" extends it and records the job, "confirm" makes
# it final, "release" drops it. Others are left alone. Returns the indexes it held.
_HOLDER = (
    _PRELUDE
    + """
local held = {}
local action = ARGV[3]
for i = 4, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current then
    local etag, _, token, job = parse(current)
    if etag == ARGV[i + 1] and token == ARGV[2] then
      if action == 'confirm' then redis.call('HSET', KEYS[1], ARGV[i], etag)
      elseif action == 'release' then redis.call('HDEL', KEYS[1], ARGV[i])
      elseif action == 'renew' then redis.call('HSET', KEYS[1], ARGV[i], lease(etag, job))
      else redis.call('HSET', KEYS[1], ARGV[i], lease(etag, string.sub(action, 6))) end
      table.insert(held, (i - 2) / 2)
    end
  end
end
return held
"""
)

# KEYS[1]; ARGV = key1, value1, ...: each claim still ``value`` is deleted. Returns the count.
_PRUNE = """
local pruned = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    pruned = pruned + 1
  end
end
return pruned
"""


class Claims:
    """The claims of one watched prefix (``bv:watch:<hash of the prefix>``), held as one token."""

    def __init__(
        self, client: redis.Redis, prefix: S3Uri, *, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        self.redis = client
        self.key = keys.watch_claims(str(prefix))
        self.lease_seconds = lease_seconds
        self.token = secrets.token_hex(8)
        # Jobs whose lapsed leases :meth:`claim` confirmed (their holder died after enqueuing).
        self.adopted: list[str] = []
        self._claim = client.register_script(_CLAIM)
        self._take_over = client.register_script(_TAKE_OVER)
        self._holder = client.register_script(_HOLDER)
        self._prune = client.register_script(_PRUNE)
        self._gone: dict[str, bytes] = {}  # final claims of keys the last full listing missed

    def claim(
        self, objects: list[ObjectInfo], enqueued: Callable[[str], bool] = lambda _job: False
    ) -> list[ObjectInfo]:
        """The objects whose current version nobody holds, now leased to us.

        A lapsed lease bound to a job is confirmed instead when ``enqueued(job)`` says that
        job holds its object (the job id goes to :attr:`adopted`). Renew the leases with
        :meth:`holding`, :meth:`fence` them before enqueuing, then :meth:`confirm` them once
        their job is enqueued, or :meth:`release` them if that failed.
        """
        claimed: list[ObjectInfo] = []
        for start in range(0, len(objects), _CHUNK):
            chunk = objects[start : start + _CHUNK]
            pairs = [value for info in chunk for value in (info.key, info.etag)]
            found = self._claim(keys=[self.key], args=[self.lease_seconds, self.token, *pairs])
            taken = [int(index) for index in found[0]]
            if found[1]:
                taken = sorted(taken + self._settle_lapsed(chunk, found[1], enqueued))
            claimed.extend(chunk[index - 1] for index in taken)
        return claimed

    def _settle_lapsed(
        self, chunk: list[ObjectInfo], lapsed: list[list[Any]], enqueued: Callable[[str], bool]
    ) -> list[int]:
        """Take lapsed leases over, or confirm those whose bound job was enqueued; the
        indexes taken. Each is a compare-and-set on the lease as read, so a holder that
        renewed meanwhile, or another watcher that got there first, keeps it."""
        arguments: list[object] = [self.lease_seconds, self.token]
        confirmed: dict[int, str] = {}
        for index, value in lapsed:
            text = value.decode()
            job = text.rsplit(" ", 1)[-1]
            if enqueued(job):
                confirmed[int(index)] = job
            arguments += [chunk[int(index) - 1].key, text]
            arguments.append("confirm" if int(index) in confirmed else "take")
        done = self._take_over(keys=[self.key], args=arguments)
        settled = [int(lapsed[int(position) - 1][0]) for position in done]
        self.adopted += sorted({confirmed[index] for index in settled if index in confirmed})
        return [index for index in settled if index not in confirmed]

    def renew(self, objects: list[ObjectInfo]) -> list[ObjectInfo]:
        """Extend our leases on ``objects`` by ``lease_seconds``; the ones we still hold."""
        return self._as_holder("renew", objects)

    def fence(self, objects: list[ObjectInfo], job_id: str) -> list[ObjectInfo]:
        """Right before enqueuing: the objects we still hold, their leases renewed and bound
        to ``job_id``. Enqueue only these; the others were taken over by another watcher."""
        return self._as_holder(f"bind:{job_id}", objects)

    def confirm(self, objects: list[ObjectInfo]) -> list[ObjectInfo]:
        """Their job is enqueued: the claims we still hold are final; those are returned."""
        return self._as_holder("confirm", objects)

    def release(self, objects: list[ObjectInfo]) -> list[ObjectInfo]:
        """Their job could not be enqueued: let the next cycle claim them again."""
        return self._as_holder("release", objects)

    def _as_holder(self, action: str, objects: list[ObjectInfo]) -> list[ObjectInfo]:
        held: list[ObjectInfo] = []
        for start in range(0, len(objects), _CHUNK):
            chunk = objects[start : start + _CHUNK]
            pairs = [value for info in chunk for value in (info.key, info.etag)]
            arguments = [self.lease_seconds, self.token, action, *pairs]
            held.extend(
                chunk[int(index) - 1] for index in self._holder(keys=[self.key], args=arguments)
            )
        return held

    @contextlib.contextmanager
    def holding(self, objects: list[ObjectInfo]) -> Iterator[None]:
        """Renew our leases on ``objects`` every third of ``lease_seconds`` in a thread.

        A renewal that fails (Redis away) is tried again at the next beat. A lease whose
        renewals keep failing lapses and may be taken over; :meth:`fence` then tells us.
        """
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(max(self.lease_seconds / 3, 0.05)):
                try:
                    self.renew(objects)
                except OUTAGE_ERRORS as error:
                    log.info("could not renew %s claims: %s", len(objects), error)

        thread = threading.Thread(target=beat, name="watch-claims-renewal", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=1.0)  # a late renewal is harmless: settled claims have no lease

    def etags(self, keys: list[str]) -> dict[str, str]:
        """The ETag each of ``keys`` is claimed with (final or leased); unclaimed keys left out."""
        found: dict[str, str] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            for key, value in zip(chunk, self.redis.hmget(self.key, chunk), strict=True):
                if value is not None:
                    found[key] = value.decode().split(" pending ", 1)[0]
        return found

    def prune(self, existing: set[str]) -> int:
        """Drop final claims of keys that two full listings in a row did not find; how many.

        Without ``--move-to`` the record would otherwise hold every key ever dropped. A key
        is dropped only if it was gone at the listing before too and its claim is unchanged
        (a compare-and-delete), so an object claimed by an event after a listing began, and
        listed by the next one, keeps its claim. Leases are never pruned."""
        gone: dict[str, bytes] = {}
        for field, value in self.redis.hscan_iter(self.key, count=1000):
            key = field.decode()
            if key not in existing and b" pending " not in value:
                gone[key] = value
        ready = [(key, value) for key, value in gone.items() if self._gone.get(key) == value]
        self._gone = {key: value for key, value in gone.items() if self._gone.get(key) != value}
        pruned = 0
        for start in range(0, len(ready), _CHUNK):
            arguments = [item for pair in ready[start : start + _CHUNK] for item in pair]
            pruned += int(self._prune(keys=[self.key], args=arguments))
        return pruned

    def forget(self, keys: list[str]) -> None:
        """Drop claims of moved objects, so the same bytes dropped again are processed again."""
        if keys:
            self.redis.hdel(self.key, *keys)

    def cursor(self) -> str | None:
        """The greatest key listed so far (new keys are listed from there)."""
        value = self.redis.get(f"{self.key}:cursor")
        return value.decode() if value else None

    def advance(self, key: str) -> None:
        current = self.cursor()
        if current is None or key > current:
            self.redis.set(f"{self.key}:cursor", key)
