"""Tuning aid for ``make bench-real``: one family trained in-process on data not drawn here.

``.venv/bin/python -m tests.perf.tune_real --task detect [--set key=value ...]`` starts a
moto S3 server (no Redis, no Celery), writes the benchmark's dataset for the task
(:mod:`tests.perf.real_data`), and calls :func:`models.training.run_training` as the
worker would: the same loader, fit, score and card. It prints the metrics and the
card's stopping record. ``--set`` puts a value in ``TrainOptions.extra`` (JSON values),
``--epochs`` sets the epochs; the acceptance figures are ``make bench-real``'s, run
through the CLI at default settings.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from bucketvision.infra.local_services import start_moto
from bucketvision.infra.messages import TrainingRequest
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.settings import Settings
from tests.perf.real_data import write_other_scenes, write_sklearn_digits

BUCKET = "tune-real"


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", required=True, choices=["classify", "detect", "segment"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--train-count", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dataset",
        help="s3://BUCKET/PREFIX/ to write to (the key names decide the validation split); "
        "default s3://tune-real/<task>/, `make bench-real` uses s3://bench-real/<name>-<task>/",
    )
    args = parser.parse_args()
    extra = {key: _value(value) for key, value in (item.split("=", 1) for item in args.set)}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "tune",
            "AWS_SECRET_ACCESS_KEY": "tune-secret",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    moto = start_moto()
    try:
        os.environ["BV_S3_ENDPOINT_URL"] = moto.url
        store = S3Store.from_settings(Settings.from_env())
        dataset = args.dataset or f"s3://{BUCKET}/{args.task}/"
        if args.task == "classify":
            written = write_sklearn_digits(store, dataset)
        else:
            written = write_other_scenes(store, dataset, args.task, train_count=args.train_count)
        print("written", written, flush=True)
        _train(store, dataset, args, extra)
    finally:
        moto.stop()


def _train(store: S3Store, dataset: str, args: argparse.Namespace, extra: dict[str, Any]) -> None:
    from bucketvision.models.registry import ModelRegistry
    from bucketvision.models.training import run_training

    registry = ModelRegistry(store, f"s3://{BUCKET}-models/models/")
    store.ensure_bucket(f"{BUCKET}-models")
    request = TrainingRequest(
        name=f"tune-{args.task}",
        task=args.task,
        dataset=dataset,
        epochs=args.epochs,
        seed=args.seed,
        promote="always",
        extra=extra,
    )
    began = time.perf_counter()
    outcome = run_training(request, store=store, registry=registry)
    card = outcome.ref.card
    scalars = {k: v for k, v in outcome.metrics.items() if isinstance(v, int | float)}
    print(json.dumps({"extra": extra, "metrics": scalars}))
    print(
        json.dumps({"stopping": card.get("stopping"), "wall": round(time.perf_counter() - began)})
    )


if __name__ == "__main__":
    main()
