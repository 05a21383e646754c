"""worker.pipeline's waves: a batch's CPU steps never share their time with its requests.

Decoding beside requests in flight costs each image about three times the CPU of
decoding alone (``make bench``'s feed, issue 17): so a wave's images are all
downloaded before this thread decodes them, and the next wave's downloads start
only then, to run beside the forward pass. Results are made in the same CPU section,
with the uploads started before it through, and their uploads start with the next
downloads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import pytest
from PIL import Image

import bucketvision.worker.item_steps as item_steps
from bucketvision.infra.s3 import S3Store
from bucketvision.worker.item_steps import on_threads
from tests.unit.test_pipeline import BUCKET, FakeModel, put_pngs, run


class WavedModel(FakeModel):
    """Forward passes of 8 images: a wave is 8 items (``MIN_WAVE``)."""

    forward_batch = 8

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        self.events.append("forward")
        return super().infer(pixels)


class CountedRequests:
    """An S3Store whose GETs and PUTs take a while and count how many are in flight."""

    def __init__(self, store: S3Store, events: list[str]) -> None:
        self.store, self.events = store, events
        self.in_flight = 0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get_bytes(self, bucket: str, key: str, **options: Any) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.events.append(f"get {key}")
        try:
            time.sleep(0.01)
            return self.store.get_bytes(bucket, key, **options)
        finally:
            with self.lock:
                self.in_flight -= 1

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        with self.lock:
            self.in_flight += 1
        try:
            time.sleep(0.01)
            self.store.put_bytes(bucket, key, data, content_type)
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


@pytest.fixture
def keys(store: S3Store, encode: Any) -> list[str]:
    png = encode(Image.fromarray(np.full((30, 40), 7, dtype=np.uint8), "L"), "PNG")
    return put_pngs(store, png, [f"incoming/w/{index:02d}.png" for index in range(20)])


def test_no_image_is_decoded_while_requests_of_its_batch_are_in_flight(
    store: S3Store, pool: ThreadPoolExecutor, keys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    counted = CountedRequests(store, events)
    seen_in_flight: list[int] = []
    real_decode = item_steps.decode_image

    def decode_image(data: bytes, **options: Any) -> Any:
        seen_in_flight.append(counted.in_flight)
        return real_decode(data, **options)

    monkeypatch.setattr(item_steps, "decode_image", decode_image)
    model = WavedModel(events)
    outcome = run(counted, pool, keys, model=model)  # type: ignore[arg-type]
    assert [line["status"] for line in outcome.lines] == ["ok"] * len(keys)
    assert len(seen_in_flight) == len(keys)
    assert seen_in_flight == [0] * len(keys)


class CountingPool(ThreadPoolExecutor):
    """A pool that counts the downloads and uploads handed to it and not yet through."""

    def __init__(self) -> None:
        super().__init__(max_workers=16)
        self.in_flight, self.lock = 0, threading.Lock()

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        future = super().submit(fn, *args, **kwargs)
        if fn in (item_steps.fetch, item_steps.upload):
            with self.lock:
                self.in_flight += 1
            future.add_done_callback(self._done)
        return future

    def _done(self, _: Any) -> None:
        with self.lock:
            self.in_flight -= 1


class ResultsCounted(WavedModel):
    """Notes how many of the batch's requests are in flight as each result is made."""

    def __init__(self, pool: CountingPool) -> None:
        super().__init__([])
        self.pool, self.seen_in_flight = pool, list[int]()

    def result(self, output: np.ndarray, image: Any) -> Any:
        self.seen_in_flight.append(self.pool.in_flight)
        return super().result(output, image)


def test_no_result_is_made_while_requests_of_its_batch_are_in_flight(
    store: S3Store, keys: list[str]
) -> None:
    """Handed to the I/O threads counts, started or not: they would take the GIL."""
    with CountingPool() as pool:
        model = ResultsCounted(pool)
        outcome = run(CountedRequests(store, []), pool, keys, model=model)  # type: ignore[arg-type]
    assert [line["status"] for line in outcome.lines] == ["ok"] * len(keys)
    assert all(line["output"] for line in outcome.lines)  # every result was uploaded
    assert model.seen_in_flight == [0] * len(keys)


def test_a_stop_still_makes_and_uploads_the_results_of_items_past_their_pass(
    store: S3Store, pool: ThreadPoolExecutor, keys: list[str]
) -> None:
    """Stopped before the second pass: the first wave's 8 items are through, with outputs."""
    passes: list[str] = []
    model = WavedModel(passes)
    outcome = run(store, pool, keys, model=model, should_stop=lambda: len(passes) >= 1)
    assert outcome.stopped
    assert [line["key"] for line in outcome.lines] == keys[:8]
    assert [line["status"] for line in outcome.lines] == ["ok"] * 8
    assert all(store.exists(BUCKET, line["output"].split("/", 3)[3]) for line in outcome.lines)


class RecordingPool(ThreadPoolExecutor):
    """A pool that notes each download handed to it, in order with the forward passes."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(max_workers=16)
        self.events = events

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if fn is item_steps.fetch:
            self.events.append("download")
        return super().submit(fn, *args, **kwargs)


def test_the_next_wave_downloads_beside_the_forward_pass(store: S3Store, keys: list[str]) -> None:
    """Waves of 8 over 20 keys: the second wave's 8 downloads start before the first pass."""
    events: list[str] = []
    model = WavedModel(events)
    with RecordingPool(events) as pool:
        run(store, pool, keys, model=model)
    first_forward = events.index("forward")
    assert events[:first_forward].count("download") == 16
    assert events.count("download") == len(keys)
    assert [len(batch) for batch in model.batches] == [8, 8, 4]


def test_cpu_steps_run_here_with_one_thread_and_in_slices_with_more() -> None:
    items = [item_steps.ItemState(f"k{index}") for index in range(7)]
    here = threading.current_thread().name
    ran_on: dict[int, str] = {}

    def work(item: item_steps.ItemState, given: int) -> None:
        ran_on[given] = threading.current_thread().name
        item.result = {"given": given}

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="helper") as helpers:
        on_threads(helpers, 1, [partial(work, item, index) for index, item in enumerate(items)])
        assert set(ran_on.values()) == {here}
        ran_on.clear()
        on_threads(helpers, 3, [partial(work, item, index) for index, item in enumerate(items)])
    # Slices of 3, 3 and 1: the first here, the others handed to the pool.
    assert [ran_on[given] == here for given in range(7)] == [True] * 3 + [False] * 4
    assert all(ran_on[given].startswith("helper") for given in range(3, 7))
    assert [item.result for item in items] == [{"given": index} for index in range(7)]


def test_a_failing_slice_fails_the_call_after_every_slice_is_through() -> None:
    items = [item_steps.ItemState(f"k{index}") for index in range(6)]
    done: list[int] = []

    def work(item: item_steps.ItemState, given: int) -> None:
        if given == 5:
            raise RuntimeError("a bug in a step")
        time.sleep(0.01)
        done.append(given)

    with (
        ThreadPoolExecutor(max_workers=2) as helpers,
        pytest.raises(RuntimeError, match="a bug in a step"),
    ):
        on_threads(helpers, 3, [partial(work, item, index) for index, item in enumerate(items)])
    assert sorted(done) == [0, 1, 2, 3, 4]
