"""Training runs in Redis: state and progress a ``train --wait`` can follow.

A run is a hash ``bv:train:<run_id>`` (state queued/running/finished/failed,
the request, the current epoch and its logs, the resulting version and
metrics) plus an entry in the sorted set ``bv:trains``. The ``train`` task
updates it; the producer only reads it.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import redis

from bucketvision.infra import keys
from bucketvision.infra.errors import UserError

RUN_TTL_SECONDS = 30 * 24 * 3600
LOCK_TTL_SECONDS = 15 * 60  # renewed on every progress report; a dead worker frees it

# Release the lock only if this run still holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RunNotFound(UserError):
    """No training run with this id."""


def new_run_id(name: str) -> str:
    return (
        f"train-{name}-"
        + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        + "-"
        + secrets.token_hex(3)
    )


class TrainingRuns:
    """Reads and writes training-run records."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str) -> TrainingRuns:
        return cls(redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5))

    def create(self, run_id: str, request: dict[str, Any]) -> None:
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.hset(
            keys.training_run(run_id),
            mapping={
                "run_id": run_id,
                "state": "queued",
                "request": json.dumps(request),
                "submitted_at": now,
                "epoch": 0,
            },
        )
        pipe.expire(keys.training_run(run_id), RUN_TTL_SECONDS)
        pipe.zadd(keys.TRAINING_RUNS_BY_SUBMISSION, {run_id: now})
        pipe.execute()

    def update(self, run_id: str, **fields: Any) -> None:
        """Set fields; dicts and lists are stored as JSON."""
        encoded = {
            name: json.dumps(value) if isinstance(value, dict | list | bool) else value
            for name, value in fields.items()
            if value is not None
        }
        if encoded:
            self.redis.hset(keys.training_run(run_id), mapping=encoded)

    def get(self, run_id: str) -> dict[str, Any]:
        raw = self.redis.hgetall(keys.training_run(run_id))
        if not raw:
            raise RunNotFound(
                f"no training run {run_id!r} in Redis; check the id that `train` printed"
            )
        record: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        for name in ("request", "logs", "metrics", "counts", "promoted"):
            if name in record:
                record[name] = json.loads(record[name])
        for name in ("epoch", "epochs"):
            if record.get(name) not in (None, "None"):
                record[name] = int(float(record[name]))
        for name in ("submitted_at", "started_at", "finished_at", "seconds"):
            if name in record:
                record[name] = float(record[name])
        return record

    def lock(self, name: str, run_id: str) -> str | None:
        """Take model ``name``'s training lock for ``run_id``; returns the holder if taken.

        One run per model at a time: a second run of the same name (a beat tick, a user)
        or the same run redelivered while it is still going (its worker renews the lock
        every epoch) is not started. A dead worker's lock expires after LOCK_TTL_SECONDS,
        well before the broker redelivers its message.
        """
        key = keys.training_lock(name)
        if self.redis.set(key, run_id, nx=True, ex=LOCK_TTL_SECONDS):
            return None
        holder = self.redis.get(key)
        return holder.decode() if holder is not None else "(a run that just ended)"

    def renew(self, name: str, run_id: str) -> None:
        key = keys.training_lock(name)
        if self.redis.get(key) == run_id.encode():
            self.redis.expire(key, LOCK_TTL_SECONDS)

    def unlock(self, name: str, run_id: str) -> None:
        self._release(keys=[keys.training_lock(name)], args=[run_id])

    def recent(self, count: int = 20) -> list[str]:
        return [
            item.decode()
            for item in self.redis.zrevrange(keys.TRAINING_RUNS_BY_SUBMISSION, 0, count - 1)
        ]
