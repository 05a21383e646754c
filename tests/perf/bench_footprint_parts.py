"""``make bench-footprint``'s pieces: Redis memory readings and the finaliser's RSS figure.

:func:`finalizer_rss` builds a job by hand (the record as ``producer.job_start``
writes it, a manifest part per batch written with ``worker.manifest_parts.write_part``,
each batch begun and recorded in the job store), then has a fresh process run the
finaliser on it: ``python -m tests.perf.bench_footprint_parts --finalize JOB``, which
imports only what a finaliser needs and prints its RSS after the imports and its peak.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from bucketvision.infra import keys as names
from bucketvision.infra.job_plans import plan_key
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.outputs import (
    MANIFEST_FILE,
    PARTS_FOLDER,
    SUMMARY_FILE,
    job_file_key,
    manifest_line,
)
from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.worker.finalize import finalize_job
from bucketvision.worker.manifest_parts import write_part

ROOT = Path(__file__).resolve().parents[2]
PUT_THREADS = 16
LABELS = [str(digit) for digit in range(10)]


def say(message: str) -> None:
    print(f"[footprint {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# (figure, field, label, comparison, target); a label's {n} is the figure's size.
TARGETS = (
    ("submit", "keys_per_second", "submit a {n:,}-key list: keys/s", ">=", 50_000),
    ("submit", "bytes_per_item", "  Redis MEMORY USAGE / queued item, B", "<=", 40),
    ("submit", "used_memory_per_item", "  Redis used_memory delta / item, B", "<=", 40),
    ("job", "bytes_per_item", "finished {n:,}-image job: Redis kept / item, B", "<=", 4),
    ("job", "used_memory_per_item", "  Redis used_memory delta / item, B", "<=", 4),
    ("finalize", "peak_rss_mb", "finaliser, {n:,}-line manifest: peak RSS, MB", "<", 200),
    ("finalize", "growth_mb", "  RSS growth over its imports, MB", None, None),
)

COMPARE = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


# ---------------------------------------------------------------------- Redis readings


def key_usage(client: redis.Redis, match: str | None = None) -> dict[str, int]:
    """``MEMORY USAGE key SAMPLES 0`` (every element counted) of each key (matching)."""
    found = sorted(client.scan_iter(match=match, count=1000))
    pipe = client.pipeline(transaction=False)
    for name in found:
        pipe.execute_command("MEMORY", "USAGE", name, "SAMPLES", "0")
    return {name.decode(): int(size or 0) for name, size in zip(found, pipe.execute(), strict=True)}


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def usage_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Bytes each key grew by (new keys whole; deleted ones negative), the unchanged left out."""
    changed = {key: after.get(key, 0) - before.get(key, 0) for key in {*before, *after}}
    return {key: delta for key, delta in sorted(changed.items()) if delta}


