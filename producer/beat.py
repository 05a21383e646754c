"""``bucketvision beat``: Celery beat with the training schedule of ``BV_SCHEDULE_FILE``.

Only one beat may run per broker: it holds ``bv:beat:lock`` in Redis (a
30-second lease renewed every 10 seconds by a thread); a second beat exits
with an error naming the holder, and a crashed beat's lease lapses in 30 s.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis

from bucketvision.infra import keys
from bucketvision.infra.errors import UserError
from bucketvision.infra.queue import make_celery
from bucketvision.infra.schedule import ScheduleError, beat_schedule, load_schedule
from bucketvision.infra.settings import Settings

log = logging.getLogger("bucketvision.beat")
LEASE_SECONDS = 30


class BeatAlreadyRunning(UserError):
    """Another beat holds the lock on this broker."""


class BeatLease:
    """The single-beat lease in Redis."""

    def __init__(self, client: redis.Redis, identity: str) -> None:
        self.redis, self.identity = client, identity
        self._stop = threading.Event()

    def acquire(self) -> None:
        if not self.redis.set(keys.BEAT_LOCK, self.identity, nx=True, ex=LEASE_SECONDS):
            holder = self.redis.get(keys.BEAT_LOCK)
            raise BeatAlreadyRunning(
                f"another beat is running ({holder.decode() if holder else 'just ended'}); "
                "only one beat may run per broker"
            )
        threading.Thread(target=self._renew, name="bv-beat-lease", daemon=True).start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            if self.redis.get(keys.BEAT_LOCK) == self.identity.encode():
                self.redis.expire(keys.BEAT_LOCK, LEASE_SECONDS)
            else:
                log.error("the beat lease was lost; stopping this beat")
                os._exit(3)

    def release(self) -> None:
        self._stop.set()
        if self.redis.get(keys.BEAT_LOCK) == self.identity.encode():
            self.redis.delete(keys.BEAT_LOCK)


def run_beat(settings: Settings, *, loglevel: str = "INFO", quiet: bool = False) -> int:
    """Run beat until stopped; returns the exit code. ``quiet``: no banner on stdout."""
    from celery.apps.beat import Beat

    if not settings.schedule_file:
        raise ScheduleError("set BV_SCHEDULE_FILE to a TOML schedule (see the README: beat)")
    entries = load_schedule(settings.schedule_file)
    app = make_celery(settings)
    app.conf.beat_schedule = beat_schedule(entries)
    lease = BeatLease(
        redis.Redis.from_url(settings.broker_url), f"{socket.gethostname()}:{os.getpid()}"
    )
    lease.acquire()
    os.makedirs(settings.model_cache_dir, exist_ok=True)
    for entry in entries:
        when = f"every {entry.every_seconds:g} s" if entry.every_seconds else f"cron {entry.cron}"
        log.info(
            "scheduled: train %s (%s) on %s, %s",
            entry.name,
            entry.request.task,
            entry.request.dataset,
            when,
        )
    try:
        Beat(
            app=app,
            schedule=os.path.join(settings.model_cache_dir, "celerybeat-schedule"),
            loglevel=loglevel,
            max_interval=5,
            quiet=quiet,
        ).run()
    finally:
        lease.release()
    return 0
