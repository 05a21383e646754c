"""Review in the CLI: the ``--review-*`` flags of submit and watch, and ``review import``.

Thin: the flags become an :class:`infra.review.ReviewPolicy` (which checks their
ranges) and ``review import`` calls :func:`producer.review_import.import_review`.
docs/review.md is the user's guide.
"""

from __future__ import annotations

import argparse
import json

from bucketvision.infra.review import DEFAULT_REVIEW_MAX, REVIEW_BY, ReviewPolicy
from bucketvision.infra.settings import Settings
from bucketvision.producer.cli_support import whole_number


def add_review_flags(parser: argparse.ArgumentParser) -> None:
    """``--review-below P`` and the options that shape what goes to review."""
    group = parser.add_argument_group(
        "review", "route the items the model is unsure of to <output>/_review/<job_id>/"
    )
    group.add_argument(
        "--review-below",
        type=float,
        metavar="P",
        help="route items whose confidence is below P (default: the card's review_below, "
        "else no review)",
    )
    group.add_argument(
        "--review-by",
        choices=REVIEW_BY,
        default="top",
        help="classify: compare the top probability, or top-1 minus top-2 (default top)",
    )
    group.add_argument(
        "--review-floor",
        type=float,
        default=0.05,
        metavar="S",
        help="detect: boxes scored below S are background, not doubt (default 0.05)",
    )
    group.add_argument(
        "--review-max",
        type=whole_number(),
        default=DEFAULT_REVIEW_MAX,
        metavar="N",
        help=f"route at most N items, the least confident first (default {DEFAULT_REVIEW_MAX})",
    )
    group.add_argument(
        "--review-diverse",
        action="store_true",
        help="spread --review-max across the predicted classes",
    )


def review_policy(args: argparse.Namespace) -> ReviewPolicy | None:
    """The policy the flags ask for; None without ``--review-below`` (the card may set one)."""
    if args.review_below is None:
        return None
    return ReviewPolicy(
        below=args.review_below,
        by=args.review_by,
        floor=args.review_floor,
        limit=args.review_max,
        diverse=args.review_diverse,
    )


def cmd_review_import(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.cli_support import clients
    from bucketvision.producer.review_import import import_review

    store = clients(settings)["store"]
    report = import_review(
        store, args.source, args.dataset, export=args.labels_from, dry_run=args.dry_run
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.describe())
    return 0


def add_review_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bucketvision review import``."""
    review = sub.add_parser("review", help="bring reviewed items back into a dataset")
    actions = review.add_subparsers(
        dest="review_command", required=True, title="subcommands", metavar="COMMAND"
    )
    imported = actions.add_parser(
        "import",
        help="add a job's corrected review items to a dataset's train split, each once",
    )
    imported.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="s3://.../_review/JOB/",
        help="the job's review folder (its summary.json names it)",
    )
    imported.add_argument(
        "--dataset", required=True, metavar="s3://BUCKET/datasets/X/", help="the dataset to grow"
    )
    imported.add_argument(
        "--labels-from",
        metavar="PATH|s3://...",
        help="a Label Studio JSON export of the folder's tasks.json (classify, detect); "
        "default: the corrected folder itself",
    )
    imported.add_argument("--dry-run", action="store_true", help="count what would be added")
    imported.add_argument("--json", action="store_true", help="print the report as JSON")
    imported.set_defaults(handler=cmd_review_import)
