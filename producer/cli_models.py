"""Subcommands about models: ``train``, ``generate``, ``models ...`` and ``datasets make``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bucketvision.infra.settings import Settings
from bucketvision.infra.vocabulary import FAMILY_TASKS
from bucketvision.producer.cli_jobs import add_wait_flags, check_wait_flags
from bucketvision.producer.cli_register import add_register, cmd_register
from bucketvision.producer.cli_shadow import add_shadow, cmd_shadow
from bucketvision.producer.cli_support import (
    CommandError,
    clients,
    report_job,
    whole_number,
)
from bucketvision.producer.cli_train import add_train


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.client import Client

    check_wait_flags(args)
    job = Client.from_settings(settings).generate(
        args.count,
        output=args.output,
        model=args.model,
        seed=args.seed,
        label=args.label,
        batch_size=args.batch_size,
    )
    what = (
        f"generating {job.submission.total} images with {job.submission.model} under "
        f"{job.submission.output}generated/"
    )
    return report_job(job, args, what)


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


def _add_generate(sub: Any) -> None:
    generate = sub.add_parser("generate", help="sample images from a generator model")
    generate.add_argument(
        "--count", type=whole_number(), required=True, help="how many images to generate"
    )
    generate.add_argument("--output", required=True, help="s3://BUCKET/PREFIX/")
    generate.add_argument("--model", help="NAME[@VERSION] (default digits-gan)")
    generate.add_argument("--seed", type=int, help="first seed (default random)")
    generate.add_argument("--label", help="only this class (class-conditional models)")
    generate.add_argument(
        "--batch-size", type=whole_number(), help="images per task (default BV_BATCH_SIZE)"
    )
    add_wait_flags(generate)
    generate.set_defaults(handler=cmd_generate)


def add_model_commands(sub: Any) -> None:
    """Add ``train``, ``generate``, ``models`` and ``datasets`` to the parser."""
    add_train(sub)
    _add_generate(sub)
    models = sub.add_parser(
        "models", help="the model registry", description="The model registry in BV_MODELS_URI."
    )
    models_sub = models.add_subparsers(
        dest="models_command", required=True, title="subcommands", metavar="COMMAND"
    )
    listing = models_sub.add_parser("list", help="every model: task, CURRENT, versions, metrics")
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    show = models_sub.add_parser("show", help="a version's card, metrics and plots")
    show.add_argument("reference", metavar="NAME[@V]", help="a model (CURRENT) or a version")
    show.add_argument("--json", action="store_true", help="print the card as JSON")
    models_sub.add_parser("promote", help="make a version CURRENT").add_argument(
        "reference", metavar="NAME@V", help="the version to promote, e.g. digits@v3"
    )
    models_sub.add_parser(
        "rollback", help="CURRENT back to the previous promoted version"
    ).add_argument("name", help="the model name (no @version)")
    add_register(models_sub)
    add_shadow(models_sub)
    models.set_defaults(handler=cmd_models)

    datasets = sub.add_parser("datasets", help="synthetic datasets for demos and tests")
    datasets_sub = datasets.add_subparsers(
        dest="datasets_command", required=True, title="subcommands", metavar="COMMAND"
    )
    make = datasets_sub.add_parser("make", help="write digits or shape scenes in a task's layout")
    make.add_argument("--task", required=True, choices=FAMILY_TASKS, help="the dataset's layout")
    make.add_argument("--output", required=True, help="s3://BUCKET/datasets/NAME/")
    make.add_argument(
        "--count", type=whole_number(), default=1000, help="training items (default 1000)"
    )
    make.add_argument("--seed", type=int, default=1, help="of the training items (default 1)")
    make.add_argument(
        "--test-count", type=whole_number(0), default=0, help="a held-out test/ split"
    )
    make.add_argument(
        "--test-seed", type=int, default=2026, help="of the test items (default 2026)"
    )
    make.add_argument(
        "--size", type=whole_number(16), default=128, help="scene side (detect, segment)"
    )
    datasets.set_defaults(handler=cmd_datasets)
