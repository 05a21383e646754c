"""``bucketvision demo``: the whole flow on a local stack, within 5 minutes on 2 cores.

Starts Redis (if none answers) and a moto S3 server, writes the project's
synthetic datasets (digits; shape scenes with boxes and masks) into a bucket,
starts a worker on both queues, trains the four default models briefly through
the ``train`` task, runs a classify, detect, segment and generate job with
progress bars, and prints what each produced and where to look.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bucketvision.infra.local_services import local_stack
from bucketvision.infra.outputs import (
    JOB_FILES_FOLDER,
    MANIFEST_FILE,
    SUMMARY_FILE,
    job_file_key,
    parse_jsonl,
)
from bucketvision.infra.s3 import S3Store, parse_s3_uri
from bucketvision.infra.settings import DEFAULT_MODELS, Settings

if TYPE_CHECKING:
    from bucketvision.producer.client import Client

DEMO_BUCKET = "bucketvision-demo"
# task: (training items, items in the demo job, epochs: brief, not full quality). The two
# longest trainings come first, so the worker's two children start them together; the epochs
# keep the whole demo within 5 minutes on 2 cores.
DATASETS = {
    "segment": (800, 40, 6),
    "detect": (1000, 40, 8),
    "classify": (2000, 500, 4),
    "generate": (2000, 64, 6),
}
# The segmenter's classes emerge only after some 600 steps, and the detector also learns
# more in a given time from more, smaller steps: the demo takes minibatches of 8 (half a
# step's cost), and the segmenter no random zoom, which is for photos of another style
# than the synthetic scenes it trains and runs on here.
DEMO_OPTIONS: dict[str, dict[str, Any]] = {
    "segment": {"minibatch_size": 8, "extra": {"scale_jitter": 0.0}},
    "detect": {"minibatch_size": 8},
}


def _step(text: str) -> None:
    print(f"\n==> {text}", file=sys.stderr, flush=True)


def _start_worker(environment: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "bucketvision.producer.cli",
        "worker",
        "--queues",
        "inference,training",
        "--cpu",
        "--concurrency",
        "2",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Our own worker command, no shell (bandit B603).
        return subprocess.Popen(  # nosec B603
            command, env=environment, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )


def _make_inputs(store: S3Store, images: int) -> None:
    """Job inputs, made with seeds the training data never used."""
    from bucketvision.models.dataset_writers import png_bytes
    from bucketvision.models.digits import make_digits
    from bucketvision.models.scenes import make_scenes

    digits, labels = make_digits(images, seed=20261129)
    for index, (pixels, label) in enumerate(zip(digits, labels, strict=True)):
        store.put_bytes(DEMO_BUCKET, f"incoming/digits/{label}/{index:05d}.png", png_bytes(pixels))
    for index, (pixels, label) in enumerate(zip(digits[:20], labels[:20], strict=True)):
        store.put_bytes(DEMO_BUCKET, f"drop/{label}-{index:03d}.png", png_bytes(pixels))
    scenes = make_scenes(DATASETS["detect"][1], seed=20261130, width=192, height=144)
    for index, pixels in enumerate(scenes.images):
        store.put_bytes(DEMO_BUCKET, f"incoming/scenes/{index:03d}.png", png_bytes(pixels))


def _train_all(client: Client, epochs: int | None) -> None:
    """Queue the four trainings at once (two run at a time, one per worker child), then
    follow each to its end by its own run id."""
    from bucketvision.producer.train import format_run

    runs = [
        client.train(
            DEFAULT_MODELS[task],
            task=task,
            dataset=f"s3://{DEMO_BUCKET}/datasets/{task}/",
            epochs=epochs or DATASETS[task][2],
            **DEMO_OPTIONS.get(task, {}),
        )
        for task in DATASETS
    ]
    for run in runs:
        record = run.wait(timeout=1800, progress=True)
        print(format_run(record), file=sys.stderr)
        if record["state"] != "finished":
            raise RuntimeError(f"training {run.id} failed: {record.get('error')}")


def _run_jobs(client: Client, cli: Any) -> dict[str, str]:
    """Submit the four jobs at once and follow each by its id; then the drop folder."""
    inputs = {"classify": "digits", "detect": "scenes", "segment": "scenes"}
    jobs = {
        task: client.submit(
            f"s3://{DEMO_BUCKET}/incoming/{folder}/",
            task=task,
            output=f"s3://{DEMO_BUCKET}/results/{task}/",
        )
        for task, folder in inputs.items()
    }
    jobs["generate"] = client.generate(
        DATASETS["generate"][1], output=f"s3://{DEMO_BUCKET}/results/generate/", seed=1
    )
    for task, job in jobs.items():
        _step(f"{task} job {job.id}")
        job.wait(timeout=1800, progress=True)
    submitted = {task: job.id for task, job in jobs.items()}
    _step("drop folder: `watch --once` over s3://bucketvision-demo/drop/, inputs moved to done/")
    watch = [
        "watch",
        "--input",
        f"s3://{DEMO_BUCKET}/drop/",
        "--task",
        "classify",
        "--output",
        f"s3://{DEMO_BUCKET}/results/watch/",
        "--move-to",
        f"s3://{DEMO_BUCKET}/done/",
        "--once",
        "--json",
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli(watch)
    if code != 0:
        raise RuntimeError("the drop-folder run failed")
    sent = [json.loads(line) for line in printed.getvalue().splitlines() if line.strip()]
    submitted["watch"] = next(event["job_id"] for event in sent if "job_id" in event)
    return submitted


def _job_file(task: str, job_id: str, filename: str) -> str:
    """The key of a demo job's file (the demo writes task ``T``'s results to results/T/)."""
    return job_file_key(parse_s3_uri(f"s3://{DEMO_BUCKET}/results/{task}/"), job_id, filename)


def _accuracy(store: S3Store, job_id: str) -> float:
    text = store.get_text(DEMO_BUCKET, _job_file("classify", job_id, MANIFEST_FILE))
    lines = parse_jsonl(text)
    right = sum(
        1
        for line in lines
        if line["status"] == "ok" and line["result"]["label"] == line["key"].split("/")[-2]
    )
    return right / max(len(lines), 1)


def _copy_locally(store: S3Store, submitted: dict[str, str], folder: Path) -> None:
    """The job files and a few result images, kept after the in-memory S3 server stops."""
    for task, job_id in submitted.items():
        target = folder / task
        target.mkdir(parents=True, exist_ok=True)
        prefix = f"results/{task}/"
        for name in (SUMMARY_FILE, MANIFEST_FILE):
            store.download_file(DEMO_BUCKET, _job_file(task, job_id, name), str(target / name))
        wanted = {"detect": (".annotated.png",), "segment": (".mask.png",)}.get(task, (".png",))
        copied = 0
        for info in store.list_objects(parse_s3_uri(f"s3://{DEMO_BUCKET}/{prefix}")):
            if copied < 6 and info.key.endswith(wanted) and f"/{JOB_FILES_FOLDER}/" not in info.key:
                store.download_file(DEMO_BUCKET, info.key, str(target / info.key.split("/")[-1]))
                copied += 1


def _report(store: S3Store, settings: Settings, submitted: dict[str, str], endpoint: str) -> None:
    from bucketvision.models.registry import ModelRegistry
    from bucketvision.producer.model_views import format_model_list

    _step("models")
    print(format_model_list(ModelRegistry(store, settings.models_uri).summary()))
    _step("jobs")
    for task, job_id in submitted.items():
        summary = store.get_json(DEMO_BUCKET, _job_file(task, job_id, SUMMARY_FILE))
        print(
            f"{task:9} {summary['model']:24} {summary['ok']}/{summary['total']} ok, "
            f"{summary['images_per_second']:.1f} img/s  s3://{DEMO_BUCKET}/results/{task}/"
        )
    print(
        f"\nclassify accuracy against the known labels: "
        f"{_accuracy(store, submitted['classify']):.4f}"
    )
    print(
        f"S3 endpoint {endpoint}; per job: results/<task>/_jobs/<job_id>/summary.json, "
        "manifest.jsonl; masks *.mask.png, boxes *.annotated.png, images generated/"
    )
    _copy_locally(store, submitted, Path("demo-output"))
    print(
        "copied each job's summary, manifest and a few result images to demo-output/<task>/ "
        "(the S3 server is in memory and stops with the demo; --keep-running keeps it)"
    )


def run_demo(
    settings: Settings, *, images: int = 500, epochs: int | None = None, keep: bool = False
) -> int:
    """Run the demo; returns the exit code."""
    from bucketvision.models.dataset_writers import SynthesisPlan, synthesize_dataset

    began = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo-secret")
    _step("starting Redis and S3 where none answers")
    stack = local_stack(settings.broker_url, settings.s3_endpoint_url)
    broker_url, endpoint = stack.__enter__()
    worker = None
    try:
        os.environ["BV_S3_ENDPOINT_URL"] = endpoint
        os.environ["BV_BROKER_URL"] = broker_url
        settings = Settings.from_env()
        store = S3Store.from_settings(settings)
        print(f"    redis {settings.describe()['broker_url']}, s3 {endpoint}", file=sys.stderr)
        for bucket in (DEMO_BUCKET, settings.models_uri[5:].split("/")[0]):
            store.ensure_bucket(bucket)
        _step("starting a worker on the inference and training queues (2 CPU children)")
        worker_log = Path("demo-output") / "worker.log"
        worker = _start_worker(dict(os.environ), worker_log)
        # BV_METRICS_PORT, if set, is the worker's: the in-process watch must not bind it too.
        os.environ.pop("BV_METRICS_PORT", None)
        print(f"    worker log: {worker_log}", file=sys.stderr)
        _step(f"writing synthetic datasets to s3://{DEMO_BUCKET}/datasets/ and job inputs")
        for task, (count, _, _) in DATASETS.items():
            plan = SynthesisPlan(task=task, count=count, seed=1)
            synthesize_dataset(store, f"s3://{DEMO_BUCKET}/datasets/{task}/", plan)
        _make_inputs(store, images)
        from bucketvision.producer.cli import main as cli
        from bucketvision.producer.client import Client

        client = Client.from_settings(settings)
        _step("training the four default models through the training queue")
        _train_all(client, epochs)
        submitted = _run_jobs(client, cli)
        _report(store, settings, submitted, endpoint)
        print(f"demo wall time: {time.perf_counter() - began:.1f} s")
        if keep:
            print("services left running (--keep-running); stop them with Ctrl-C", file=sys.stderr)
            signal.pause()
        return 0
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        stack.__exit__(None, None, None)
