"""``bucketvision health worker|watcher|beat``: is this container's process doing its job?

A container health check that only pings Redis says the broker is up, not that the
worker, watcher or beat beside it works. Each check here asks the process itself:

- ``worker``: a Celery ``ping`` answered by a worker node on this host (its node name
  ends in ``@<hostname>``: ``bucketvision worker`` names it so);
- ``watcher``: the watcher's loop touched :data:`WATCH_HEARTBEAT` within ``--max-age``
  seconds (every cycle, and every wait while it rides out an outage);
- ``beat``: the single-beat lease ``bv:beat:lock`` is held by a beat on this host.

Exit 0 healthy, 1 not (with one line saying why), 3 Redis unreachable.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from bucketvision.infra import keys
from bucketvision.infra.settings import Settings

WATCH_HEARTBEAT = Path(tempfile.gettempdir()) / "bucketvision-watch.alive"
CHECKS = ("worker", "watcher", "beat")


def touch_heartbeat(path: Path = WATCH_HEARTBEAT) -> None:
    """The watcher is alive and looping (its health check reads the file's age)."""
    with contextlib.suppress(OSError):  # a read-only /tmp must not stop the watcher
        path.touch()


def worker_alive(settings: Settings, hostname: str, timeout: float = 5.0) -> str | None:
    """None when a worker node on ``hostname`` answers a ping; else why not."""
    from bucketvision.infra.queue import make_celery

    replies = make_celery(settings).control.ping(timeout=timeout) or []
    nodes = [name for reply in replies for name in reply]
    if any(name.endswith(f"@{hostname}") for name in nodes):
        return None
    return f"no worker on {hostname} answered a ping within {timeout:g} s (answered: {nodes})"


def watcher_alive(max_age: float, path: Path = WATCH_HEARTBEAT) -> str | None:
    """None when the watcher's loop touched ``path`` within ``max_age`` seconds."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"the watcher has not completed a cycle yet ({path} is missing)"
    return None if age <= max_age else f"the watcher's last cycle was {age:.0f} s ago"


def beat_alive(settings: Settings, hostname: str) -> str | None:
    """None when the beat lease is held by a beat on ``hostname``."""
    import redis

    holder = redis.Redis.from_url(settings.broker_url, socket_timeout=5).get(keys.BEAT_LOCK)
    text = holder.decode() if holder else None
    if text is not None and text.startswith(f"{hostname}:"):
        return None
    return f"the beat lease is held by {text or 'nobody'}, not by a beat on {hostname}"


def run_health(settings: Settings, check: str, *, max_age: float = 120.0) -> int:
    hostname = socket.gethostname()
    if check == "worker":
        problem = worker_alive(settings, hostname)
    elif check == "watcher":
        problem = watcher_alive(max_age)
    else:
        problem = beat_alive(settings, hostname)
    if problem is None:
        print(f"ok: {check} on {hostname} (pid {os.getpid()} asked)")
        return 0
    print(f"unhealthy: {problem}", file=sys.stderr)
    return 1
