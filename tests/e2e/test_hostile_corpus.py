"""The hostile corpus through a real classify job: every file a result or an error line.

Real worker processes, Redis, moto's S3 server and the CLI. Every corpus key must
appear exactly once in the manifest, no pool child may die, the job must finish
in bounded time, and no output may land outside the output prefix (odd unicode
keys included) nor be shared by two inputs (a key with no output of its own, such
as ``names/double//slash.png``, is an ``UnmappableKey`` error line). The tally
line goes to the closing note.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bucketvision.infra.outputs import mapping_error, parse_jsonl
from bucketvision.infra.s3 import S3Uri
from tests.helpers import printed_job_id, submit_cli
from tests.hostile_corpus import CorpusFile, hostile_corpus

pytestmark = pytest.mark.e2e

BUCKET = "e2e-hostile"
INPUT = "hostile/"
OUTPUT = "out/"
JOB_SECONDS = 600  # a hang guard: the job takes well under a minute on two busy cores


def list_keys(s3_client: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def upload(s3_client: Any, files: dict[str, CorpusFile]) -> None:
    def put(item: tuple[str, CorpusFile]) -> None:
        key, file = item
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=file.data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files.items()))


def read_job(s3_client: Any, job_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    base = f"{OUTPUT}_jobs/{job_id}/"
    manifest = s3_client.get_object(Bucket=BUCKET, Key=base + "manifest.jsonl")["Body"].read()
    summary = s3_client.get_object(Bucket=BUCKET, Key=base + "summary.json")["Body"].read()
    return parse_jsonl(manifest.decode()), json.loads(summary)


@pytest.mark.timeout(1500)
def test_hostile_corpus_job(service_env, s3_client, digits_model, start_worker) -> None:  # type: ignore[no-untyped-def]
    s3_client.create_bucket(Bucket=BUCKET)
    # Every file, including keys with U+2028 or U+0085 (line breaks to str.splitlines).
    files = {INPUT + file.name: file for file in hostile_corpus()}
    upload(s3_client, files)
    stored = Counter(list_keys(s3_client, INPUT))
    assert stored == Counter(files.keys()), "the S3 server changed or lost keys"
    worker = start_worker("--cpu", "--concurrency", "2")
    children = sorted(worker.wait_for_children(2))

    started = time.monotonic()
    done = submit_cli(
        service_env,
        f"s3://{BUCKET}/{INPUT}",
        f"s3://{BUCKET}/{OUTPUT}",
        "--include",
        "*",
        "--batch-size",
        "16",
        "--wait",
        timeout=JOB_SECONDS,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr + worker.log()
    job_id = printed_job_id(done)
    lines, summary = read_job(s3_client, job_id)

    seen = Counter(line["key"] for line in lines)
    lost = set(files) - set(seen)
    duplicated = {key for key, count in seen.items() if count > 1}
    assert not lost, sorted(lost)
    assert not duplicated, sorted(duplicated)
    assert set(seen) == set(files)
    assert summary["state"] == "finished"
    assert summary["total"] == len(files)
    assert summary["ok"] + summary["error"] == summary["total"] and summary["skipped"] == 0

    tally: Counter[str] = Counter()
    wrong = []
    for line in lines:
        file = files[line["key"]]
        if mapping_error(S3Uri(BUCKET, INPUT), line["key"]):  # e.g. names/double//slash.png
            file = CorpusFile(file.name, file.data, file.category, "error", kind="UnmappableKey")
        tally[line["status"]] += 1
        assert line["status"] in ("ok", "error"), line
        if line["status"] == "error":
            assert line["error"]["type"] and line["error"]["message"], line
            assert line["result"] is None and line["output"] is None, line
        else:
            assert set(line["result"]) == {"label", "score", "top_k", "image_size"}, line
            assert line["output"] and line["output"].startswith(f"s3://{BUCKET}/{OUTPUT}")
        if file.expect != "either" and line["status"] != file.expect:
            wrong.append((line["key"], file.expect, line["status"], line["error"]))
        elif file.kind and (line["error"] or {}).get("type") != file.kind:
            wrong.append((line["key"], file.kind, line["error"]))
    assert not wrong, wrong
    assert tally["ok"] == summary["ok"] and tally["error"] == summary["error"]

    # no pool child crashed or was replaced, and the parent is alive
    assert worker.process.poll() is None, worker.log()
    assert sorted(worker.children()) == children, worker.log()
    assert seconds < JOB_SECONDS

    # nothing was written outside the output prefix, whatever the key looked like
    outside = [key for key in list_keys(s3_client) if key not in files]
    assert outside and all(key.startswith(OUTPUT) for key in outside), [
        key for key in outside if not key.startswith(OUTPUT)
    ]
    outputs = Counter(line["output"] for line in lines if line["output"])
    collisions = {output: count for output, count in outputs.items() if count > 1}
    assert not collisions, collisions  # the key mapping is one-to-one (issue 14)
    print(
        f"\ncorpus: tried={len(files)} ok={tally['ok']} errors={tally['error']} crashes=0 "
        f"hangs=0 lost={len(lost)} duplicated={len(duplicated)}"
    )
    print(
        f"job {job_id}: {seconds:.1f} s, {summary['images_per_second']} images/s, "
        f"decode stage {summary['stage_seconds']['decode']:.2f} s; error types "
        f"{dict(Counter(line['error']['type'] for line in lines if line['error']))}; "
        f"output keys shared by several inputs: {collisions or 'none'}"
    )
