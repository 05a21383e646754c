"""``make bench``: the service against its ceilings and its peers, on a local stack.

Starts its own Redis and moto S3 server (unless ``--broker`` / ``--s3`` name
running ones), uploads two corpora and registers two models:

* ``cnn``: the seed CNN on 28x28 grey digit PNGs (3,000);
* ``mobilenet``: ``keras.applications.MobileNetV2(weights=None)`` at 224x224
  on 640x480 JPEGs (400).

For each, in the same run: the compute ceiling (the model's compiled forward on
pre-decoded tensors at the job's batch size), the storage ceilings against the
same S3 server (parallel GETs; GET plus the result PUT per item), the pipeline
(submit to finished through Redis and ``bucketvision worker --cpu
--concurrency 2``) with and without item outputs, and the peers (naive Celery,
batched Celery, Ray Data cold and warm). Then the enqueue rate of a 50,000-key
job and the worker's RSS over a 20,000-image job. Medians of ``--repeats``. While the
digits model is measured, the S3 server's threads share one core (``bench_isolation``).

Prints one table per model (img/s and ratios to the lower ceiling and to each
peer), the target checks, and, as its last stdout line, one JSON object.
Progress goes to stderr. See tests/perf/NOTES.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bucketvision.infra.local_services import ManagedProcess, start_moto, start_redis
from bucketvision.infra.s3 import S3Store
from bucketvision.infra.s3_data import open_data_plane
from bucketvision.infra.settings import Settings
from tests.perf import (
    bench_bounds,
    bench_budget,
    bench_ceilings,
    bench_isolation,
    bench_peers,
    bench_report,
    bench_service,
)
from tests.perf.bench_cpu import CpuMeter, available_cpus
from tests.perf.bench_data import upload_digit_pngs, upload_photos
from tests.perf.bench_report import figure
from tests.perf.bench_service import OUTPUT_BUCKET, say
from tests.perf.s3_requests import ledger_difference, read_ledger

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "bench"  # the corpora, which nothing writes to (outputs: bench_service.OUTPUT_BUCKET)
MODELS_URI = "s3://bench-models/models/"
COMPUTE_MIN_SECONDS = 2.0  # each compute-ceiling repeat lasts at least this long
DECODE_SAMPLE = 100  # objects of each corpus the decode cost is measured on


@dataclass(frozen=True)
class Corpus:
    key: str
    title: str
    prefix: str
    warm_prefix: str
    images: int
    quick_images: int
    warm_images: int
    upload: Callable[[Any, str, str, int, int], list[str]]
    storage_bound: bool = False  # the S3 server is its bottleneck: one core for its threads


CORPORA = {
    "cnn": Corpus(
        "cnn",
        "seed CNN: {n:,} digit PNGs 28x28 grey",
        "digits/",
        "digits-warm/",
        3000,
        640,
        128,
        upload_digit_pngs,
        storage_bound=True,
    ),
    "mobilenet": Corpus(
        "mobilenet",
        "MobileNetV2 224x224: {n:,} JPEGs 640x480",
        "photos/",
        "photos-warm/",
        400,
        96,
        64,
        upload_photos,
    ),
}


def with_db(url: str, db: int) -> str:
    """``url`` with its Redis database number replaced by ``db``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


