"""A job's whole life on the real stack (issue 14): jobs, cancel, retry, key lists, filters,
chosen ids, dry runs and wait timeouts, with their errors.

One worker serves the whole module (a real ``bucketvision worker``, one pool child, moto's
S3 server and Redis). Its child sleeps before each forward pass over keys under ``/slow/``
(``tests/e2e/slow_infer_worker.py``), so a job there is slow enough to cancel mid-way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import ROOT, bad_files, png_bytes, printed_job_id, read_job, run_cli
from tests.helpers import upload_digits as put_digits
from tests.workers import WorkerProcess

pytestmark = pytest.mark.e2e

BUCKET = "e2e-lifecycle"
FORWARD_BATCH = 4  # the worker's BV_FORWARD_BATCH: a batch of 16 is 4 forward passes


def submit(env: dict[str, str], source: str, output: str, *extra: str) -> Any:
    arguments = ["--task", "classify", "--input", f"s3://{BUCKET}/{source}"]
    return run_cli(env, "submit", *arguments, "--output", f"s3://{BUCKET}/{output}", *extra)


def cli_with_stdin(env: dict[str, str], stdin: str, *args: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "bucketvision.producer.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def outputs(s3_client: Any, prefix: str) -> list[str]:
    """The item result files under ``prefix`` (not the job files)."""
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(item["Key"] for item in listed if "/_jobs/" not in item["Key"])


@pytest.fixture(scope="module")
def inputs(s3_client: Any, digits_model: str) -> dict[str, Any]:
    """``in/``: 12 digits under d/, 4 under skip/, 2 bad files; ``cancel/slow/``: 96 digits."""
    s3_client.create_bucket(Bucket=BUCKET)
    good = put_digits(s3_client, BUCKET, "in/d/", 12, seed=81)
    skipped = put_digits(s3_client, BUCKET, "in/skip/", 4, seed=82)
    hostile = bad_files()
    for name in ("notes.jpg", "empty.png"):
        s3_client.put_object(Bucket=BUCKET, Key=f"in/bad/{name}", Body=hostile[name][0])
    slow = put_digits(s3_client, BUCKET, "cancel/slow/", 96, seed=83)
    return {"good": sorted(good), "skip": sorted(skipped), "slow": sorted(slow)}


@pytest.fixture(scope="module")
def worker(
    service_env: dict[str, str], digits_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    env = {**service_env, "BV_FORWARD_BATCH": str(FORWARD_BATCH), "BV_TEST_INFER_SECONDS": "0.5"}
    log = tmp_path_factory.mktemp("lifecycle") / "worker.log"
    process = WorkerProcess(
        env, log, "--cpu", "--concurrency", "1", module="tests.e2e.slow_infer_worker"
    )
    process.wait_for_children(1)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def mixed_job(service_env: dict[str, str], inputs: dict[str, Any], worker: WorkerProcess) -> str:
    """A finished job over ``in/`` but ``skip/``: 12 ok lines and 2 error lines."""
    done = submit(service_env, "in/", "out/mixed/", "--exclude", "skip/*", "--wait", "--quiet")
    assert done.returncode == 0, done.stderr + worker.log()
    return printed_job_id(done)


def test_dry_run_counts_objects_and_bytes_and_creates_no_job(
    service_env: dict[str, str], s3_client: Any, inputs: dict[str, Any]
) -> None:
    index = redis.Redis.from_url(service_env["BV_BROKER_URL"])
    before = index.zcard("bv:jobs")
    done = submit(service_env, "in/", "out/dry/", "--exclude", "skip/*", "--dry-run")
    assert done.returncode == 0, done.stderr
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix="in/")["Contents"]
    taken = [item for item in listed if not item["Key"].startswith("in/skip/")]
    size = sum(item["Size"] for item in taken)
    assert done.stdout.startswith(f"would process {len(taken)} objects, {size} bytes, with digits@")
    assert index.zcard("bv:jobs") == before


def test_exclude_leaves_keys_out(s3_client: Any, inputs: dict[str, Any], mixed_job: str) -> None:
    lines, summary = read_job(s3_client, BUCKET, "out/mixed/", mixed_job)
    expected = [*inputs["good"], "in/bad/empty.png", "in/bad/notes.jpg"]
    assert sorted(line["key"] for line in lines) == sorted(expected)
    assert (summary["ok"], summary["error"], summary["total"]) == (12, 2, 14)


def test_keys_from_a_file_a_manifest_and_stdin(
    service_env: dict[str, str], s3_client: Any, inputs: dict[str, Any], mixed_job: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    chosen = inputs["good"][:3]
    listing = tmp_path / "keys.txt"
    listing.write_text(f"{chosen[0]}\r\n\n{chosen[1]}\n{chosen[2]}\n{chosen[0]}\n", "utf-8")
    done = submit(service_env, "in/", "out/listed/", "--keys-from", str(listing), "--wait")
    assert done.returncode == 0, done.stderr
    lines, summary = read_job(s3_client, BUCKET, "out/listed/", printed_job_id(done))
    assert Counter(line["key"] for line in lines) == Counter(chosen)  # each once
    assert summary["ok"] == 3 == summary["total"]

    manifest = f"s3://{BUCKET}/out/mixed/_jobs/{mixed_job}/manifest.jsonl"  # 14 lines
    excluded = submit(
        service_env, "in/", "out/m/", "--keys-from", manifest, "--exclude", "bad/*", "--dry-run"
    )
    assert excluded.stdout.startswith("would process 12 objects, "), excluded.stderr

    piped = cli_with_stdin(
        service_env, f"{chosen[0]}\n", "submit", "--task", "classify", "--input",
        f"s3://{BUCKET}/in/", "--keys-from", "-", "--dry-run",
    )  # fmt: skip
    assert piped.returncode == 0 and piped.stdout.startswith("would process 1 objects"), piped


def test_an_empty_or_foreign_key_list_is_refused(
    service_env: dict[str, str], inputs: dict[str, Any], tmp_path: Path
) -> None:
    empty = cli_with_stdin(
        service_env, "\n\n", "submit", "--task", "classify", "--input", f"s3://{BUCKET}/in/",
        "--keys-from", "-",
    )  # fmt: skip
    assert empty.returncode == 2, empty.stderr
    assert "error: --keys-from - lists no keys" in empty.stderr
    relative = tmp_path / "relative.txt"
    relative.write_text("d/0/00001.png\n", "utf-8")
    foreign = submit(service_env, "in/", "out/x/", "--keys-from", str(relative))
    assert foreign.returncode == 2 and "not under the input prefix" in foreign.stderr
    missing = submit(service_env, "in/", "out/x/", "--keys-from", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "error: --keys-from" in missing.stderr


def test_a_job_id_submitted_twice_makes_one_job(
    service_env: dict[str, str], s3_client: Any, inputs: dict[str, Any], worker: WorkerProcess
) -> None:
    job_id = f"lifecycle-once-{int(time.time())}"
    extra = ("--include", "d/*", "--job-id", job_id)
    first = submit(service_env, "in/", "out/once/", *extra)
    assert first.returncode == 0 and printed_job_id(first) == job_id, first.stderr
    again = submit(service_env, "in/", "out/once/", *extra, "--wait")
    assert again.returncode == 0, again.stderr + worker.log()
    assert printed_job_id(again) == job_id and "exists already" in again.stderr
    index = redis.Redis.from_url(service_env["BV_BROKER_URL"])
    assert index.zscore("bv:jobs", job_id) is not None
    lines, summary = read_job(s3_client, BUCKET, "out/once/", job_id)
    assert sorted(line["key"] for line in lines) == inputs["good"]  # one job's lines, once
    assert summary["job_id"] == job_id and summary["total"] == 12

    taken = submit(service_env, "in/", "out/elsewhere/", *extra)
    assert taken.returncode == 2 and "is taken by a job" in taken.stderr
    bad = submit(service_env, "in/", "out/once/", "--job-id", "../etc")
    assert bad.returncode == 2 and "error: --job-id '../etc'" in bad.stderr


def test_retry_runs_the_error_lines_again_linked_to_the_job(
    service_env: dict[str, str], s3_client: Any, mixed_job: str, worker: WorkerProcess
) -> None:
    from bucketvision.models.digits import make_digits

    fixed = png_bytes(make_digits(1, seed=9)[0][0])  # the empty object, now a digit
    s3_client.put_object(Bucket=BUCKET, Key="in/bad/empty.png", Body=fixed)
    done = run_cli(service_env, "retry", mixed_job, "--errors", "EmptyObject", "--wait", "--json")
    assert done.returncode == 0, done.stderr + worker.log()
    status = json.loads(done.stdout)  # --json: the final status alone on stdout
    retry_id = status["job_id"]
    assert retry_id != mixed_job and status["state"] == "finished" and status["ok"] == 1
    assert f"retrying 1 error lines of {mixed_job}" in done.stderr
    lines, summary = read_job(s3_client, BUCKET, "out/mixed/", retry_id)
    assert [(line["key"], line["status"]) for line in lines] == [("in/bad/empty.png", "ok")]
    assert summary["retry_of"] == mixed_job and summary["model"].startswith("digits@")
    listed = run_cli(service_env, "jobs", "--json", "--limit", "5")
    rows = {row["job_id"]: row for row in json.loads(listed.stdout)}
    assert rows[retry_id]["retry_of"] == mixed_job

    nothing = run_cli(service_env, "retry", retry_id)
    assert nothing.returncode == 2
    assert f"job {retry_id} has no error lines; nothing to retry" in nothing.stderr
    other = run_cli(service_env, "retry", mixed_job, "--errors", "DeadLetter")
    assert other.returncode == 2 and "no error lines of type DeadLetter" in other.stderr


def test_cancel_stops_a_job_mid_way_with_a_manifest_of_what_ran(
    service_env: dict[str, str], s3_client: Any, inputs: dict[str, Any], worker: WorkerProcess
) -> None:
    started = submit(
        service_env, "cancel/", "out/cancel/", "--batch-size", "16", "--wait", "--timeout", "1"
    )
    assert started.returncode == 1, started.stderr + worker.log()
    assert "did not finish within 1 s (it goes on without this command)" in started.stderr
    job_id = printed_job_id(started)
    still = run_cli(service_env, "status", job_id, "--wait", "--timeout", "0.5", "--quiet")
    assert still.returncode == 1 and "did not finish within" in still.stderr
    jobs = redis.Redis.from_url(service_env["BV_BROKER_URL"])
    assert jobs.hget(f"bv:job:{job_id}", "state") in (b"queued", b"running")

    cancelled = run_cli(service_env, "cancel", job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"job {job_id}" in cancelled.stdout and "cancel" in cancelled.stdout
    waited = run_cli(service_env, "status", job_id, "--wait", "--quiet", timeout=60)
    assert waited.returncode == 1, waited.stderr + worker.log()
    assert f"job {job_id} was cancelled" in waited.stderr

    lines, summary = read_job(s3_client, BUCKET, "out/cancel/", job_id)
    keys = [line["key"] for line in lines]
    assert len(keys) == len(set(keys)), "an item has two lines"
    assert 0 < len(keys) < len(inputs["slow"]), len(keys)
    assert len(keys) % FORWARD_BATCH == 0, "a batch stopped in the middle of a forward pass"
    assert all(line["status"] == "ok" for line in lines)
    ran = sorted(f"out/cancel/{key[len('cancel/') :]}.json" for key in keys)
    assert outputs(s3_client, "out/cancel/") == ran  # exactly the items that ran
    assert summary["state"] == "cancelled" and summary["ok"] == len(keys)
    assert summary["not_run"] == len(inputs["slow"]) - len(keys) == summary["total"] - len(keys)
    time.sleep(1.0)  # the skipped batches write nothing, and the record keeps the files' counts
    assert outputs(s3_client, "out/cancel/") == ran
    record = {k.decode(): v.decode() for k, v in jobs.hgetall(f"bv:job:{job_id}").items()}
    assert record["state"] == "cancelled" and int(record["ok"]) == len(keys)

    again = run_cli(service_env, "cancel", job_id)
    assert again.returncode == 2
    assert f"job {job_id} has already ended (cancelled); nothing to cancel" in again.stderr
    listed = run_cli(service_env, "jobs", "--state", "cancelled", "--json")
    assert job_id in [row["job_id"] for row in json.loads(listed.stdout)]


def test_cancelling_a_finished_job_is_refused(service_env: dict[str, str], mixed_job: str) -> None:
    done = run_cli(service_env, "cancel", mixed_job)
    assert done.returncode == 2
    assert f"job {mixed_job} has already ended (finished); nothing to cancel" in done.stderr


def test_jobs_lists_recent_jobs_newest_first(service_env: dict[str, str], mixed_job: str) -> None:
    listed = run_cli(service_env, "jobs", "--json", "--limit", "3")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 3
    ages = [row["age_seconds"] for row in rows]
    assert ages == sorted(ages)  # newest first
    assert set(rows[0]) >= {"job_id", "state", "ok", "error", "skipped", "total", "model"}
    finished = json.loads(run_cli(service_env, "jobs", "--state", "finished", "--json").stdout)
    assert mixed_job in [row["job_id"] for row in finished]
    assert all(row["state"] == "finished" for row in finished)
    table = run_cli(service_env, "jobs", "--limit", "50")
    line = next(line for line in table.stdout.splitlines() if line.startswith(mixed_job))
    assert line.split()[1:5] == ["finished", "12/2/0", "of", "14"]
    assert run_cli(service_env, "jobs", "--limit", "0").returncode == 2
    assert run_cli(service_env, "jobs", "--state", "lost").returncode == 2


@pytest.mark.parametrize("command", [("cancel",), ("retry",), ("status", "--wait")])
def test_an_unknown_job_is_a_clear_error(service_env: dict[str, str], command: tuple) -> None:
    done = run_cli(service_env, command[0], "20991231T000000Z-00000000", *command[1:])
    assert done.returncode == 2
    assert "error: no job '20991231T000000Z-00000000'" in done.stderr


def test_a_timeout_needs_a_wait(service_env: dict[str, str]) -> None:
    done = run_cli(service_env, "status", "any", "--timeout", "5")
    assert done.returncode == 2 and "error: --timeout applies to --wait" in done.stderr
