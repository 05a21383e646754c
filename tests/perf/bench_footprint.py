"""``make bench-footprint``: what a job costs Redis and the finaliser, three figures in one run.

Starts its own Redis (a free port: its memory figures are this bench's alone) and
moto S3 server, registers the seed CNN through ``models.registration`` (in a
subprocess, ``tests.perf.bench_models``: this process never imports TensorFlow), then:

1. **Submit from a key list**: ``submit --keys-from PATH``'s path (``read_key_list``
   then ``submit_job``) for a 200,000-key list, no worker running: keys/s, and the
   Redis bytes per queued item, as the sum of ``MEMORY USAGE`` of every key the job
   added or grew and as the ``used_memory`` delta. The job is then cancelled.
2. **A finished 20,000-image job**: a real ``bucketvision worker --cpu
   --concurrency 2`` runs a job over 20,000 digit PNGs without item outputs; what
   Redis keeps for it afterwards, per item (its ``bv:job:<id>*`` keys, and the
   ``used_memory`` delta from before the submit). Its manifest has every line and
   its parts and plan are gone.
3. **The finaliser composing a 200,000-line manifest**: a job built by hand, a part
   per batch of 256, finalised in a fresh process (``tests.perf.bench_footprint_parts``);
   its peak RSS, and the growth over its RSS after imports.

``--quick``: 20,000 / 2,000 / 20,000. Progress on stderr; a table, then one JSON
object as the last stdout line. Exit code 1 if a phase or a check failed (a figure
over its target only prints FAIL).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bucketvision.infra import keys as names
from bucketvision.infra.local_services import ManagedProcess, start_moto, start_redis
from bucketvision.infra.outputs import MANIFEST_FILE, job_file_key
from bucketvision.infra.queue import INFERENCE_QUEUE
from bucketvision.infra.s3 import S3Uri
from bucketvision.infra.settings import Settings
from bucketvision.producer.key_lists import read_key_list
from bucketvision.producer.lifecycle import cancel_job
from bucketvision.producer.submit import JobRequest, SubmittedJob, submit_job
from tests.perf import bench_footprint_parts as parts
from tests.perf.bench import Phases
from tests.perf.bench_data import upload_digit_pngs
from tests.perf.bench_service import (
    Service,
    bench_environment,
    run_pipeline,
    start_worker,
    warm_up,
)

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "footprint"
MODELS_URI = "s3://footprint-models/models/"
CONCURRENCY = 2
SETTLE_SECONDS = 60  # after a job ends: its parts deleted, its last message acknowledged


def say(message: str) -> None:
    parts.say(message)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20,000 / 2,000 / 20,000 (dev)")
    parser.add_argument("--submit-keys", type=int, help="keys of the submitted list (200,000)")
    parser.add_argument("--job-images", type=int, help="images of the finished job (20,000)")
    parser.add_argument("--manifest-lines", type=int, help="lines the finaliser composes")
    parser.add_argument("--repeats", type=int, default=3, help="submits timed (median)")
    parser.add_argument("--skip", default="", help="comma list of: submit,job,finalize")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, model)")
    options = parser.parse_args(argv)
    options.submit_keys = options.submit_keys or (20_000 if options.quick else 200_000)
    options.job_images = options.job_images or (2_000 if options.quick else 20_000)
    options.manifest_lines = options.manifest_lines or (20_000 if options.quick else 200_000)
    options.skip = {part.strip() for part in options.skip.split(",") if part.strip()}
    return options


class Footprint:
    """One run: the service's clients on the bench's own Redis and S3, and the figures."""

    def __init__(self, options: argparse.Namespace, workdir: Path) -> None:
        self.options, self.workdir = options, workdir
        self.settings = Settings.from_env()
        self.service = Service.connect(self.settings)
        self.redis = self.service.jobs.redis
        self.phases = Phases()
        self.model: str | None = None
        self.figures: dict[str, dict[str, Any]] = {"submit": {}, "job": {}, "finalize": {}}

    def run(self) -> dict[str, Any]:
        with self.phases.phase("register the seed CNN"):
            self.service.store.ensure_bucket(BUCKET)
            self.model = self.register_model()
        steps = {"submit": self.submit_figure, "job": self.job_figure}
        steps["finalize"] = self.finalize_figure
        for name, step in steps.items():
            if name in self.options.skip:
                self.figures[name]["skipped"] = "--skip"
                continue
            with self.phases.phase(f"figure: {name}", self.figures[name]):
                self.figures[name].update(step())
        return {
            "bench": "bucketvision make bench-footprint",
            "quick": self.options.quick,
            "window": self.settings.job_window,
            "batch_size": self.settings.batch_size,
            "figures": self.figures,
            "errors": self.phases.errors,
        }

    def register_model(self) -> str:
        argv = [sys.executable, "-m", "tests.perf.bench_models", "--out", str(self.workdir)]
        made = subprocess.run(  # nosec B603 - our own module, fixed argv
            [*argv, "--models", "cnn"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if made.returncode != 0:
            raise RuntimeError(f"bench_models failed:\n{made.stderr[-3000:]}")
        return str(json.loads(made.stdout.strip().splitlines()[-1])["cnn"]["ref"])

    def submit_listed(self, path: Path, prefix: str) -> SubmittedJob:
        """``bucketvision submit --task classify --keys-from PATH``, as the CLI does it."""
        listed = read_key_list(str(path), self.service.store)
        where = (f"s3://{BUCKET}/{prefix}", f"s3://{BUCKET}/out/{prefix}")
        request = JobRequest("classify", *where, self.model, self.settings.batch_size, keys=listed)
        request = replace(
            request, keys_source=f"--keys-from {path}", window=self.settings.job_window
        )
        return submit_job(request, **self.service.clients())

    def submit_figure(self) -> dict[str, Any]:
        """``--repeats`` submits, each cancelled: the median keys/s, the rest of run 1."""
        count = self.options.submit_keys
        warm, path = self.workdir / "warm-keys.txt", self.workdir / "keys.txt"
        warm.write_text("".join(f"warm/{index:03d}.png\n" for index in range(100)))
        path.write_text("".join(f"listed/{i % 100:02d}/{i:07d}.png\n" for i in range(count)))
        # A first small job loads the Lua scripts and kombu's bindings: one-off costs.
        cancel_job(self.service.jobs, self.service.store, self.submit_listed(warm, "warm/").job_id)
        self.redis.delete(INFERENCE_QUEUE)
        runs = [self.submit_once(path, count) for _ in range(self.options.repeats)]
        rates = [run["keys_per_second"] for run in runs]
        checks = {name: all(run["checks"][name] for run in runs) for name in runs[0]["checks"]}
        runs[0].update(keys_per_second=statistics.median(rates), runs=rates, checks=checks)
        return runs[0]

    def submit_once(self, path: Path, count: int) -> dict[str, Any]:
        jobs = self.service.jobs
        before, memory = parts.key_usage(self.redis), parts.used_memory(self.redis)
        start = time.perf_counter()
        job = self.submit_listed(path, "listed/")
        seconds = time.perf_counter() - start
        grown = parts.usage_delta(before, parts.key_usage(self.redis))
        memory = parts.used_memory(self.redis) - memory
        queued = int(self.redis.llen(INFERENCE_QUEUE))
        say(f"submit: {count / seconds:,.0f} keys/s; Redis +{sum(grown.values()):,} B {grown}")
        told = cancel_job(jobs, self.service.store, job.job_id)
        state = jobs.get(job.job_id)["state"]
        kept = parts.key_usage(self.redis, f"{names.job(job.job_id)}*")
        self.redis.delete(INFERENCE_QUEUE)  # its window: no worker here skips it
        expected = min(self.settings.job_window, job.batches)
        return {
            "n": count,
            "keys_per_second": round(count / seconds),
            "batches": job.batches,
            "bytes_per_item": round(sum(grown.values()) / count, 2),
            "used_memory_per_item": round(memory / count, 2),
            "keys_grown": grown,
            "queued_messages": queued,
            "cancel": told,
            "kept_after_cancel": kept,
            "checks": {
                f"queue holds min(window, batches) = {expected} messages": queued == expected,
                "the job ended cancelled": state == "cancelled",
            },
        }

    def job_figure(self) -> dict[str, Any]:
        count, service, store = self.options.job_images, self.service, self.service.store
        start = time.perf_counter()
        upload_digit_pngs(store.client, BUCKET, "digits/", count, 99)
        upload_digit_pngs(store.client, BUCKET, "digits-warm/", 64, 7)
        say(f"job: uploaded {count:,} digit PNGs in {time.perf_counter() - start:.1f} s")
        assert self.model is not None, "no model"
        worker = start_worker({}, self.workdir / "worker.log", concurrency=CONCURRENCY)
        try:
            warm = f"s3://{BUCKET}/digits-warm/"
            out, size = f"s3://{BUCKET}/out/warm/", self.settings.batch_size
            warm_up(service, worker, self.model, warm, out, CONCURRENCY, size)
            self.settle(None)
            before, memory = parts.key_usage(self.redis), parts.used_memory(self.redis)
            output = S3Uri(BUCKET, "out/job/")
            run = run_pipeline(
                service,
                self.model,
                f"s3://{BUCKET}/digits/",
                str(output),
                item_outputs=False,
                batch_size=self.settings.batch_size,
            )
            job_id = run["job_id"]
            settled = self.settle((output, job_id))
            grown = parts.usage_delta(before, parts.key_usage(self.redis))
            memory = parts.used_memory(self.redis) - memory
        finally:
            worker.stop()
        kept = parts.key_usage(self.redis, f"{names.job(job_id)}*")
        manifest = job_file_key(output, job_id, MANIFEST_FILE)
        lines = sum(1 for _ in parts.manifest_rows(store, BUCKET, manifest))
        litter = parts.litter(store, output, job_id)
        say(f"job: {run['images_per_second']:.0f} img/s; Redis keeps {kept}; grown {grown}")
        return {
            "n": count,
            "images_per_second": round(run["images_per_second"], 1),
            "bytes_per_item": round(sum(kept.values()) / count, 3),
            "used_memory_per_item": round(memory / count, 3),
            "kept": kept,
            "keys_grown": grown,
            "settle_seconds": settled,
            "manifest_lines": lines,
            **litter,
            "checks": {
                f"manifest has {count:,} lines": lines == count,
                "no manifest parts left": litter["parts_left"] == 0,
                "no plan left": not litter["plan_left"],
                "only the job record is left in Redis": set(kept) == {names.job(job_id)},
            },
        }

    def settle(self, ended: tuple[S3Uri, str] | None) -> float:
        """Wait until the queue is empty, nothing is unacknowledged and (for the job that
        ``ended``) its parts are deleted; the seconds it took."""
        start = time.perf_counter()
        while time.perf_counter() - start < SETTLE_SECONDS:
            busy = self.redis.llen(INFERENCE_QUEUE) or self.redis.hlen("unacked")
            if not busy and (
                ended is None or not parts.litter(self.service.store, *ended)["parts_left"]
            ):
                break
            time.sleep(0.2)
        return round(time.perf_counter() - start, 2)

    def finalize_figure(self) -> dict[str, Any]:
        count = self.options.manifest_lines
        output = S3Uri(BUCKET, "out/finalize/")
        found = parts.finalizer_rss(self.service.jobs, self.service.store, output, count, 256)
        checks = {
            f"manifest has {count:,} lines in order": found["lines"] == count and found["in_order"],
            "summary counts right": found["counts_right"],
            "the job ended finished": found["state"] == "finished",
            "no manifest parts left": found["parts_left"] == 0,
        }
        return {"n": count, **found, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bv-footprint-"))
    say(f"work dir {workdir} (worker log, model file)")
    bench_environment(workdir, MODELS_URI)
    started: list[ManagedProcess] = []
    began = time.perf_counter()
    try:
        started.append(start_redis())
        started.append(start_moto())
        os.environ.update({"BV_BROKER_URL": started[0].url, "BV_S3_ENDPOINT_URL": started[1].url})
        results = Footprint(options, workdir).run()
    finally:
        for managed in reversed(started):
            managed.stop()
        if options.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["wall_seconds"] = round(time.perf_counter() - began, 1)
    text, held = parts.table(results)
    print(text)
    print(json.dumps(results, separators=(",", ":")))
    return 1 if results["errors"] or not held else 0


if __name__ == "__main__":
    sys.exit(main())
