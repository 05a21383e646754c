"""The ``bucketvision`` command: one entry point, subcommands per way in.

Every error a user can cause ends in one clear line on stderr and a non-zero
exit: 2 for a request that cannot run, 1 for a job that ran and failed, 3 for a
service (Redis, S3) that did not answer, when the same command may work later.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import kombu.exceptions
import redis

from bucketvision.infra.errors import EXIT_UNAVAILABLE, EXIT_USAGE, UserError
from bucketvision.infra.logs import configure_logging, leave_logging_to_us
from bucketvision.infra.settings import Settings
from bucketvision.infra.vocabulary import INFERENCE_TASKS
from bucketvision.producer.cli_jobs import (
    add_job_commands,
    add_key_filters,
    add_wait_flags,
    check_wait_flags,
)
from bucketvision.producer.cli_models import add_model_commands
from bucketvision.producer.cli_review import add_review_commands, add_review_flags, review_policy
from bucketvision.producer.cli_support import positive_number, report_job, whole_number
from bucketvision.producer.cli_watch import add_watch
from bucketvision.producer.health import CHECKS


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.client import Client
    from bucketvision.producer.key_lists import read_key_list

    check_wait_flags(args)
    client = Client.from_settings(settings)
    options: dict[str, Any] = {
        "task": args.task,
        "output": args.output,
        "model": args.model,
        "batch_size": args.batch_size,
        "include": args.include or (),
        "exclude": args.exclude or (),
        "keys": read_key_list(args.keys_from, client.store) if args.keys_from else None,
        "keys_source": f"--keys-from {args.keys_from}",
        "job_id": args.job_id,
        "item_outputs": not args.no_item_outputs,
        "review": review_policy(args),
    }
    if args.dry_run:
        print(client.dry_run(args.input, **options).describe())
        return 0
    job = client.submit(args.input, **options)
    what = (
        f"submitted {job.submission.total} objects in {job.submission.batches} batches with "
        f"{job.submission.model}; results under {job.submission.output}"
    )
    return report_job(job, args, what)


def cmd_beat(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.beat import run_beat

    configure_logging(args.loglevel, settings.log_format)
    leave_logging_to_us()
    if settings.metrics_port is not None:
        from bucketvision.producer.metrics import export_producer_metrics

        export_producer_metrics(settings)
    return run_beat(settings, loglevel=args.loglevel, quiet=settings.log_format == "json")


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.report import run_report

    return run_report(args, settings)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.worker.command import run_worker

    run_worker(
        queues=args.queues,
        gpus=args.gpus,
        cpu=args.cpu,
        concurrency=args.concurrency,
        loglevel=args.loglevel,
        settings=settings,
    )
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.demo import run_demo

    return run_demo(settings, images=args.images, epochs=args.epochs, keep=args.keep_running)


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.health import run_health

    return run_health(settings, args.check, max_age=args.max_age)


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.producer.doctor import run_doctor

    return run_doctor(settings, as_json=args.json)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bucketvision")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bucketvision",
        description="Batch image AI over S3 buckets: classify, detect, segment and generate "
        "with Celery workers, train and serve your own models. Exit codes: 0 ok, 1 the job "
        "failed or a wait timed out, 2 a request that cannot run, 3 Redis or S3 unavailable.",
    )
    parser.add_argument("--version", action="version", version=f"bucketvision {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    submit = sub.add_parser("submit", help="run a task over every image under an S3 prefix")
    submit.add_argument("--task", required=True, choices=INFERENCE_TASKS, help="what to run")
    submit.add_argument("--input", required=True, help="s3://BUCKET/PREFIX/")
    submit.add_argument("--output", help="s3://BUCKET/PREFIX/ (default s3://BUCKET/results/...)")
    submit.add_argument("--model", help="NAME[@VERSION] (default: the task's default model)")
    submit.add_argument(
        "--batch-size", type=whole_number(), help="keys per task (default BV_BATCH_SIZE)"
    )
    add_key_filters(submit, "repeatable; default image suffixes, or every listed key")
    submit.add_argument(
        "--keys-from", metavar="PATH|s3://...|-", help="these keys (or a manifest's), not a listing"
    )
    submit.add_argument("--job-id", metavar="ID", help="the job's id (again: no new job)")
    submit.add_argument("--dry-run", action="store_true", help="count objects and bytes; no job")
    submit.add_argument(
        "--no-item-outputs", action="store_true", help="keep results in the manifest only"
    )
    add_review_flags(submit)
    add_wait_flags(submit)
    submit.set_defaults(handler=cmd_submit)

    add_watch(sub)

    beat = sub.add_parser("beat", help="scheduled retraining from BV_SCHEDULE_FILE (TOML)")
    beat.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    beat.set_defaults(handler=cmd_beat)

    add_job_commands(sub)

    report = sub.add_parser("report", help="a self-contained HTML report of a finished job")
    report.add_argument("job_id", help="the job id that submit printed")
    report.add_argument("--save", metavar="PATH", help="also write the HTML to this local file")
    report.add_argument(
        "--limit", type=whole_number(0), default=48, help="thumbnails shown (default 48)"
    )
    report.add_argument("--output", help="s3://BUCKET/PREFIX/: when the job record has expired")
    report.set_defaults(handler=cmd_report)

    worker = sub.add_parser("worker", help="run a Celery worker (one child per GPU)")
    worker.add_argument("--queues", default="inference", help="inference,training")
    worker.add_argument("--gpus", help="GPU indexes, one pool child each (default: all GPUs)")
    worker.add_argument("--cpu", action="store_true", help="no GPU: split the cores")
    worker.add_argument("--concurrency", type=whole_number(), help="pool children")
    worker.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    worker.set_defaults(handler=cmd_worker)

    add_model_commands(sub)
    add_review_commands(sub)

    demo = sub.add_parser("demo", help="the whole flow on a local stack, end to end")
    demo.add_argument("--images", type=whole_number(), default=500, help="images in the demo job")
    demo.add_argument(
        "--epochs", type=whole_number(), help="epochs for every model (default: each family's)"
    )
    demo.add_argument("--keep-running", action="store_true", help="leave Redis/S3 running")
    demo.set_defaults(handler=cmd_demo)

    _add_service_commands(sub)
    return parser


def _add_service_commands(sub: Any) -> None:
    """``health`` and ``doctor``: is this host's service working, and what does it see."""
    health = sub.add_parser(
        "health", help="a container health check: is this host's worker, watcher or beat working?"
    )
    health.add_argument("check", choices=CHECKS, help="which process to ask")
    health.add_argument(
        "--max-age",
        type=positive_number,
        default=120.0,
        help="watcher: its last cycle at most this many seconds ago (default 120)",
    )
    health.set_defaults(handler=cmd_health)

    doctor = sub.add_parser("doctor", help="check Redis, S3, TensorFlow, GPUs and models")
    doctor.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    doctor.set_defaults(handler=cmd_doctor)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, Settings.from_env())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except redis.exceptions.AuthenticationError as error:
        print(f"error: Redis refused the credentials in BV_BROKER_URL ({error})", file=sys.stderr)
        return EXIT_USAGE
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        print(
            f"error: cannot reach Redis ({error}); is it running, and is BV_BROKER_URL right? "
            "Run the command again once it answers",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    except kombu.exceptions.OperationalError as error:
        print(
            f"error: the broker did not take the message ({error}); run the command again once "
            "Redis answers",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
