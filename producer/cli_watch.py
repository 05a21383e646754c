"""``bucketvision watch``: the drop folder; every object that lands under a prefix, once.

The flags map onto a :class:`producer.watch.WatchRequest`; the watcher itself is
:class:`producer.watch.Watcher` (:class:`producer.metrics.MeteredWatcher` with metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from bucketvision.infra.errors import EXIT_FAILED
from bucketvision.infra.logs import configure_logging
from bucketvision.infra.settings import DEFAULT_MODELS, Settings, redact_url
from bucketvision.infra.vocabulary import IMAGE_PATTERNS, INFERENCE_TASKS
from bucketvision.producer.cli_jobs import add_key_filters
from bucketvision.producer.cli_review import add_review_flags, review_policy
from bucketvision.producer.cli_support import CommandError, clients, positive_number, whole_number


def add_watch(sub: Any) -> None:
    watch = sub.add_parser("watch", help="process every object that lands under a prefix, once")
    watch.add_argument(
        "--input", dest="input_flag", metavar="INPUT", help="s3://BUCKET/incoming/: the prefix"
    )
    watch.add_argument("input", nargs="?", help="the same as --input (kept for older scripts)")
    watch.add_argument("--task", required=True, choices=INFERENCE_TASKS, help="what to run")
    watch.add_argument("--output", required=True, help="s3://BUCKET/results/")
    watch.add_argument("--model", help="NAME (CURRENT is pinned per cycle)")
    watch.add_argument(
        "--interval", type=positive_number, default=5.0, help="seconds between cycles"
    )
    watch.add_argument("--move-to", help="s3://BUCKET/done/: move inputs there once processed")
    watch.add_argument("--once", action="store_true", help="process what is there and exit")
    watch.add_argument(
        "--batch-size", type=whole_number(), help="keys per task (default BV_BATCH_SIZE)"
    )
    watch.add_argument(
        "--max-in-flight",
        type=whole_number(),
        default=5000,
        help="wait above this many unfinished items",
    )
    watch.add_argument(
        "--rescan-seconds",
        type=positive_number,
        default=60.0,
        help="list the whole prefix this often (default 60): with --events the reconciliation"
        " that finds what the event source dropped; without, what a large prefix's cursor"
        " misses (overwrites, keys that sort before it)",
    )
    watch.add_argument(
        "--events",
        metavar="URI",
        help="learn of new objects from bucket events: sqs://HOST/ACCOUNT/QUEUE (S3"
        " notifications) or redis://HOST:PORT/DB/LIST (MinIO's Redis target, access format);"
        " default BV_WATCH_EVENTS (keeps a password off the command line); docs/jobs.md",
    )
    watch.add_argument(
        "--full-listing-max",
        type=whole_number(0),
        default=10_000,
        help="without --events, list the whole prefix every cycle while it holds at most this"
        " many objects (default 10000), so key order does not delay anything",
    )
    add_key_filters(watch, "repeatable; default image suffixes")
    add_review_flags(watch)
    watch.add_argument(
        "--json",
        action="store_true",
        help="one JSON object a line on stdout: each job sent ({job_id, total, model}), and"
        " the end ({stopped, cycles, enqueued, failed, events: {received, duplicate, reconciled}})",
    )
    watch.add_argument(
        "--wait-for-model",
        action="store_true",
        help="until the model has a CURRENT version, wait (checking every 15 s) instead of"
        " exiting 2: for a watcher started with a fresh stack",
    )
    watch.set_defaults(handler=cmd_watch)


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.infra.queue import make_celery
    from bucketvision.producer.watch import Watcher, WatchRequest

    if args.input_flag and args.input and args.input_flag != args.input:
        raise CommandError("give the prefix once: --input s3://BUCKET/PREFIX/")
    if not (args.input_flag or args.input):
        raise CommandError("watch needs --input s3://BUCKET/PREFIX/: the prefix to watch")
    request = WatchRequest(
        input=args.input_flag or args.input,
        task=args.task,
        output=args.output,
        model=args.model,
        interval=args.interval,
        move_to=args.move_to,
        once=args.once,
        batch_size=args.batch_size or settings.batch_size,
        max_in_flight=args.max_in_flight,
        rescan_seconds=args.rescan_seconds,
        full_listing_max=args.full_listing_max,
        includes=tuple(args.include or IMAGE_PATTERNS),
        excludes=tuple(args.exclude or ()),
        window=settings.job_window,
        review=review_policy(args),
    )
    configure_logging("INFO", settings.log_format)
    report = _reporter(settings, "bucketvision.watch")
    found = clients(settings)
    if args.wait_for_model:
        wait_for_model(
            found["registry"], args.model or DEFAULT_MODELS[args.task], args.task, report
        )
    found["announce"] = _json_lines if args.json else None
    events = args.events or settings.watch_events
    if events:
        from bucketvision.producer.watch_events import open_event_source

        found["events"] = open_event_source(events, settings)
    if settings.metrics_port is None:
        watcher = Watcher(request, app=make_celery(settings), report=report, **found)
    else:
        from bucketvision.producer.metrics import (
            MeteredWatcher,
            WatcherMetrics,
            export_producer_metrics,
        )

        export_producer_metrics(settings)
        watcher = MeteredWatcher(
            request, app=make_celery(settings), report=report, metrics=WatcherMetrics(), **found
        )
    watcher.stop_on_signals()
    how = (
        f"on events from {redact_url(args.events)}"
        if args.events
        else f"every {request.interval:g} s"
    )
    report(f"watching {request.input} {how} -> {request.output}")
    state = watcher.run()
    report(f"stopped after {state.cycles} cycles; {state.enqueued} objects enqueued")
    if args.json:
        events = {"received": state.events.received, "duplicate": state.events.duplicate,
                  "reconciled": state.events.reconciled}  # fmt: skip
        _json_lines({"stopped": True, "cycles": state.cycles, "enqueued": state.enqueued,
                     "failed": state.failed, "events": events})  # fmt: skip
    if request.once and state.failed:
        report(f"jobs that did not finish: {', '.join(state.failed)} (see `bucketvision status`)")
        return EXIT_FAILED
    return 0


MODEL_POLL_SECONDS = 15.0


def wait_for_model(
    registry: Any,
    name: str,
    task: str,
    report: Callable[[str], None],
    *,
    poll_seconds: float = MODEL_POLL_SECONDS,
    sleep: Callable[[float], Any] = time.sleep,
) -> None:
    """Until ``name`` has a CURRENT version of ``task`` (a fresh stack, before training):
    a watcher started with the stack waits instead of exiting and being restarted."""
    from bucketvision.models.registry import ModelNotFound

    while True:
        try:
            registry.resolve(name, task=task)
            return
        except ModelNotFound as error:
            report(f"waiting for the model: {error}")
        sleep(poll_seconds)


def _json_lines(record: dict[str, Any]) -> None:
    """``watch --json``: one JSON object a line on stdout (each job sent; the end)."""
    print(json.dumps(record), flush=True)


def _reporter(settings: Settings, logger: str) -> Callable[[str], None]:
    """Progress lines of a long-running command: log records in JSON, plain lines in text."""
    if settings.log_format == "json":
        return logging.getLogger(logger).info
    return lambda text: print(text, file=sys.stderr, flush=True)
