"""Subcommands about models: ``train``, ``generate``, ``models ...`` and ``datasets make``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bucketvision.infra.errors import EXIT_FAILED
from bucketvision.infra.s3 import parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.infra.vocabulary import FAMILY_TASKS
from bucketvision.models.registry import file_sha256
from bucketvision.producer.cli_jobs import add_wait_flags, check_wait_flags
from bucketvision.producer.cli_register import add_register, cmd_register
from bucketvision.producer.cli_shadow import add_shadow, cmd_shadow
from bucketvision.producer.cli_support import CommandError, clients, report_job


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.infra.messages import TrainingRequest
    from bucketvision.infra.queue import make_celery
    from bucketvision.infra.training_runs import TrainingRuns
    from bucketvision.producer.follow import wait
    from bucketvision.producer.train import (
        TRAINING_PATIENCE,
        followed_run,
        format_run,
        submit_training,
    )

    found = clients(settings)
    request = TrainingRequest(
        name=args.name,
        task=args.task,
        dataset=args.dataset,
        epochs=args.epochs,
        minibatch_size=args.batch_size,
        learning_rate=args.learning_rate,
        image_size=args.image_size,
        seed=args.seed,
        tolerance=args.tolerance,
        promote=args.promote,
        steps_per_epoch=args.steps_per_epoch,
        shadow_jobs=args.shadow_jobs,
        shadow_agreement=args.shadow_agreement,
        extra={**_backbone_options(args, found), **_budget_options(args)},
    )
    runs = TrainingRuns(found["jobs"].redis)
    run_id, counts = submit_training(
        request,
        app=make_celery(settings),
        store=found["store"],
        runs=runs,
        registry=found["registry"],
    )
    print(run_id, flush=True)
    split = ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    print(
        f"queued training of {args.name} ({args.task}) on {args.dataset}: {split}", file=sys.stderr
    )
    if not args.wait:
        return 0
    followed = followed_run(runs, run_id)
    record = wait(followed, progress=not args.quiet, patience=TRAINING_PATIENCE)
    print(format_run(record), file=sys.stderr)
    return 0 if record["state"] == "finished" else EXIT_FAILED


def _backbone_options(args: argparse.Namespace, found: dict[str, Any]) -> dict[str, Any]:
    """``--backbone`` / ``--weights`` as the classify family's options.

    A local weights file is uploaded beside the registry first, so a worker on another
    machine reads it from S3.
    """
    from bucketvision.models.weights import check_weights_name

    weights = args.weights or ("imagenet" if args.pretrained else None)
    if not args.backbone:
        if weights:
            raise CommandError("--weights needs --backbone (e.g. --backbone MobileNetV2)")
        return {}
    if args.task != "classify":
        raise CommandError("--backbone applies to classify models only")
    extra: dict[str, Any] = {"backbone": args.backbone}
    if weights is None:
        return extra
    weights = check_weights_name(weights)
    store, registry = found["store"], found["registry"]
    if weights.startswith("s3://"):
        uri = parse_s3_uri(weights, directory=False)
        if not store.exists(uri.bucket, uri.prefix):
            raise CommandError(f"--weights {weights}: no such object")
    elif weights != "imagenet":  # imagenet: downloaded by Keras, so the worker needs internet
        if not os.path.isfile(weights):
            raise CommandError(f"--weights {weights}: no such file")
        digest = file_sha256(weights)[:16]
        uploaded = registry.weights_uri(digest, os.path.basename(weights))
        target = parse_s3_uri(uploaded, directory=False)
        store.ensure_bucket(target.bucket)
        store.upload_file(weights, target.bucket, target.prefix)
        weights = uploaded
    extra["weights"] = weights
    return extra


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.infra.queue import make_celery
    from bucketvision.producer.generate import GenerateRequest, submit_generate

    check_wait_flags(args)
    request = GenerateRequest(
        count=args.count,
        output=args.output,
        model=args.model,
        seed=args.seed,
        label=args.label,
        batch_size=args.batch_size or settings.batch_size,
        window=settings.job_window,
    )
    found = clients(settings)
    job = submit_generate(request, app=make_celery(settings), **found)
    what = f"generating {job.total} images with {job.model} under {job.output}generated/"
    return report_job(found, job, args, what)


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.models import registration
    from bucketvision.models.registry import parse_model_ref
    from bucketvision.producer import model_views

    registry = clients(settings)["registry"]
    if args.models_command == "list":
        rows = registry.summary()
        print(json.dumps(rows, indent=2) if args.json else model_views.format_model_list(rows))
    elif args.models_command == "show":
        shown = registration.show_model(registry, args.reference)
        print(json.dumps(shown, indent=2) if args.json else model_views.format_model_card(shown))
    elif args.models_command == "promote":
        name, version = parse_model_ref(args.reference)
        if version is None:
            raise CommandError("promote takes NAME@VERSION, e.g. digits@v2")
        print(f"{registry.promote(name, version)} is now CURRENT")
    elif args.models_command == "rollback":
        name, version = parse_model_ref(args.name)
        if version is not None:
            raise CommandError("rollback takes a model NAME; to pick a version use promote")
        print(f"{registry.rollback(name)} is now CURRENT")
    elif args.models_command == "register":
        return cmd_register(args, settings)
    elif args.models_command == "shadow":
        return cmd_shadow(args, settings)
    return 0


def cmd_datasets(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.models.dataset_writers import SynthesisPlan, synthesize_dataset

    plan = SynthesisPlan(
        task=args.task,
        count=args.count,
        seed=args.seed,
        test_count=args.test_count,
        test_seed=args.test_seed,
        size=args.size,
    )
    written = synthesize_dataset(clients(settings)["store"], args.output, plan)
    print(json.dumps({"dataset": args.output, "task": args.task, "written": written}))
    return 0


def _budget_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--max-steps``, ``--max-minutes`` and ``--patience`` as the trainers' stopping keys."""
    chosen = {
        "max_steps": args.max_steps,
        "max_seconds": None if args.max_minutes is None else args.max_minutes * 60.0,
        "patience": args.patience,
    }
    return {key: value for key, value in chosen.items() if value is not None}


