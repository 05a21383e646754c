"""``bucketvision demo``: the whole flow on a local stack, in a few minutes.

Starts Redis (if none answers) and a moto S3 server, writes the project's
synthetic datasets (digits; shape scenes with boxes and masks) into a bucket,
starts a worker on both queues, trains the four default models briefly through
the ``train`` task, runs a classify, detect, segment and generate job with
progress bars, and prints what each produced and where to look.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

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

DEMO_BUCKET = "bucketvision-demo"
DATASETS = {  # task: (training items, items in the demo job, epochs: brief, not full quality)
    "classify": (3000, 500, 4),
    "detect": (1500, 40, 14),
    "segment": (1000, 40, 12),
    "generate": (3000, 64, 10),
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


def _train_all(cli: Any, epochs: int | None) -> None:
    from bucketvision.infra.training_runs import TrainingRuns
    from bucketvision.producer.follow import wait
    from bucketvision.producer.train import TRAINING_PATIENCE, followed_run, format_run

    settings = Settings.from_env()
    runs = TrainingRuns.from_url(settings.broker_url)
    before = set(runs.recent(100))
    for task in DATASETS:
        args = [
            "train",
            DEFAULT_MODELS[task],
            "--task",
            task,
            "--dataset",
            f"s3://{DEMO_BUCKET}/datasets/{task}/",
        ]
        args += ["--epochs", str(epochs or DATASETS[task][2])]
        if cli(args) != 0:
            raise RuntimeError(f"could not submit the {task} training")
    run_ids = [run for run in runs.recent(100) if run not in before]
    for run_id in sorted(run_ids):
        patience = replace(TRAINING_PATIENCE, timeout_seconds=1800)
        record = wait(followed_run(runs, run_id), patience=patience)
        print(format_run(record), file=sys.stderr)
        if record["state"] != "finished":
            raise RuntimeError(f"training {run_id} failed: {record.get('error')}")


def _run_jobs(cli: Any) -> dict[str, str]:
    from bucketvision.infra.jobs import JobStore

    jobs = JobStore.from_url(Settings.from_env().broker_url)
    submitted = {}
    commands = {
        "classify": [
            "submit",
            "--task",
            "classify",
            "--input",
            f"s3://{DEMO_BUCKET}/incoming/digits/",
            "--output",
            f"s3://{DEMO_BUCKET}/results/classify/",
            "--wait",
        ],
        "detect": [
            "submit",
            "--task",
            "detect",
            "--input",
            f"s3://{DEMO_BUCKET}/incoming/scenes/",
            "--output",
            f"s3://{DEMO_BUCKET}/results/detect/",
            "--wait",
        ],
        "segment": [
            "submit",
            "--task",
            "segment",
            "--input",
            f"s3://{DEMO_BUCKET}/incoming/scenes/",
            "--output",
            f"s3://{DEMO_BUCKET}/results/segment/",
            "--wait",
        ],
        "generate": [
            "generate",
            "--count",
            str(DATASETS["generate"][1]),
            "--seed",
            "1",
            "--output",
            f"s3://{DEMO_BUCKET}/results/generate/",
            "--wait",
        ],
    }
    for task, command in commands.items():
        _step(f"{task} job")
        if cli(command) != 0:
            raise RuntimeError(f"the {task} job failed")
        submitted[task] = jobs.recent_jobs(1)[0]
    _step("drop folder: `watch --once` over s3://bucketvision-demo/drop/, inputs moved to done/")
    watch = [
        "watch",
        f"s3://{DEMO_BUCKET}/drop/",
        "--task",
        "classify",
        "--output",
        f"s3://{DEMO_BUCKET}/results/watch/",
        "--move-to",
        f"s3://{DEMO_BUCKET}/done/",
        "--once",
    ]
    if cli(watch) != 0:
        raise RuntimeError("the drop-folder run failed")
    submitted["watch"] = jobs.recent_jobs(1)[0]
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

        _step("training the four default models through the training queue")
        _train_all(cli, epochs)
        submitted = _run_jobs(cli)
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
