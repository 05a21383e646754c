"""Drop-folder claims in Redis: each object version (key + ETag) is taken once.

The claim lives in Redis, not in a watcher's memory, so it holds across
restarts and between several watchers on one prefix: the Lua script sets a
key's ETag only when it differs from the recorded one, atomically, and only
the watcher whose call set it processes the object. An overwritten object has
a new ETag and is claimed again.
"""

from __future__ import annotations

import hashlib

import redis

from infra.s3 import ObjectInfo, S3Uri

# KEYS[1] = claims hash; ARGV = key1, etag1, key2, etag2, ...; returns the indexes claimed.
_CLAIM = """
local claimed = {}
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    table.insert(claimed, (i + 1) / 2)
  end
end
return claimed
"""


class Claims:
    """The claims of one watched prefix (``bv:watch:<hash of the prefix>``)."""

    def __init__(self, client: redis.Redis, prefix: S3Uri) -> None:
        self.redis = client
        digest = hashlib.sha1(str(prefix).encode(), usedforsecurity=False).hexdigest()[:16]
        self.key = f"bv:watch:{digest}"
        self._claim = client.register_script(_CLAIM)

    def claim(self, objects: list[ObjectInfo]) -> list[ObjectInfo]:
        """The objects whose current version nobody has claimed yet, now claimed by us."""
        claimed: list[ObjectInfo] = []
        for start in range(0, len(objects), 500):
            chunk = objects[start : start + 500]
            arguments = [value for info in chunk for value in (info.key, info.etag)]
            indexes = self._claim(keys=[self.key], args=arguments)
            claimed.extend(chunk[int(index) - 1] for index in indexes)
        return claimed

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