def _add_train(sub: Any) -> None:
    train = sub.add_parser("train", help="train a new model version from a dataset in S3")
    train.add_argument("name", help="model name; each run adds a version")
    train.add_argument("--task", required=True, choices=FAMILY_TASKS)
    train.add_argument(
        "--dataset",
        required=True,
        help="s3://BUCKET/datasets/X/, in its task's layout (docs/dataset-layouts.md)",
    )
    train.add_argument(
        "--epochs",
        type=int,
        help="train exactly this many passes (default: until the validation loss stops"
        " improving, within the family's step budget; the card's `stopping` says why it ended)",
    )
    train.add_argument(
        "--max-steps",
        type=int,
        help="step budget (default: classify 6,000, detect 3,500, segment 4,000)",
    )
    train.add_argument("--max-minutes", type=float, help="time budget (default: 60)")
    train.add_argument(
        "--patience", type=int, help="epochs without improvement before stopping (default 8-10)"
    )
    train.add_argument("--batch-size", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--image-size", type=int, help="model input side in pixels")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="promote when the main metric >= CURRENT's minus this (default 0)",
    )
    train.add_argument("--promote", default="auto", choices=["auto", "always", "never"])
    train.add_argument(
        "--shadow-jobs",
        type=int,
        default=0,
        help="with --promote auto: a version the gate passes first runs beside CURRENT on this"
        " many jobs (default 0: promoted at once)",
    )
    train.add_argument(
        "--shadow-agreement", type=float, help="... and is promoted only if it agrees this much"
    )
    train.add_argument(
        "--backbone", help="classify: a keras.applications backbone, e.g. MobileNetV2"
    )
    train.add_argument(
        "--weights",
        help="with --backbone: start from these weights: imagenet (Keras downloads them, so the"
        " worker needs internet), or a .weights.h5 file (local path or s3://) saved from the"
        " same backbone without its top",
    )
    train.add_argument("--pretrained", action="store_true", help=argparse.SUPPRESS)
    train.add_argument("--steps-per-epoch", type=int, help=argparse.SUPPRESS)
    train.add_argument("--wait", action="store_true", help="follow the run epoch by epoch")
    train.add_argument("--quiet", action="store_true", help="no progress bar with --wait")
    train.set_defaults(handler=cmd_train)


def _add_generate(sub: Any) -> None:
    generate = sub.add_parser("generate", help="sample images from a generator model")
    generate.add_argument("--count", type=int, required=True)
    generate.add_argument("--output", required=True, help="s3://BUCKET/PREFIX/")
    generate.add_argument("--model", help="NAME[@VERSION] (default digits-gan)")
    generate.add_argument("--seed", type=int, help="first seed (default random)")
    generate.add_argument("--label", help="only this class (class-conditional models)")
    generate.add_argument("--batch-size", type=int)
    add_wait_flags(generate)
    generate.set_defaults(handler=cmd_generate)


def add_model_commands(sub: Any) -> None:
    """Add ``train``, ``generate``, ``models`` and ``datasets`` to the parser."""
    _add_train(sub)
    _add_generate(sub)
    models = sub.add_parser("models", help="the model registry")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list")
    listing.add_argument("--json", action="store_true")
    show = models_sub.add_parser("show", help="a version's card, metrics and plots")
    show.add_argument("reference", metavar="NAME[@V]")
    show.add_argument("--json", action="store_true")
    models_sub.add_parser("promote").add_argument("reference", metavar="NAME@V")
    models_sub.add_parser(
        "rollback", help="CURRENT back to the previous promoted version"
    ).add_argument("name")
    add_register(models_sub)
    add_shadow(models_sub)
    models.set_defaults(handler=cmd_models)

    datasets = sub.add_parser("datasets", help="synthetic datasets for demos and tests")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True)
    make = datasets_sub.add_parser("make", help="write digits or shape scenes in a task's layout")
    make.add_argument("--task", required=True, choices=FAMILY_TASKS)
    make.add_argument("--output", required=True, help="s3://BUCKET/datasets/NAME/")
    make.add_argument("--count", type=int, default=1000)
    make.add_argument("--seed", type=int, default=1)
    make.add_argument("--test-count", type=int, default=0, help="a held-out test/ split")
    make.add_argument("--test-seed", type=int, default=2026)
    make.add_argument("--size", type=int, default=128, help="scene side (detect, segment)")
    datasets.set_defaults(handler=cmd_datasets)
