"""``make bench-quality``: each model family trained with DEFAULT settings, judged on held-out data.

Everything goes through the product: ``bucketvision datasets make`` writes the
training data (seed 1) and a held-out ``test/`` split made with a seed nobody
tuned on, ``bucketvision train NAME --task T --dataset ... --wait`` trains on a
worker consuming the ``training`` queue (one child, so each run has both cores
and its time is its own), and the card's metrics are computed on ``test/``.
The generator is judged through the service too: ``bucketvision generate``
makes 200 images and a classify job with the classifier trained here labels
them. Prints a table and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bucketvision.infra.local_services import local_stack
from bucketvision.infra.outputs import parse_jsonl
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from tests.helpers import run_cli

BUCKET = "quality"
HELD_OUT_SEED = 31337  # never used while tuning (tuning used 2026 and 7777)
PLANS = {  # task: (model name, training items, held-out items, targets)
    "classify": ("q-digits", 4000, 1000, {"accuracy": 0.98}),
    "detect": ("q-detector", 2500, 500, {"map50": 0.9}),
    "segment": ("q-segmenter", 2000, 500, {"miou": 0.9}),
    # The generator is judged by a classify job with the classifier trained in this run.
    "generate": ("q-gan", 4000, 0, {"judge_mean_confidence": 0.9, "judge_classes_present": 10}),
}
TIME_LIMIT_SECONDS = 600


def _cli(env: dict[str, str], *args: str, timeout: float = 1800) -> Any:
    done = run_cli(env, *args, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"bucketvision {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def _judge_generator(env: dict[str, str], store: S3Store, gan: str, judge: str) -> dict[str, Any]:
    """200 samples through `generate`, labelled by a `classify` job with ``judge``."""
    made = _cli(
        env,
        "generate",
        "--count",
        "200",
        "--seed",
        "7",
        "--model",
        gan,
        "--output",
        f"s3://{BUCKET}/samples/",
        "--wait",
        "--quiet",
    )
    job_id = made.stdout.split()[0]
    judged = _cli(
        env,
        "submit",
        "--task",
        "classify",
        "--model",
        judge,
        "--input",
        f"s3://{BUCKET}/samples/generated/{job_id}/",
        "--output",
        f"s3://{BUCKET}/judged/",
        "--wait",
        "--quiet",
    )
    judge_job = judged.stdout.split()[0]
    text = store.get_text(BUCKET, f"judged/_jobs/{judge_job}/manifest.jsonl")
    lines = parse_jsonl(text)
    requested = {}
    generated = store.get_text(BUCKET, f"samples/_jobs/{job_id}/manifest.jsonl")
    for row in generated.splitlines():
        line = json.loads(row)
        requested[line["key"]] = line["result"].get("label")
    scores = [line["result"]["score"] for line in lines if line["status"] == "ok"]
    labels = Counter(line["result"]["label"] for line in lines if line["status"] == "ok")
    agree = sum(
        1
        for line in lines
        if line["status"] == "ok" and requested.get(line["key"]) == line["result"]["label"]
    )
    return {
        "samples": len(lines),
        "judge_mean_confidence": round(sum(scores) / max(len(scores), 1), 4),
        "judge_classes_present": len(labels),
        "judge_label_agreement": round(agree / max(len(lines), 1), 4),
        "judge_histogram": dict(sorted(labels.items())),
    }


def run_quality(tasks: list[str], log_dir: Path) -> dict[str, Any]:
    from tests.workers import WorkerProcess

    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "quality",
            "AWS_SECRET_ACCESS_KEY": "quality-secret",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "BV_MODELS_URI": "s3://quality-models/models/",
        }
    )
    figures: dict[str, Any] = {}
    with local_stack(Settings.from_env().broker_url, None) as (broker, endpoint):
        env = {"BV_BROKER_URL": broker, "BV_S3_ENDPOINT_URL": endpoint}
        os.environ.update(env)
        store = S3Store.from_settings(Settings.from_env())
        store.ensure_bucket(BUCKET)
        worker = WorkerProcess(
            env,
            log_dir / "quality-worker.log",
            "--queues",
            "training,inference",
            "--cpu",
            "--concurrency",
            "1",
        )
        try:
            worker.wait_for_children(1)
            for task in tasks:
                name, count, held_out, targets = PLANS[task]
                dataset = f"s3://{BUCKET}/datasets/{task}/"
                _cli(
                    env,
                    "datasets",
                    "make",
                    "--task",
                    task,
                    "--count",
                    str(count),
                    "--test-count",
                    str(held_out),
                    "--test-seed",
                    str(HELD_OUT_SEED),
                    "--output",
                    dataset,
                )
                print(f"training {name} ({task}) on {count} items ...", file=sys.stderr)
                began = time.perf_counter()
                _cli(env, "train", name, "--task", task, "--dataset", dataset, "--wait", "--quiet")
                wall = time.perf_counter() - began
                card = json.loads(_cli(env, "models", "show", name, "--json").stdout)
                metrics = {k: v for k, v in card["metrics"].items() if isinstance(v, int | float)}
                row = {
                    "model": f"{name}@{card['version']}",
                    "wall_seconds": round(wall, 1),
                    "training_seconds": card["training_seconds"],
                    "evaluated_on": card["evaluated_on"],
                    **metrics,
                }
                if task == "generate" and "classify" in figures:
                    row.update(_judge_generator(env, store, name, PLANS["classify"][0]))
                row["targets"] = targets
                row["met"] = all(row.get(k, 0) >= v for k, v in targets.items()) and (
                    wall < TIME_LIMIT_SECONDS
                )
                figures[task] = row
                print(json.dumps(row), file=sys.stderr)
        finally:
            worker.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="classify,detect,segment,generate")
    options = parser.parse_args()
    tasks = [task.strip() for task in options.tasks.split(",") if task.strip()]
    figures = run_quality(tasks, Path(tempfile.gettempdir()))
    print(f"\n{'task':9} {'model':16} {'main metric':>24} {'train s':>8} {'wall s':>7}  met")
    for task, row in figures.items():
        main_metric = next(iter(row["targets"]))
        value = row.get(main_metric)
        print(
            f"{task:9} {row['model']:16} {main_metric + ' ' + format(value, '.4f'):>24} "
            f"{row['training_seconds']:>8} {row['wall_seconds']:>7}  {row['met']}"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