class Phases:
    """Runs each phase, keeping going when one fails; the error goes into the results."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    @contextlib.contextmanager
    def phase(self, name: str, target: dict[str, Any] | None = None) -> Iterator[None]:
        say(f"{name} ...")
        start = time.perf_counter()
        try:
            yield
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            self.errors[name] = message
            if target is not None:
                target["error"] = message
            say(f"{name} FAILED: {message}")
            traceback.print_exc(file=sys.stderr)
        else:
            say(f"{name} done in {time.perf_counter() - start:.1f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small corpora, 1 repeat (dev)")
    parser.add_argument("--repeats", type=int, help="runs per figure; the median is reported")
    parser.add_argument("--only", choices=sorted(CORPORA), help="run one model only")
    parser.add_argument("--skip", default="", help="comma list of: peers,ray,enqueue,rss")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool children")
    parser.add_argument("--batch-size", type=int, default=32, help="keys per task")
    parser.add_argument("--cnn-images", type=int)
    parser.add_argument("--mobilenet-images", type=int)
    parser.add_argument("--enqueue-keys", type=int)
    parser.add_argument("--rss-images", type=int)
    parser.add_argument("--broker", help="a running Redis (db 0: jobs; 1: enqueue; 2: peers)")
    parser.add_argument("--s3", help="a running S3 endpoint (default: start moto)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, models)")
    parser.add_argument(
        "--s3-shares-cores",
        action="store_true",
        help="never put the S3 server's threads on one core (bench_isolation; the old way)",
    )
    options = parser.parse_args(argv)
    options.repeats = options.repeats or (1 if options.quick else 3)
    options.cnn_images = options.cnn_images or (640 if options.quick else 3000)
    options.mobilenet_images = options.mobilenet_images or (96 if options.quick else 400)
    options.enqueue_keys = options.enqueue_keys or (10_000 if options.quick else 50_000)
    options.rss_images = options.rss_images or (3_000 if options.quick else 20_000)
    options.skip = {part.strip() for part in options.skip.split(",") if part.strip()}
    options.models = [options.only] if options.only else list(CORPORA)
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bv-bench-"))
    say(f"work dir {workdir} (logs, model files)")
    bench_service.bench_environment(workdir, MODELS_URI, BV_BATCH_SIZE=str(options.batch_size))
    started: dict[str, ManagedProcess] = {}
    try:
        broker = options.broker
        if not broker:
            started["redis"] = start_redis()
            broker = started["redis"].url
        endpoint = options.s3
        if not endpoint:
            started["s3_server"] = start_moto(server="tests.perf.s3_keepalive")
            endpoint = started["s3_server"].url
        os.environ.update({"BV_BROKER_URL": with_db(broker, 0), "BV_S3_ENDPOINT_URL": endpoint})
        pids = {name: managed.process.pid for name, managed in started.items() if managed.process}
        bench = Bench(options, workdir, with_db(broker, 0), endpoint, pids)
        results = bench.run()
    finally:
        for managed in reversed(list(started.values())):
            managed.stop()
        if options.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(bench_report.render(results))
    print(json.dumps(results, separators=(",", ":")))
    return 1 if results["errors"] else 0


COMPARED = (
    "pipeline",
    "pipeline_no_item_outputs",
    "pipeline_stand_in",
    "naive_celery",
    "batched_celery",
)
_ALONE = frozenset({"bench_producer"})  # the bench's own process, without its children


def _job(run: dict[str, Any]) -> dict[str, Any]:
    """What the JSON keeps of one run (no ids)."""
    return {key: value for key, value in run.items() if key != "job_id"}


class Bench:
    """One run of the bench: its services, figures and results."""

    def __init__(
        self,
        options: argparse.Namespace,
        workdir: Path,
        broker: str,
        endpoint: str,
        pids: dict[str, int],
    ) -> None:
        self.options = options
        self.workdir = workdir
        self.broker = broker
        self.endpoint = endpoint
        self.pids = pids
        self.cores = len(available_cpus()) or os.cpu_count() or 1
        self.threads = max(1, self.cores // options.concurrency)
        self.phases = Phases()
        self.settings = Settings.from_env()
        self.s3 = bench_ceilings.s3_client(endpoint)
        # The storage ceilings run through the service's own store with each data-plane client.
        self.stores = {
            client: S3Store(
                self.s3, open_data_plane(self.settings.with_overrides(s3_data_client=client))
            )
            for client in bench_report.CLIENTS
        }
        self.sizes = {"cnn": options.cnn_images, "mobilenet": options.mobilenet_images}
        self.corpora = {key: CORPORA[key] for key in options.models}
        self.models: dict[str, Any] = {}
        self.decode_split: dict[str, tuple[float, float] | None] = {}
        self.keys: dict[str, list[str]] = {}
        self.figures: dict[str, dict[str, Any]] = {key: {} for key in self.corpora}
        self.results: dict[str, Any] = {
            "bench": "bucketvision make bench",
            "version": 1,
            "quick": options.quick,
            "repeats": options.repeats,
            "concurrency": options.concurrency,
            "batch_size": options.batch_size,
            "machine": {
                "cores": self.cores,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            },
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "models": {},
            "errors": self.phases.errors,
        }
        for key, corpus in self.corpora.items():
            self.results["models"][key] = {
                "title": corpus.title.format(n=self.sizes[key])
                + f", batch {options.batch_size}, {options.concurrency} children",
                "images": self.sizes[key],
                "figures": self.figures[key],
            }

    def run(self) -> dict[str, Any]:
        self.prepare()
        if "enqueue" not in self.options.skip:
            self.enqueue_and_listing()
        self.compare()
        self.ray()
        for key in self.corpora:
            self.results["models"][key]["ratios"] = bench_report.ratios(self.figures[key])
            split = self.decode_split.get(key)
            decode_ms = sum(split) if split else None
            limits = bench_bounds.bounds(self.figures[key], self.cores, decode_ms)
            self.results["models"][key]["bounds"] = limits
            self.results["models"][key]["budget"] = bench_budget.budget(
                self.figures[key], limits, split, self.settings.s3_data_client
            )
        self.results["targets"] = bench_report.targets(self.results)
        self.results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        return self.results

    # ------------------------------------------------------------------ data and models

    def prepare(self) -> None:
        with self.phases.phase("upload corpora"):
            self.s3.create_bucket(Bucket=BUCKET)
            self.s3.create_bucket(Bucket=OUTPUT_BUCKET)
            for key, corpus in self.corpora.items():
                self.keys[key] = corpus.upload(self.s3, BUCKET, corpus.prefix, self.sizes[key], 99)
                corpus.upload(self.s3, BUCKET, corpus.warm_prefix, corpus.warm_images, 7)
                say(f"uploaded {len(self.keys[key]):,} objects under s3://{BUCKET}/{corpus.prefix}")
        with self.phases.phase("build and register models"):
            made = subprocess.run(  # nosec B603 - our own module, fixed argv
                [
                    sys.executable,
                    "-m",
                    "tests.perf.bench_models",
                    "--out",
                    str(self.workdir),
                    "--models",
                    ",".join(self.corpora),
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            if made.returncode != 0:
                raise RuntimeError(f"bench_models failed:\n{made.stderr[-3000:]}")
            self.models.update(json.loads(made.stdout.strip().splitlines()[-1]))
            for key, info in self.models.items():
                self.results["models"][key]["model"] = info["ref"]
        with self.phases.phase("decode cost"):
            for key, info in self.models.items():
                blobs = [
                    self.s3.get_object(Bucket=BUCKET, Key=name)["Body"].read()
                    for name in self.keys.get(key, [])[:DECODE_SAMPLE]
                ]
                split = bench_budget.decode_split_ms(
                    blobs, info["input_shape"], self.settings.max_image_pixels
                )
                self.decode_split[key] = split
                say(f"{key}: decode {sum(split) if split else 0:.2f} ms of CPU per image")

    # ------------------------------------------------------------------ producer side

    def enqueue_and_listing(self) -> None:
        enqueue: dict[str, Any] = {}
        self.results["enqueue"] = enqueue
        with self.phases.phase("enqueue rate", enqueue):
            reference = next(iter(self.models.values()))["ref"] if self.models else "bench@v1"
            rates = [
                bench_service.enqueue_rate(
                    self.settings,
                    with_db(self.broker, 1),
                    self.options.enqueue_keys,
                    self.options.batch_size,
                    reference,
                )["keys_per_second"]
                for _ in range(self.options.repeats)
            ]
            enqueue.update(
                {
                    "keys": self.options.enqueue_keys,
                    "keys_per_second": statistics.median(rates),
                    "runs": [round(value) for value in rates],
                }
            )
        listing: dict[str, Any] = {}
        self.results["listing"] = listing
        with self.phases.phase("listing rate", listing):
            service = bench_service.Service.connect(self.settings)
            first = next(iter(self.corpora.values()))
            runs = [
                bench_service.listing_rate(service, f"s3://{BUCKET}/{first.prefix}")
                for _ in range(self.options.repeats)
            ]
            rates = [run["keys_per_second"] for run in runs]
            listing.update({"keys": runs[0]["keys"], "keys_per_second": statistics.median(rates)})

    # ------------------------------------------------------------------ interleaved figures

    def compare(self) -> None:
        """Ceilings, pipeline (both modes) and the Celery peers, interleaved run by run.

        The bucketvision worker runs throughout; each model's compute-ceiling
        children and peer workers run while that model is measured (idle, they only
        wait on a pipe or on Redis). Each repeat measures every figure once, in a
        rotating order, so load that drifts during the bench touches them alike.
        Then the RSS job.
        """
        service = bench_service.Service.connect(self.settings)
        worker = None
        with self.phases.phase("start bucketvision worker"):
            worker = bench_service.start_worker(
                {}, self.workdir / "worker.log", self.options.concurrency
            )
        try:
            for key in self.corpora:
                self.compare_model(service, worker, key)
            self.rss(service, worker)
        finally:
            if worker is not None:
                worker.stop()
            service.app.close()

    def place_server(self, key: str) -> None:
        """The S3 server's threads on one core for a storage-bound model, on every core for
        the others (``bench_isolation``); left alone with ``--s3-shares-cores``."""
        where = None
        if not self.options.s3_shares_cores:
            where = bench_isolation.place_server(
                self.pids.get("s3_server"), one_core=self.corpora[key].storage_bound
            )
        where = where or "whatever cores the scheduler picks"
        self.results["models"][key]["s3_server_threads_on"] = where
        say(f"{key}: the S3 server's threads on {where}")

    def compare_model(self, service: Any, worker: Any, key: str) -> None:
        self.place_server(key)
        model, options = self.models.get(key), self.options
        failed: dict[str, str] = {}
        skipped: dict[str, str] = {}
        contenders: dict[str, Callable[[int], dict[str, Any]]] = {}
        closers: list[Callable[[], None]] = []
        log = open(self.workdir / f"compute-{key}.log", "ab")  # noqa: SIM115 - closed below
        closers.append(log.close)
        try:
            for name, (kind, client) in bench_report.STORAGE.items():
                if key in self.keys:
                    contenders[name] = lambda repeat, k=kind, c=client: self.storage_run(
                        key, k, c, repeat
                    )
                else:
                    failed[name] = "no corpus"
            compute_pids: dict[str, list[int]] = {}
            layouts = {f"{options.concurrency}x{self.threads}": (options.concurrency, self.threads)}
            layouts.setdefault(f"1x{self.cores}", (1, self.cores))
            for layout, (processes, threads) in layouts.items():
                name = f"compute_{layout}"
                problem: dict[str, Any] = {}
                with self.phases.phase(f"{key}: start compute children {layout}", problem):
                    if model is None:
                        raise RuntimeError("no model")
                    ceiling = bench_ceilings.ComputeCeiling(
                        model["path"],
                        tuple(model["input_shape"]),
                        model["preprocess"],
                        batch_size=options.batch_size,
                        processes=processes,
                        threads=threads,
                        images=self.sizes[key],
                        min_seconds=COMPUTE_MIN_SECONDS,
                        log=log,
                    )
                    closers.append(ceiling.close)
                    compute_pids[name] = [child.pid for child in ceiling.children]
                    contenders[name] = lambda repeat, c=ceiling: {"images_per_second": c.measure()}
                if problem:
                    failed[name] = problem["error"]
            self.add_pipeline(service, worker, key, contenders, failed)
            peers = self.add_peers(key, contenders, failed, skipped, closers)
            roots: dict[str, int | list[int] | None] = {
                **compute_pids,
                "bench_producer": os.getpid(),
                "bucketvision_worker": worker.process.pid if worker is not None else None,
                **{f"{name}_worker": peer.process.pid for name, peer in peers.items()},
                **self.pids,
            }
            runs = self.rotate(key, contenders, failed, CpuMeter(roots, alone=_ALONE))
        finally:
            for close in reversed(closers):
                close()
        self.store_figures(key, runs, failed, skipped)

    def storage_run(self, key: str, kind: str, client: str, repeat: int) -> dict[str, Any]:
        store = self.stores[client]
        items = len(self.keys[key])
        if kind == "get":
            rate = bench_ceilings.get_rate(store, BUCKET, self.keys[key])
            return {"images_per_second": rate, "items": items}
        rate = bench_ceilings.get_put_rate(
            store,
            BUCKET,
            self.keys[key],
            f"ceiling/{key}/{client}/{repeat}/",
            out_bucket=OUTPUT_BUCKET,
        )
        return {"images_per_second": rate, "items": items}

    def add_pipeline(
        self,
        service: Any,
        worker: Any,
        key: str,
        contenders: dict[str, Callable[[int], dict[str, Any]]],
        failed: dict[str, str],
    ) -> None:
        model, corpus, options = self.models.get(key), self.corpora[key], self.options
        problem: dict[str, Any] = {}
        runs = {  # name: (which model, item outputs, output folder)
            "pipeline": ("ref", True, "items"),
            "pipeline_no_item_outputs": ("ref", False, "no-items"),
            "pipeline_stand_in": ("stand_in_ref", True, "stand-in"),
        }
        with self.phases.phase(f"{key}: warm up the bucketvision worker", problem):
            if model is None:
                raise RuntimeError("no model")
            if worker is None:
                raise RuntimeError("the worker did not start")
            for field in ("ref", "stand_in_ref"):
                bench_service.warm_up(
                    service,
                    worker,
                    model[field],
                    f"s3://{BUCKET}/{corpus.warm_prefix}",
                    f"s3://{OUTPUT_BUCKET}/out/warm/{key}/{field}/",
                    options.concurrency,
                    options.batch_size,
                )
        for name, (field, item_outputs, mode) in runs.items():
            if problem:
                failed[name] = problem["error"]
                continue

            def job(
                repeat: int, field: str = field, item_outputs: bool = item_outputs, mode: str = mode
            ) -> Any:
                return bench_service.run_pipeline(
                    service,
                    model[field],  # type: ignore[index]
                    f"s3://{BUCKET}/{corpus.prefix}",
                    f"s3://{OUTPUT_BUCKET}/out/pipeline/{key}/{mode}/{repeat}/",
                    item_outputs=item_outputs,
                    batch_size=options.batch_size,
                )

            contenders[name] = job

    def _peer_model(self, key: str, model: dict[str, Any]) -> Any:
        """What a peer needs to know of a registered bench model."""
        return bench_peers.PeerModel(
            key,
            model["path"],
            tuple(model["input_shape"]),
            model["preprocess"],
            BUCKET,
            self.corpora[key].prefix,
            OUTPUT_BUCKET,
        )

    def add_peers(
        self,
        key: str,
        contenders: dict[str, Callable[[int], dict[str, Any]]],
        failed: dict[str, str],
        skipped: dict[str, str],
        closers: list[Callable[[], None]],
    ) -> dict[str, bench_peers.CeleryPeerWorker]:
        """Start the Celery peers' workers for ``key``; their runs join ``contenders``."""
        model, options = self.models.get(key), self.options
        peers: dict[str, bench_peers.CeleryPeerWorker] = {}
        if "peers" in options.skip:
            skipped.update({name: "--skip peers" for name in bench_peers.CELERY_PEERS})
            return peers
        if model is None:
            failed.update({name: "no model" for name in bench_peers.CELERY_PEERS})
            return peers
        peer_model = self._peer_model(key, model)
        for name, peer in bench_peers.CELERY_PEERS.items():
            problem: dict[str, Any] = {}
            with self.phases.phase(f"{key}: start the {name} worker", problem):
                peers[name] = bench_peers.CeleryPeerWorker(
                    peer,
                    peer_model,
                    broker=with_db(self.broker, 2),
                    endpoint=self.endpoint,
                    concurrency=options.concurrency,
                    threads=self.threads,
                    batch_size=options.batch_size,
                    log_path=self.workdir / f"{name}-{key}.log",
                ).started()
                closers.append(peers[name].stop)
            if problem:
                failed[name] = problem["error"]
                continue

            def job(repeat: int, worker: Any = peers[name]) -> dict[str, Any]:
                return bench_peers.run_celery_peer(
                    worker, peer_model, s3=self.s3, batch_size=options.batch_size, repeat=repeat
                )

            contenders[name] = job
        return peers

    def rotate(
        self,
        key: str,
        contenders: dict[str, Callable[[int], dict[str, Any]]],
        failed: dict[str, str],
        meter: CpuMeter,
    ) -> dict[str, list[dict[str, Any]]]:
        """Every contender once per repeat, the order shifted by one each repeat."""
        names = list(contenders)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        say(f"{key}: measuring {', '.join(names)} ({self.options.repeats} rounds)")
        for repeat in range(self.options.repeats):
            shift = repeat % len(names) if names else 0
            for name in names[shift:] + names[:shift]:
                if name in failed:
                    continue
                ledger = read_ledger(self.endpoint)
                meter.start()
                try:
                    run = contenders[name](repeat)
                except Exception as error:
                    failed[name] = f"{type(error).__name__}: {error}"
                    self.phases.errors[f"{key}: {name}"] = failed[name]
                    say(f"{key} {name} FAILED: {failed[name]}")
                    traceback.print_exc(file=sys.stderr)
                    continue
                run["cpu"] = meter.stop()
                run["s3_server"] = ledger_difference(ledger, read_ledger(self.endpoint))
                runs[name].append(run)
                busy = ", ".join(
                    f"{process} {seconds / max(run['cpu']['wall_seconds'], 1e-9):.2f}"
                    for process, seconds in run["cpu"]["cpu_seconds"].items()
                    if seconds > 0.01 * run["cpu"]["wall_seconds"]
                )
                say(
                    f"{key} {name} round {repeat + 1}: {run['images_per_second']:.1f} img/s"
                    f" (cores busy: {busy})"
                )
        return runs

    def store_figures(
        self,
        key: str,
        runs: dict[str, list[dict[str, Any]]],
        failed: dict[str, str],
        skipped: dict[str, str],
    ) -> None:
        figures = self.figures[key]
        for name in (*bench_report.STORAGE, *COMPARED):
            if runs.get(name) and name not in failed:
                extra: dict[str, Any] = {"jobs": [_job(run) for run in runs[name]]}
                if name in bench_report.STORAGE:
                    extra["threads"] = bench_ceilings.STORAGE_THREADS
                    extra["client"] = bench_report.STORAGE[name][1]
                figures[name] = figure([run["images_per_second"] for run in runs[name]], **extra)
            elif name in skipped:
                figures[name] = {"images_per_second": None, "skipped": skipped[name]}
            else:
                figures[name] = {"images_per_second": None, "error": failed.get(name, "not run")}
        layouts = {
            name.removeprefix("compute_"): figure(
                [run["images_per_second"] for run in runs[name]],
                jobs=[_job(run) for run in runs[name]],
            )
            for name in runs
            if name.startswith("compute_") and runs[name] and name not in failed
        }
        if layouts:
            best = max(layouts, key=lambda name: layouts[name]["images_per_second"])
            figures["compute"] = {**layouts[best], "layout": best, "layouts": layouts}
        else:
            errors = [message for name, message in failed.items() if name.startswith("compute_")]
            figures["compute"] = {
                "images_per_second": None,
                "error": "; ".join(errors) or "not run",
            }

    def rss(self, service: Any, worker: Any) -> None:
        rss: dict[str, Any] = {}
        self.results["rss"] = rss
        if "rss" in self.options.skip:
            rss["skipped"] = "--skip rss"
            return
        if "cnn" not in self.models or "cnn" not in self.keys:
            rss["skipped"] = "the RSS job uses the cnn model and corpus (not in this run)"
            return
        with self.phases.phase("worker RSS", rss):
            if worker is None:
                raise RuntimeError("the worker did not start")
            rss.update(
                bench_service.rss_run(
                    service,
                    worker,
                    self.models["cnn"]["ref"],
                    self.keys["cnn"],
                    f"s3://{BUCKET}/{CORPORA['cnn'].prefix}",
                    f"s3://{OUTPUT_BUCKET}/out/rss/",
                    images=self.options.rss_images,
                    warm_images=max(self.options.rss_images // 20, 500),
                    batch_size=self.options.batch_size,
                )
            )

    # ------------------------------------------------------------------ Ray Data

    def ray(self) -> None:
        """Ray Data cold and warm: one fresh Ray session (a subprocess) per repeat."""
        for key in self.corpora:
            names = ("ray_cold", "ray_warm")
            if "ray" in self.options.skip or "peers" in self.options.skip:
                for name in names:
                    self.figures[key][name] = {"images_per_second": None, "skipped": "--skip ray"}
                continue
            model = self.models.get(key)
            sessions: list[dict[str, Any]] = []
            problem: dict[str, Any] = {}
            skipped: dict[str, Any] = {}
            self.place_server(key)
            with self.phases.phase(f"{key}: Ray Data", problem):
                if model is None:
                    raise RuntimeError("no model")
                peer_model = self._peer_model(key, model)
                for repeat in range(self.options.repeats):
                    session = bench_peers.run_ray_peer(
                        peer_model,
                        endpoint=self.endpoint,
                        concurrency=self.options.concurrency,
                        threads=self.threads,
                        batch_size=self.options.batch_size,
                        repeat=repeat,
                        log_path=self.workdir / f"ray-{key}.log",
                    )
                    if "skipped" in session:
                        skipped = session
                        say(f"Ray Data: skipped: {session['skipped']}")
                        break
                    sessions.append(session)
                    rates = ", ".join(
                        f"{run['kind']} {run['items'] / run['seconds']:.1f}"
                        for run in session["runs"]
                    )
                    say(f"{key} Ray Data session {repeat + 1}: {rates} img/s")
            for name in names:
                kind = name.removeprefix("ray_")
                rates = [
                    run["items"] / run["seconds"]
                    for session in sessions
                    for run in session["runs"]
                    if run["kind"] == kind
                ]
                if rates:
                    self.figures[key][name] = figure(rates, ray=sessions[0].get("ray"))
                else:
                    self.figures[key][name] = {"images_per_second": None, **problem, **skipped}


if __name__ == "__main__":
    sys.exit(main())
