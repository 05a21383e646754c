"""The ``bucketvision`` command: one entry point, subcommands per way in.

Every error a user can cause ends in one clear line on stderr and a non-zero
exit: 2 for a request that cannot run, 1 for a job that ran and failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import redis

from infra.settings import Settings, SettingsError

EXIT_USAGE = 2
EXIT_FAILED = 1


class CommandError(RuntimeError):
    """A failure to report as ``error: ...`` with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _clients(settings: Settings) -> dict[str, Any]:
    from infra.jobs import JobStore
    from infra.s3 import S3Store
    from models.registry import ModelRegistry

    store = S3Store.from_settings(settings)
    return {
        "store": store,
        "jobs": JobStore.from_url(settings.broker_url),
        "registry": ModelRegistry(store, settings.models_uri),
    }


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from infra.queue import make_celery
    from producer.status import format_status, wait_for_job
    from producer.submit import JobRequest, submit_job

    request = JobRequest(
        task=args.task,
        input=args.input,
        output=args.output,
        model=args.model,
        batch_size=args.batch_size or settings.batch_size,
        includes=args.include or (),
        item_outputs=not args.no_item_outputs,
    )
    clients = _clients(settings)
    job = submit_job(request, app=make_celery(settings), **clients)
    print(job.job_id, flush=True)
    print(
        f"submitted {job.total} objects in {job.batches} batches with {job.model}; "
        f"results under {job.output}",
        file=sys.stderr,
    )
    if not args.wait:
        return 0
    status = wait_for_job(clients["jobs"], job.job_id, progress=not args.quiet)
    print(format_status(status), file=sys.stderr)
    return 0 if status["state"] == "finished" else EXIT_FAILED


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from infra.jobs import JobStore
    from producer.status import format_status, job_status

    status = job_status(JobStore.from_url(settings.broker_url).get(args.job_id))
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.command import run_worker

    run_worker(
        queues=args.queues,
        gpus=args.gpus,
        cpu=args.cpu,
        concurrency=args.concurrency,
        loglevel=args.loglevel,
        settings=settings,
    )
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from models import commands

    registry = _clients(settings)["registry"]
    if args.models_command == "list":
        rows = registry.summary()
        print(json.dumps(rows, indent=2) if args.json else commands.format_model_list(rows))
    elif args.models_command == "show":
        print(json.dumps(commands.show_model(registry, args.reference), indent=2))
    elif args.models_command == "promote":
        from models.registry import parse_model_ref

        name, version = parse_model_ref(args.reference)
        if version is None:
            raise CommandError("promote takes NAME@VERSION, e.g. digits@v2")
        print(f"{registry.promote(name, version)} is now CURRENT")
    elif args.models_command == "register":
        labels = commands.read_labels(args.labels, args.labels_file)
        ref = commands.register_model(
            registry,
            args.name,
            task=args.task,
            path=args.file,
            labels=labels,
            preprocess=args.preprocess,
            promote=True if args.promote else None,
        )
        print(f"registered {ref} ({ref.card['status']})")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from infra.demo import run_demo

    return run_demo(settings, images=args.images, epochs=args.epochs, keep=args.keep_running)


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from infra.doctor import run_doctor

    return run_doctor(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bucketvision", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    submit = sub.add_parser("submit", help="run a task over every image under an S3 prefix")
    submit.add_argument("--task", required=True, choices=["classify", "detect", "segment"])
    submit.add_argument("--input", required=True, help="s3://BUCKET/PREFIX/")
    submit.add_argument("--output", help="s3://BUCKET/PREFIX/ (default s3://BUCKET/results/...)")
    submit.add_argument("--model", help="NAME[@VERSION] (default: the task's default model)")
    submit.add_argument("--batch-size", type=int, help="keys per task (default BV_BATCH_SIZE)")
    submit.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="only keys matching GLOB (repeatable; default image suffixes)",
    )
    submit.add_argument(
        "--no-item-outputs", action="store_true", help="keep results in the manifest only"
    )
    submit.add_argument("--wait", action="store_true", help="follow the job with a progress bar")
    submit.add_argument("--quiet", action="store_true", help="no progress bar with --wait")
    submit.set_defaults(handler=cmd_submit)

    status = sub.add_parser("status", help="state, counts, rate and ETA of a job")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    worker = sub.add_parser("worker", help="run a Celery worker (one child per GPU)")
    worker.add_argument("--queues", default="inference", help="inference,training")
    worker.add_argument("--gpus", help="GPU indexes, one pool child each (default: all GPUs)")
    worker.add_argument("--cpu", action="store_true", help="no GPU: split the cores")
    worker.add_argument("--concurrency", type=int, help="pool children")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(handler=cmd_worker)

    models = sub.add_parser("models", help="the model registry")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list")
    listing.add_argument("--json", action="store_true")
    models_sub.add_parser("show").add_argument("reference", metavar="NAME[@V]")
    models_sub.add_parser("promote").add_argument("reference", metavar="NAME@V")
    register = models_sub.add_parser("register", help="add a Keras model as a new version")
    register.add_argument("name")
    register.add_argument("--task", required=True, choices=["classify"])
    register.add_argument("--file", required=True, help="a .keras file")
    register.add_argument("--labels", help="comma-separated class labels, in output order")
    register.add_argument("--labels-file", help="one label per line, or a JSON list")
    register.add_argument("--preprocess", default="unit", choices=["unit", "symmetric", "raw"])
    register.add_argument("--promote", action="store_true", help="make it CURRENT now")
    models.set_defaults(handler=cmd_models)

    demo = sub.add_parser("demo", help="the whole flow on a local stack, end to end")
    demo.add_argument("--images", type=int, default=500, help="images in the demo job")
    demo.add_argument("--epochs", type=int, default=2)
    demo.add_argument("--keep-running", action="store_true", help="leave Redis/S3 running")
    demo.set_defaults(handler=cmd_demo)

    doctor = sub.add_parser("doctor", help="check Redis, S3, TensorFlow, GPUs and models")
    doctor.set_defaults(handler=cmd_doctor)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from infra.jobs import JobNotFound
    from infra.local_services import ServiceError
    from infra.s3 import StorageError
    from models.loading import ModelLoadError
    from models.registry import ModelNotFound, RegistryError
    from producer.submit import SubmitError

    return (
        SettingsError,
        JobNotFound,
        ServiceError,
        StorageError,
        ModelNotFound,
        RegistryError,
        ModelLoadError,
        SubmitError,
        ValueError,
        TimeoutError,
        redis.exceptions.ConnectionError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, Settings.from_env())
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if isinstance(error, _known_errors()):
            message = str(error)
            if type(error).__module__.startswith("redis"):
                message = (
                    f"cannot reach Redis ({error}); is it running, and is BV_BROKER_URL right?"
                )
            print(f"error: {message}", file=sys.stderr)
            return EXIT_USAGE
        raise


if __name__ == "__main__":
    sys.exit(main())
