"""The CPU each image costs outside the model: a budget by stage and the feed rate per core.

On a GPU node the forward pass is cheap and what runs out first is the CPU that feeds
it. Every figure here comes from process CPU counters (``bench_cpu.CpuMeter``, user +
system seconds from /proc) taken in the same ``make bench`` run:

- ``worker``: the whole ``bucketvision worker`` process tree (the Celery parent and its
  pool children) per image of the pipeline: everything the service spends;
- ``forward``: the compute ceiling's CPU per image (the compiled forward pass, scaling
  included, on pre-decoded tensors);
- ``s3_get`` / ``s3_put``: the data-plane client's own CPU per GET and per PUT, from the
  storage ceilings run through the service's ``S3Store`` with the same client the
  worker uses (the S3 server's CPU is not the feed's: on a GPU node it is elsewhere);
- ``decode`` / ``preprocess``: one thread of the bench decoding objects of the corpus
  (libjpeg or zlib, JPEG draft mode) and then fitting them to the model's input as the
  service does (orientation, mode, resize, array);
- ``rest``: what is left of ``worker``: Celery, the queue, job records, manifest parts and
  the summary, thread hand-offs and results.

The **feed** is ``worker - forward``: the CPU per image spent outside the forward pass and
outside the S3 server; one core feeds ``1000 / feed`` images a second. The projection for
a 16-core GPU node is that times 16: what the feed would allow, not a measurement.

That difference is of two figures from different runs, and on MobileNetV2 both are near
20 ms while the feed is 2-4: the forward pass's CPU per image moved 6 % with what ran on
the other core, and by half between hours, so the difference read from -2.3 to 4.1 ms. The
**stand-in feed** measures it in one run: ``worker`` of the same job on the model's
stand-in (``bench_models.build_stand_in``: the same input, preprocess and labels, a forward
pass of next to nothing), which spends the worker's CPU on everything but the model. It
still counts the stand-in's own small pass (scaling and pooling the batch, one call per
wave), so it reads a little above the feed it stands for.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from bucketvision.models.decoding import decode_image
from tests.perf.bench_bounds import cpu_ms_per_image

WORKER = "bucketvision_worker"
STAGES = ("s3_get", "s3_put", "decode", "preprocess", "forward", "rest")
PROJECTED_CORES = 16


def decode_split_ms(
    blobs: Sequence[bytes], input_shape: Sequence[int], max_pixels: int, min_seconds: float = 1.0
) -> tuple[float, float] | None:
    """CPU ms per image of decoding ``blobs``, and of the rest of the service's decoder."""
    if not blobs:
        return None
    height, width, channels = input_shape
    mode = "L" if channels == 1 else "RGB"

    def timed(work: Any) -> float:
        images, start = 0, time.thread_time()
        while (used := time.thread_time() - start) < min_seconds or not images:
            for blob in blobs:
                work(blob)
            images += len(blobs)
        return 1000.0 * used / images

    def load(blob: bytes) -> None:
        with Image.open(io.BytesIO(blob)) as image:
            image.draft(mode, (width, height))
            image.load()
            np.asarray(image)

    def whole(blob: bytes) -> None:
        decode_image(blob, mode=mode, size=(width, height), max_pixels=max_pixels)

    decode = timed(load)
    return decode, max(0.0, timed(whole) - decode)


def _client_ms(figures: dict[str, Any], name: str) -> float | None:
    return cpu_ms_per_image(figures.get(name, {}), lambda process: process == "bench_producer")


