"""Drop-folder claims in Redis: each object version (key + ETag) is taken once.

The claim lives in Redis, not in a watcher's memory, so it holds across
restarts and between several watchers on one prefix: the Lua script sets a
key's ETag only when it differs from the recorded one, atomically, and only
the watcher whose call set it processes the object. An overwritten object has
a new ETag and is claimed again.

A claim is two-phase so that a watcher dying (or Redis failing) between claiming
and enqueuing cannot lose an object: it is first recorded as ``ETAG pending
TIME``, and becomes plain ``ETAG`` once its job is enqueued. A pending claim
older than ``stale_seconds`` is claimable again; a failed enqueue releases its
claims at once.
"""

from __future__ import annotations

import time

import redis

from bucketvision.infra import keys
from bucketvision.infra.s3 import ObjectInfo, S3Uri

# KEYS[1] = claims hash; ARGV = now, stale_before, key1, etag1, key2, etag2, ...
# Returns the (1-based) indexes of the pairs claimed by this call.
_CLAIM = """
local claimed = {}
local pending_mark = ' pending '
for i = 3, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  local take = current ~= ARGV[i + 1]
  if take and current then
    local etag, since = string.match(current, '^(.-) pending (.+)$')
    if etag == ARGV[i + 1] and tonumber(since) > tonumber(ARGV[2]) then take = false end
  end
  if take then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. pending_mark .. ARGV[1])
    table.insert(claimed, (i - 1) / 2)
  end
end
return claimed
"""

# KEYS[1] = claims hash; ARGV = "confirm" | "release", key1, etag1, ...: each of these
# pending claims becomes final (confirm) or is dropped (release); others are left alone.
_SETTLE = """
for i = 2, #ARGV, 2 do
  local current = redis.call('HGET', KEYS[1], ARGV[i])
  if current and string.sub(current, 1, #ARGV[i + 1] + 9) == ARGV[i + 1] .. ' pending ' then
    if ARGV[1] == 'confirm' then
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    else
      redis.call('HDEL', KEYS[1], ARGV[i])
    end
  end
end
return 1
"""


class Claims:
    """The claims of one watched prefix (``bv:watch:<hash of the prefix>``)."""

    def __init__(self, client: redis.Redis, prefix: S3Uri, *, stale_seconds: float = 300) -> None:
        self.redis = client
        self.key = keys.watch_claims(str(prefix))
        self.stale_seconds = stale_seconds
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)

    def claim(self, objects: list[ObjectInfo]) -> list[ObjectInfo]:
        """The objects whose current version nobody holds, now pending for us.

        Call :meth:`confirm` once their job is enqueued, or :meth:`release` if that failed.
        """
        claimed: list[ObjectInfo] = []
        now = time.time()
        for start in range(0, len(objects), 500):
            chunk = objects[start : start + 500]
            arguments = [now, now - self.stale_seconds]
            arguments += [value for info in chunk for value in (info.key, info.etag)]
            indexes = self._claim(keys=[self.key], args=arguments)
            claimed.extend(chunk[int(index) - 1] for index in indexes)
        return claimed

    def confirm(self, objects: list[ObjectInfo]) -> None:
        """Their job is enqueued: the claims are final."""
        self._apply("confirm", objects)

    def release(self, objects: list[ObjectInfo]) -> None:
        """Their job could not be enqueued: let the next cycle claim them again."""
        self._apply("release", objects)

    def _apply(self, action: str, objects: list[ObjectInfo]) -> None:
        for start in range(0, len(objects), 500):
            chunk = objects[start : start + 500]
            arguments = [action, *(value for info in chunk for value in (info.key, info.etag))]
            self._settle(keys=[self.key], args=arguments)

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
