"""Drop images into a watched prefix as a camera would, and time each one to its result.

Shared by the drop-folder end-to-end tests and ``make bench-watch``: random hex names (so
arrival order is not key order), a steady rate, an optional watcher restart halfway and
an overwrite at the end; a thread polls the output prefix for each result file.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from bucketvision.infra.outputs import parse_jsonl
from bucketvision.models.digits import make_digits
from tests.helpers import png_bytes, start_cli


def stop_watcher(process: subprocess.Popen[Any]) -> None:
    """SIGTERM: the watcher finishes its cycle and exits 0."""
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=60) == 0


class Watchers:
    """The ``bucketvision watch`` processes of one test, started and restarted alike."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.env, self.log, self.args = env, log, args
        self.started = [start_cli(env, log, "watch", *args)]

    def restart(self) -> None:
        stop_watcher(self.started[-1])
        self.started.append(start_cli(self.env, self.log, "watch", *self.args))

    def stop(self) -> list[dict[str, Any]]:
        """Stop the last one; the end records (``--json``) of every one."""
        stop_watcher(self.started[-1])
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith('{"stopped"')]


def check_each_once(s3_client: Any, bucket: str, drops: Drops, log: Path) -> None:
    """Every drop in exactly one manifest line, the overwritten one in two."""
    counts = manifest_keys(s3_client, bucket, "results/")
    expected = expected_counts(drops)
    assert counts == expected, (counts - expected, expected - counts, log.read_text()[-3000:])
    if drops.overwritten:
        assert drops.overwrite_seen is not None, log.read_text()[-3000:]


def manifest_keys(s3_client: Any, bucket: str, prefix: str) -> Counter[str]:
    """How many manifest lines each input key has, over every job under ``prefix``."""
    counts: Counter[str] = Counter()
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}_jobs/"):
        for entry in page.get("Contents", []):
            if entry["Key"].endswith("manifest.jsonl"):
                body = s3_client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
                counts.update(row["key"] for row in parse_jsonl(body.decode()))
    return counts


@dataclass
class Drops:
    """What was dropped when, and when its result appeared (``time.monotonic()``)."""

    dropped: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    overwritten: str | None = None
    overwrite_seen: float | None = None
    overwrite_dropped: float = 0.0
    warm_up: str | None = None  # dropped and processed before the timed drops

    def latencies(self, keys: list[str] | None = None) -> list[float]:
        chosen = self.dropped if keys is None else keys
        return sorted(self.seen[key] - self.dropped[key] for key in chosen if key in self.seen)

    def describe(self, what: str) -> str:
        found = self.latencies()
        p50, p95 = found[len(found) // 2], found[min(len(found) - 1, int(len(found) * 0.95))]
        text = f"{what}: drop-to-result p50 {p50:.2f} s, p95 {p95:.2f} s over {len(found)}"
        if self.overwrite_seen is not None:
            text += f"; overwrite {self.overwrite_seen - self.overwrite_dropped:.2f} s"
        return text


def drop_and_time(
    s3_client: Any,
    bucket: str,
    *,
    count: int = 60,
    per_second: float = 2.0,
    restart: Callable[[], None] | None = None,
    overwrite: bool = True,
    settle_seconds: float = 120.0,
    seed: int = 404,
) -> Drops:
    """Drop ``count`` digits under ``incoming/`` with random names, restart the watcher
    halfway (``restart``), overwrite one; wait until every result (and the overwrite's
    second manifest line) is there, or ``settle_seconds``."""
    images, _ = make_digits(count + 1, seed=seed)
    drops = Drops()
    done = threading.Event()
    etags: dict[str, str] = {}

    def poll_results() -> None:
        """HEAD each awaited result (a listing would cost the S3 server the whole bucket)."""
        while not done.is_set():
            awaited = [key for key in [drops.warm_up, *drops.dropped] if key]
            awaited = [key for key in awaited if key not in drops.seen]
            if drops.overwritten and drops.overwrite_seen is None:
                awaited.append(drops.overwritten)
            for key in awaited:
                result = "results/" + key[len("incoming/") :] + ".json"
                try:
                    etag = s3_client.head_object(Bucket=bucket, Key=result)["ETag"]
                except ClientError:
                    continue
                now = time.monotonic()
                drops.seen.setdefault(key, now)
                first = etags.get(key)  # the first result's ETag, once overwritten
                if first is not None and etag != first:
                    drops.overwrite_seen = drops.overwrite_seen or now
            time.sleep(0.05)

    poller = threading.Thread(target=poll_results, daemon=True)
    poller.start()
    # One drop first, untimed: the worker's first batch loads the model and traces it.
    drops.warm_up = f"incoming/warm-up-{secrets.token_hex(4)}.png"
    s3_client.put_object(Bucket=bucket, Key=drops.warm_up, Body=png_bytes(images[count]))
    _wait(lambda: drops.warm_up in drops.seen, 120)
    for index in range(count):
        key = f"incoming/{secrets.token_hex(8)}.png"
        s3_client.put_object(Bucket=bucket, Key=key, Body=png_bytes(images[index]))
        drops.dropped[key] = time.monotonic()
        if restart is not None and index == count // 2 - 1:
            restart()
        time.sleep(1.0 / per_second)
    if overwrite:
        chosen = next(iter(drops.dropped))
        _wait(lambda: chosen in drops.seen, 60)
        result_key = "results/" + chosen[len("incoming/") :] + ".json"
        first = s3_client.head_object(Bucket=bucket, Key=result_key)["ETag"]
        drops.overwritten = chosen
        s3_client.put_object(Bucket=bucket, Key=chosen, Body=png_bytes(images[count]))
        drops.overwrite_dropped = time.monotonic()
        etags[chosen] = first
    expected = count + 1 + (1 if overwrite else 0)
    _wait(
        lambda: (
            sum(manifest_keys(s3_client, bucket, "results/").values()) >= expected
            and len(drops.seen) >= count
        ),
        settle_seconds,
    )
    time.sleep(2.0)  # a cycle or two more: nothing may be processed twice
    done.set()
    poller.join(timeout=5)
    return drops


def _wait(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.5)


def expected_counts(drops: Drops) -> Counter[str]:
    """Each dropped key once (the warm-up too), the overwritten one twice."""
    extra = Counter({drops.overwritten: 1}) if drops.overwritten else Counter()
    if drops.warm_up:
        extra[drops.warm_up] += 1
    return Counter(drops.dropped.keys()) + extra