def budget(
    figures: dict[str, Any],
    bounds: dict[str, Any],
    decode_split: tuple[float, float] | None,
    client: str,
) -> dict[str, Any]:
    """The budget of one model's pipeline (with item outputs) and its feed rate."""
    suffix = "" if client == "boto3" else f"_{client}"
    worker = worker_ms(figures, "pipeline")
    quiet = worker_ms(figures, "pipeline_no_item_outputs")
    stand_in = worker_ms(figures, "pipeline_stand_in")
    forward = bounds.get("forward_ms")
    get, get_put = _client_ms(figures, f"get{suffix}"), _client_ms(figures, f"get_put{suffix}")
    decode, preprocess = decode_split or (None, None)
    stages: dict[str, float | None] = {
        "s3_get": get,
        "s3_put": get_put - get if get is not None and get_put is not None else None,
        "decode": decode,
        "preprocess": preprocess,
        "forward": forward,
    }
    known = [value for value in stages.values() if value is not None]
    stages["rest"] = worker - sum(known) if worker and len(known) == len(stages) else None
    feed = worker - forward if worker and forward is not None else None
    quiet_feed = quiet - forward if quiet and forward is not None else None
    return {
        "client": client,
        "worker_ms": worker,
        "stages_ms": stages,
        "feed_ms": feed,
        "feed_per_core": 1000.0 / feed if feed_measured(feed) else None,
        "feed_ms_no_item_outputs": quiet_feed,
        "feed_per_core_no_item_outputs": (
            1000.0 / quiet_feed if feed_measured(quiet_feed) else None
        ),
        "feed_ms_stand_in": stand_in,
        "feed_per_core_stand_in": 1000.0 / stand_in if feed_measured(stand_in) else None,
    }


def worker_ms(figures: dict[str, Any], name: str) -> float | None:
    """The worker's CPU per image of figure ``name`` among one model's ``figures``."""
    return cpu_ms_per_image(figures.get(name, {}), lambda process: process == WORKER)


def feed_ms(model: dict[str, Any]) -> float | None:
    """A model's feed CPU per image from a bench result (also one from before the budget)."""
    worker = worker_ms(model.get("figures", {}), "pipeline")
    forward = (model.get("bounds") or {}).get("forward_ms")
    return worker - forward if worker and forward is not None else None


def feed_measured(feed: float | None) -> bool:
    """Whether a feed is a measurement: at or below zero, the forward pass subtracted was
    measured slower than the worker ran (a host whose speed moved between the two runs)."""
    return feed is not None and feed > 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def lines(models: dict[str, Any]) -> list[str]:
    """The budget table (ms of CPU per image by stage) and the 16-core projection."""
    budgets = {key: model["budget"] for key, model in models.items() if model.get("budget")}
    if not budgets:
        return []
    keys = list(budgets)
    out = [
        "CPU per image by stage (ms, process CPU counters; client: "
        + ", ".join(f"{key} {budgets[key]['client']}" for key in keys)
        + ")",
        f"  {'stage':28}" + "".join(f" {key:>12}" for key in keys),
    ]
    for stage in STAGES:
        out.append(
            f"  {stage:28}"
            + "".join(f" {_ms(budgets[key]['stages_ms'].get(stage)):>12}" for key in keys)
        )
    rows = [
        ("worker total", "worker_ms", _ms),
        ("feed (worker - forward)", "feed_ms", _ms),
        ("feed, --no-item-outputs", "feed_ms_no_item_outputs", _ms),
        ("feed img/s per core", "feed_per_core", _rate),
        ("feed, stand-in model", "feed_ms_stand_in", _ms),
        ("stand-in feed img/s per core", "feed_per_core_stand_in", _rate),
    ]
    for label, field, show in rows:
        out.append(
            f"  {label:28}" + "".join(f" {show(budgets[key].get(field)):>12}" for key in keys)
        )
    for which, field in (("feed", "feed_per_core"), ("stand-in feed", "feed_per_core_stand_in")):
        out.append(
            f"  PROJECTION, a {PROJECTED_CORES}-core GPU node, images/s the {which} allows:"
            + "".join(
                f" {key} {PROJECTED_CORES * budgets[key][field]:,.0f};"
                for key in keys
                if budgets[key].get(field)
            )
        )
    return out
