"""``make bench-quality``: each model family trained with DEFAULT settings, judged on held-out data.

Everything goes through the product, on a private service (:mod:`tests.perf.training_bench`:
its own Redis on a free port, never one already running, a moto S3 server, one worker
child on the ``training`` queue, so each run has both cores and its time is its own):
``bucketvision datasets make`` writes the training data (seed 1) and a held-out
``test/`` split made with a seed nobody tuned on, ``bucketvision train NAME --task T
--dataset ... --wait`` trains at default settings, and the card's metrics are computed
on ``test/``. The generator is judged through the service too: ``bucketvision generate``
makes 200 images and a classify job with the classifier trained here labels them.
Prints a table (metric, target, steps trained, why training stopped, seconds) and, as
its last line, one JSON object. ``make bench-real`` does the same on data the project
did not generate (:mod:`tests.perf.bench_real`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bucketvision.infra.outputs import parse_jsonl
from bucketvision.infra.s3 import S3Store
from tests.perf.training_bench import (
    Service,
    cli,
    format_table,
    table_row,
    train_and_show,
    training_service,
)

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


def _judge_generator(env: dict[str, str], store: S3Store, gan: str, judge: str) -> dict[str, Any]:
    """200 samples through `generate`, labelled by a `classify` job with ``judge``."""
    made = cli(
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
    judged = cli(
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


def _train_task(service: Service, task: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Make the task's dataset, train it at default settings, and its figures."""
    name, count, held_out, targets = PLANS[task]
    dataset = f"s3://{BUCKET}/datasets/{task}/"
    cli(
        service.env,
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
    card = train_and_show(service, name, task, dataset)
    metrics = {k: v for k, v in card["metrics"].items() if isinstance(v, int | float)}
    row = {
        "model": f"{name}@{card['version']}",
        "wall_seconds": card["wall_seconds"],
        "training_seconds": card["training_seconds"],
        "evaluated_on": card["evaluated_on"],
        "steps_trained": card.get("steps_trained"),
        "stopped_because": card.get("stopped_because"),
        "best_epoch": card.get("best_epoch"),
        **metrics,
    }
    if task == "generate" and "classify" in figures:
        row.update(_judge_generator(service.env, service.store, name, PLANS["classify"][0]))
    row["targets"] = targets
    row["met"] = all(row.get(k, 0) >= v for k, v in targets.items()) and (
        card["wall_seconds"] < TIME_LIMIT_SECONDS
    )
    row["card"] = card
    return row


def run_quality(tasks: list[str], log_dir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with training_service(log_dir, "quality-models") as service:
        service.store.ensure_bucket(BUCKET)
        for task in tasks:
            figures[task] = _train_task(service, task, figures)
            shown = {k: v for k, v in figures[task].items() if k != "card"}
            print(json.dumps(shown), file=sys.stderr, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="classify,detect,segment,generate")
    options = parser.parse_args()
    tasks = [task.strip() for task in options.tasks.split(",") if task.strip()]
    figures = run_quality(tasks, Path(tempfile.gettempdir()))
    rows = []
    for task, row in figures.items():
        metric, target = next(iter(row["targets"].items()))
        card = {**row.pop("card"), "metrics": row}
        rows.append(table_row(f"synthetic ({task})", card, metric, target))
    print()
    print(format_table(rows))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
