"""``bucketvision train``: queue a training run, and follow it with ``--wait``.

The flags map onto a :class:`infra.messages.TrainingRequest`; a local pretrained-weights
file is uploaded to the registry's ``_weights/`` first, so workers can read it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from bucketvision.infra.errors import EXIT_FAILED
from bucketvision.infra.s3 import parse_s3_uri
from bucketvision.infra.settings import Settings
from bucketvision.infra.vocabulary import FAMILY_TASKS
from bucketvision.models.registry import file_sha256
from bucketvision.producer.cli_support import CommandError, positive_number, whole_number

if TYPE_CHECKING:
    from bucketvision.producer.client import Client


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.infra.messages import TrainingRequest
    from bucketvision.producer.client import Client
    from bucketvision.producer.train import format_run

    client = Client.from_settings(settings)
    request = TrainingRequest(
        name=args.name,
        task=args.task,
        dataset=args.dataset,
        epochs=args.epochs,
        minibatch_size=args.minibatch_size,
        learning_rate=args.learning_rate,
        image_size=args.image_size,
        seed=args.seed,
        tolerance=args.tolerance,
        promote=args.promote,
        steps_per_epoch=args.steps_per_epoch,
        shadow_jobs=args.shadow_jobs,
        shadow_agreement=args.shadow_agreement,
        extra={**_backbone_options(args, client), **_budget_options(args)},
    )
    run = client.train(request=request)
    if not args.json:
        print(run.id, flush=True)
    split = ", ".join(f"{name} {count}" for name, count in run.counts.items() if count)
    print(
        f"queued training of {args.name} ({args.task}) on {args.dataset}: {split}", file=sys.stderr
    )
    if not args.wait:
        if args.json:
            print(json.dumps({"run_id": run.id, "counts": run.counts}, indent=2))
        return 0
    record = run.wait(progress=not args.quiet)
    if args.json:
        print(json.dumps(record, indent=2, default=str))
    print(format_run(record), file=sys.stderr)
    return 0 if record["state"] == "finished" else EXIT_FAILED


def _backbone_options(args: argparse.Namespace, client: Client) -> dict[str, Any]:
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
    store, registry = client.store, client.registry
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


def _budget_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--max-steps``, ``--max-minutes`` and ``--patience`` as the trainers' stopping keys."""
    chosen = {
        "max_steps": args.max_steps,
        "max_seconds": None if args.max_minutes is None else args.max_minutes * 60.0,
        "patience": args.patience,
    }
    return {key: value for key, value in chosen.items() if value is not None}


def add_train(sub: Any) -> None:
    train = sub.add_parser("train", help="train a new model version from a dataset in S3")
    train.add_argument("name", help="model name; each run adds a version")
    train.add_argument("--task", required=True, choices=FAMILY_TASKS, help="the model family")
    train.add_argument(
        "--dataset",
        required=True,
        help="s3://BUCKET/datasets/X/, in its task's layout (docs/dataset-layouts.md)",
    )
    train.add_argument(
        "--epochs",
        type=whole_number(),
        help="train exactly this many passes (default: until the validation loss stops"
        " improving, within the family's step budget; the card's `stopping` says why it ended)",
    )
    train.add_argument(
        "--max-steps",
        type=whole_number(),
        help="step budget (default: classify 6,000, detect 3,500, segment 4,000)",
    )
    train.add_argument("--max-minutes", type=positive_number, help="time budget (default: 60)")
    train.add_argument(
        "--patience",
        type=whole_number(),
        help="epochs without improvement before stopping (default 8-10)",
    )
    train.add_argument(
        "--minibatch-size",
        type=whole_number(),
        help="training examples per gradient step (default: the family's, 32 for classify)",
    )
    # The flag's name before 0.2; on submit, watch and generate --batch-size is keys per task.
    train.add_argument(
        "--batch-size", dest="minibatch_size", type=whole_number(), help=argparse.SUPPRESS
    )
    train.add_argument(
        "--learning-rate", type=positive_number, help="the optimizer's (default: the family's)"
    )
    train.add_argument("--image-size", type=whole_number(8), help="model input side in pixels")
    train.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    train.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="promote when the main metric >= CURRENT's minus this (default 0)",
    )
    train.add_argument(
        "--promote",
        default="auto",
        choices=["auto", "always", "never"],
        help="auto: promote if the main metric passes the gate (see --tolerance); always; never"
        " (default auto)",
    )
    _add_shadow_flags(train)
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
    train.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout instead of the run id: the run queued, or with"
        " --wait its final record (version, decision, metrics)",
    )
    train.set_defaults(handler=cmd_train)


def _add_shadow_flags(train: Any) -> None:
    """``--shadow-jobs`` and ``--shadow-agreement``: the version first runs in CURRENT's shadow."""
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