def table(results: dict[str, Any]) -> tuple[str, bool]:
    """The figures against their targets, then every check; and whether every check held."""
    rows = [("figure", "measured", "target", "result")]
    for name, field, label, comparison, target in TARGETS:
        found = results["figures"][name]
        value = found.get(field)
        text = label.format(n=found.get("n", 0))
        if value is None:
            rows.append((text, found.get("error", found.get("skipped", "not run"))[:40], "", "-"))
            continue
        shown = f"{comparison} {target:,}" if comparison else "-"
        verdict = "info"
        if comparison:
            verdict = "PASS" if COMPARE[comparison](value, target) else "FAIL"
        rows.append((text, f"{value:,}", shown, verdict))
    checks = [
        (name, *item)
        for name, f in results["figures"].items()
        for item in f.get("checks", {}).items()
    ]
    for name, check, ok in checks:
        rows.append((f"check ({name}): {check}", ("NO", "yes")[ok], "yes", ("FAIL", "PASS")[ok]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    lines = [
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines), all(ok for *_, ok in checks)


def item_key(index: int) -> str:
    return f"many/{index % 100:02d}/{index:07d}.png"


def status_of(index: int) -> str:
    """A realistic mix: one item in 97 fails to decode, one in 211 is skipped, the rest ok."""
    if index % 97 == 0:
        return "error"
    return "skipped" if index % 211 == 0 else "ok"


def expected_counts(items: int) -> dict[str, int]:
    return {"ok": 0, "error": 0, "skipped": 0, **Counter(map(status_of, range(items)))}


def batch_lines(batch: int, batch_size: int, items: int, model: str) -> list[dict[str, Any]]:
    """The manifest lines of one batch, as a classify worker writes them (~250-300 bytes)."""
    lines = []
    for index in range(batch * batch_size, min(items, (batch + 1) * batch_size)):
        status = status_of(index)
        scores = sorted(((index * 7 + k * 13) % 1000 / 1000.0 for k in range(5)), reverse=True)
        top = [
            {"label": LABELS[(index + k) % 10], "score": round(s, 6)} for k, s in enumerate(scores)
        ]
        result = {"label": top[0]["label"], "score": top[0]["score"], "top_k": top}
        lines.append(
            manifest_line(
                item_key(index),
                status=status,
                output=None,
                result=result if status == "ok" else None,
                error=("decode_error", "cannot identify image file") if status == "error" else None,
                model=model,
                latency_ms=3.0 + (index % 500) / 100.0,
                attempts=1,
            )
        )
    return lines


def build_recorded_job(
    jobs: JobStore, store: S3Store, output: S3Uri, job_id: str, items: int, batch_size: int
) -> int:
    """A job of ``items`` in batches of ``batch_size``, every batch's part written and
    recorded, none finalised; returns the number of batches."""
    batches = -(-items // batch_size)
    model = "bench-cnn@1"
    fields = {"task": "classify", "model": model, "input": f"s3://{output.bucket}/many/"}
    fields.update({"output": str(output), "total": items, "batches": batches})
    fields.update({"batch_size": batch_size, "window": 256, "sent": batches, "planned": 1})
    if not jobs.create(job_id, {**fields, "item_outputs": 0}):
        raise RuntimeError(f"job {job_id} exists already")

    def one(batch: int) -> None:
        lines = batch_lines(batch, batch_size, items, model)
        write_part(store, output, job_id, batch, lines)
        jobs.begin_batch(job_id, batch, owner=f"footprint-{batch}")
        stages = {"download": 0.5, "decode": 0.1, "infer": 0.3, "upload": 0.0}
        recorded = jobs.record_batch(job_id, batch, lines, stages)
        if not recorded.first_time:
            raise RuntimeError(f"batch {batch} of {job_id} was recorded before")

    with ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(one, range(batches)))
    return batches


def run_finalizer(job_id: str) -> dict[str, Any]:
    """``--finalize JOB`` in a fresh process; what it printed (RSS in KiB, seconds, summary)."""
    done = subprocess.run(  # nosec B603 - our own module, fixed argv
        [sys.executable, "-m", "tests.perf.bench_footprint_parts", "--finalize", job_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the finaliser process failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def manifest_rows(store: S3Store, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    """The lines of a manifest, streamed (not ``infra.s3_streams.iter_json_lines``: its
    ``with response["Body"]`` yields botocore's raw urllib3 stream, which has no
    ``iter_lines``)."""
    body = store.client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        for row in body.iter_lines(chunk_size=1 << 16):
            if row.strip():
                yield json.loads(row)
    finally:
        body.close()


def check_manifest(store: S3Store, output: S3Uri, job_id: str, items: int) -> dict[str, Any]:
    """Stream the composed manifest: its line count, and whether its keys are in item order."""
    lines, in_order = 0, True
    for line in manifest_rows(store, output.bucket, job_file_key(output, job_id, MANIFEST_FILE)):
        in_order = in_order and line.get("key") == item_key(lines)
        lines += 1
    return {
        "lines": lines,
        "in_order": in_order and lines == items,
        **litter(store, output, job_id),
    }


def litter(store: S3Store, output: S3Uri, job_id: str) -> dict[str, Any]:
    """What an ended job should no longer have in S3: its manifest parts and its plan."""
    parts = S3Uri(output.bucket, job_file_key(output, job_id, PARTS_FOLDER) + "/")
    left = sum(1 for _ in store.list_objects(parts))
    return {"parts_left": left, "plan_left": store.exists(output.bucket, plan_key(output, job_id))}


def finalizer_rss(
    jobs: JobStore, store: S3Store, output: S3Uri, items: int, batch_size: int
) -> dict[str, Any]:
    """The finaliser's peak RSS composing an ``items``-line manifest, and the checks."""
    job_id = f"footprint-finalize-{os.urandom(4).hex()}"
    start = time.perf_counter()
    batches = build_recorded_job(jobs, store, output, job_id, items, batch_size)
    say(f"finaliser: {batches} parts written and recorded in {time.perf_counter() - start:.1f} s")
    child = run_finalizer(job_id)
    say(f"finaliser: peak RSS {child['peak_kib'] / 1024:.1f} MB in {child['seconds']:.1f} s")
    checks = check_manifest(store, output, job_id, items)
    summary = store.get_json(output.bucket, job_file_key(output, job_id, SUMMARY_FILE))
    counts = {name: summary.get(name) for name in ("ok", "error", "skipped")}
    state = jobs.get(job_id)["state"]
    left = key_usage(jobs.redis, f"{names.job(job_id)}*")
    return {
        "items": items,
        "batches": batches,
        "manifest_bytes": child.get("manifest_bytes"),
        "peak_rss_mb": round(child["peak_kib"] / 1024, 1),
        "baseline_rss_mb": round(child["baseline_kib"] / 1024, 1),
        "growth_mb": round((child["peak_kib"] - child["baseline_kib"]) / 1024, 1),
        "ru_maxrss_mb": round(child["ru_maxrss_kib"] / 1024, 1),  # the bench's, not the child's
        "finalize_seconds": round(child["seconds"], 2),
        "state": state,
        "summary_counts": counts,
        "counts_right": counts == expected_counts(items) and summary.get("total") == items,
        "redis_keys_left": left,
        **checks,
    }


def memory_kib() -> dict[str, int]:
    """This process's VmRSS and VmHWM (peak RSS) in KiB, and ``ru_maxrss``, which is not
    its own: Linux carries the spawning parent's peak across exec (signal->maxrss)."""
    with open("/proc/self/status") as status:
        rows = dict(row.split(":", 1) for row in status)
    found = {name: int(rows[name].split()[0]) for name in ("VmRSS", "VmHWM")}
    return {**found, "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def finalize_main(job_id: str) -> None:
    """The child: finalise ``job_id`` and print its RSS (KiB) after imports and at peak."""
    baseline = memory_kib()
    settings = Settings.from_env()
    jobs, store = JobStore.from_url(settings.broker_url), S3Store.from_settings(settings)
    start = time.perf_counter()
    summary = finalize_job(jobs, store, job_id, f"footprint:{os.getpid()}")
    seconds = time.perf_counter() - start
    if summary is None:
        raise SystemExit(f"job {job_id} was not finalised by this process")
    record = jobs.get(job_id)
    output = parse_s3_uri(str(record["output"]))
    head = store.client.head_object(
        Bucket=output.bucket, Key=job_file_key(output, job_id, MANIFEST_FILE)
    )
    peak = memory_kib()
    result = {"baseline_kib": baseline["VmRSS"], "peak_kib": peak["VmHWM"], "seconds": seconds}
    result.update({"ru_maxrss_kib": peak["ru_maxrss"], "end_rss_kib": peak["VmRSS"]})
    result.update({"state": summary["state"], "manifest_bytes": int(head["ContentLength"])})
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--finalize", required=True, metavar="JOB", help="finalise this job")
    finalize_main(parser.parse_args().finalize)
