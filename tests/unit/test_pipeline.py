"""worker.pipeline.run_batch with a fake model and a real S3Store over in-process moto."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.infra.messages import BatchMessage
from bucketvision.infra.s3 import S3Store, S3Uri, StorageUnavailable
from bucketvision.models.family import ItemResult
from bucketvision.worker.outcomes import BatchOutcome, dead_letter
from bucketvision.worker.pipeline import Limits, run_batch, start_batch

BUCKET = "unit-bucket"
INPUT = S3Uri(BUCKET, "incoming/")
OUTPUT = S3Uri(BUCKET, "results/")
LIMITS = Limits(max_pixels=1_000_000, max_bytes=1_000_000)
MANIFEST_FIELDS = {"key", "status", "output", "result", "error", "model", "latency_ms", "attempts"}
PROBABILITIES = np.array([0.1, 0.7, 0.2], dtype=np.float32)


class FakeModel:
    """A classify model (a ``ServedModel``): 28x28 grey in, fixed probabilities out."""

    task = "classify"
    mode = "L"
    size = (28, 28)
    resize = "stretch"
    preview_size = None
    forward_batch = 32  # more than any batch here: one forward pass per batch

    def __init__(self) -> None:
        self.labels = ["0", "1", "2"]
        self.batches: list[np.ndarray] = []

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        self.batches.append(pixels)
        return np.tile(PROBABILITIES, (len(pixels), 1))

    def result(self, output: np.ndarray, image: Any) -> ItemResult:
        best = int(np.argmax(output))
        return ItemResult({"label": str(best), "score": round(float(output[best]), 4), "top_k": []})


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


@pytest.fixture
def png(encode: Callable[..., bytes]) -> bytes:
    rng = np.random.default_rng(3)
    return encode(Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8), "L"), "PNG")


def message(keys: list[str], **changes: Any) -> BatchMessage:
    fields: dict[str, Any] = {
        "job_id": "J1",
        "batch": 0,
        "task": "classify",
        "keys": tuple(keys),
        "input": INPUT,
        "output": OUTPUT,
        "model": "digits@v1",
        "item_outputs": True,
    }
    fields.update(changes)
    return BatchMessage(**fields)


def run(
    store: S3Store,
    pool: ThreadPoolExecutor,
    keys: list[str],
    *,
    model: Any = None,
    limits: Limits = LIMITS,
    attempt: int = 1,
    should_stop: Callable[[], bool] = lambda: False,
    **changes: Any,
) -> BatchOutcome:
    served = model if model is not None else FakeModel()

    def load_model(reference: str) -> Any:
        assert reference == "digits@v1", "the pipeline must load the pinned model"
        return served

    return run_batch(
        message(keys, **changes),
        store=store,
        load_model=load_model,
        pool=pool,
        limits=limits,
        attempt=attempt,
        should_stop=should_stop,
    )


def put_pngs(store: S3Store, png: bytes, keys: list[str]) -> list[str]:
    """Put the same PNG under each key; returns the keys."""
    for key in keys:
        store.put_bytes(BUCKET, key, png, "image/png")
    return keys


def output_objects(store: S3Store) -> list[str]:
    return sorted(info.key for info in store.list_objects(OUTPUT))


MIXED = ["incoming/a/good.png", "incoming/empty.png", "incoming/page.png", "incoming/missing.png"]


@pytest.fixture
def mixed_bucket(store: S3Store, png: bytes) -> S3Store:
    store.put_bytes(BUCKET, "incoming/a/good.png", png, "image/png")
    store.put_bytes(BUCKET, "incoming/empty.png", b"")
    store.put_bytes(BUCKET, "incoming/page.png", b"<!DOCTYPE html><html><body>403</body></html>")
    return store


def test_one_line_per_key_in_input_order(mixed_bucket: S3Store, pool: ThreadPoolExecutor) -> None:
    model = FakeModel()
    outcome = run(mixed_bucket, pool, MIXED, model=model, attempt=2)

    assert [line["key"] for line in outcome.lines] == MIXED
    assert all(set(line) == MANIFEST_FIELDS for line in outcome.lines)
    assert all(line["model"] == "digits@v1" and line["attempts"] == 2 for line in outcome.lines)
    assert [line["status"] for line in outcome.lines] == ["ok", "error", "error", "error"]
    assert outcome.failure is None
    # only the decodable image reached the model, as one batch shaped for it
    assert len(model.batches) == 1
    assert model.batches[0].shape == (1, 28, 28, 1)
    assert model.batches[0].dtype == np.uint8
    json.dumps(outcome.lines)


class BrightnessModel(FakeModel):
    """Label "bright" or "dark" from each image's mean, to check results stay with their key."""

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        self.batches.append(pixels)
        bright = pixels.reshape(len(pixels), -1).mean(axis=1) >= 128
        return np.stack([~bright, bright], axis=1).astype(np.float32)

    def result(self, output: np.ndarray, image: Any) -> ItemResult:
        return ItemResult({"label": "bright" if output[1] > output[0] else "dark"})


def test_results_stay_with_their_keys_in_any_order(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor, encode: Callable[..., bytes]
) -> None:
    mixed_bucket.put_bytes(
        BUCKET, "incoming/white.png", encode(Image.new("L", (30, 30), 250), "PNG")
    )
    mixed_bucket.put_bytes(
        BUCKET, "incoming/black.jpg", encode(Image.new("L", (30, 30), 5), "JPEG")
    )
    keys = [
        "incoming/missing.png",
        "incoming/white.png",
        "incoming/empty.png",
        "incoming/black.jpg",
        "incoming/page.png",
    ]
    model = BrightnessModel()
    lines = run(mixed_bucket, pool, keys, model=model).lines
    assert [line["key"] for line in lines] == keys
    assert [line["status"] for line in lines] == ["error", "ok", "error", "ok", "error"]
    assert lines[1]["result"] == {"label": "bright", "image_size": [30, 30]}
    assert lines[3]["result"] == {"label": "dark", "image_size": [30, 30]}
    assert mixed_bucket.get_json(BUCKET, "results/white.png.json")["label"] == "bright"
    assert mixed_bucket.get_json(BUCKET, "results/black.jpg.json")["label"] == "dark"
    assert model.batches[0].shape == (2, 28, 28, 1)


def test_good_item_is_ok_with_its_output_written(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor
) -> None:
    good = run(mixed_bucket, pool, MIXED).lines[0]
    assert good["status"] == "ok"
    assert good["error"] is None
    assert good["result"] == {"label": "1", "score": 0.7, "top_k": [], "image_size": [30, 40]}
    assert good["output"] == f"s3://{BUCKET}/results/a/good.png.json"
    assert good["latency_ms"] >= 0
    written = mixed_bucket.get_json(BUCKET, "results/a/good.png.json")
    assert written["key"] == "incoming/a/good.png"
    assert written["model"] == "digits@v1"
    assert written["task"] == "classify"
    assert written["label"] == "1" and written["score"] == 0.7
    # no output objects for the bad items
    assert output_objects(mixed_bucket) == ["results/a/good.png.json"]


def test_bad_items_are_errors_with_type_and_message(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor
) -> None:
    lines = {line["key"]: line for line in run(mixed_bucket, pool, MIXED).lines}
    expected = {
        "incoming/empty.png": "EmptyObject",
        "incoming/page.png": "UnsupportedFormat",
        "incoming/missing.png": "ObjectMissing",
    }
    for key, error_type in expected.items():
        line = lines[key]
        assert line["status"] == "error"
        assert line["error"]["type"] == error_type
        assert line["error"]["message"]
        assert line["output"] is None and line["result"] is None
    assert "HTML" in lines["incoming/page.png"]["error"]["message"]
    assert "incoming/missing.png" in lines["incoming/missing.png"]["error"]["message"]


def test_stage_seconds(mixed_bucket: S3Store, pool: ThreadPoolExecutor) -> None:
    outcome = run(mixed_bucket, pool, MIXED)
    assert set(outcome.stage_seconds) == {"download", "decode", "infer", "upload"}
    assert all(seconds >= 0 for seconds in outcome.stage_seconds.values())
    assert outcome.stage_seconds["download"] > 0
    assert outcome.stage_seconds["upload"] > 0


def test_rerunning_a_batch_overwrites_the_same_keys(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor
) -> None:
    first = run(mixed_bucket, pool, MIXED)
    second = run(mixed_bucket, pool, MIXED, attempt=2)
    assert [line["output"] for line in first.lines] == [line["output"] for line in second.lines]
    assert output_objects(mixed_bucket) == ["results/a/good.png.json"]


def test_model_load_error_fails_every_line(mixed_bucket: S3Store, pool: ThreadPoolExecutor) -> None:
    def load_model(reference: str) -> Any:
        raise FileNotFoundError(f"{reference}: model.keras is gone")

    outcome = run_batch(
        message(MIXED),
        store=mixed_bucket,
        load_model=load_model,
        pool=pool,
        limits=LIMITS,
        attempt=1,
    )
    assert [line["key"] for line in outcome.lines] == MIXED
    for line in outcome.lines:
        assert line["status"] == "error"
        assert line["error"]["type"] == "ModelLoadError"
        assert "model.keras is gone" in line["error"]["message"]
    assert outcome.failure is not None
    assert "digits@v1" in outcome.failure
    assert output_objects(mixed_bucket) == []


def test_without_item_outputs_no_json_is_written(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor
) -> None:
    outcome = run(mixed_bucket, pool, MIXED, item_outputs=False)
    good = outcome.lines[0]
    assert good["status"] == "ok"
    assert good["result"] == {"label": "1", "score": 0.7, "top_k": [], "image_size": [30, 40]}
    assert output_objects(mixed_bucket) == []


def test_an_object_above_max_bytes_is_too_large(
    store: S3Store, pool: ThreadPoolExecutor, png: bytes
) -> None:
    store.put_bytes(BUCKET, "incoming/big.png", png)
    store.put_bytes(BUCKET, "incoming/small.png", png)
    limits = Limits(max_pixels=1_000_000, max_bytes=len(png) - 1)
    outcome = run(store, pool, ["incoming/big.png"], limits=limits)
    (line,) = outcome.lines
    assert line["status"] == "error"
    assert line["error"]["type"] == "ObjectTooLarge"
    exact = run(store, pool, ["incoming/small.png"], limits=Limits(1_000_000, len(png)))
    assert exact.lines[0]["status"] == "ok"


def test_an_image_above_max_pixels_is_refused(
    store: S3Store, pool: ThreadPoolExecutor, png: bytes
) -> None:
    store.put_bytes(BUCKET, "incoming/a.png", png)  # 30 x 40 = 1200 pixels
    outcome = run(store, pool, ["incoming/a.png"], limits=Limits(max_pixels=1199, max_bytes=10**6))
    assert outcome.lines[0]["error"]["type"] == "TooManyPixels"


def test_an_inference_error_fails_the_decoded_items_only(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor
) -> None:
    class Broken(FakeModel):
        def infer(self, pixels: np.ndarray) -> np.ndarray:
            raise RuntimeError("OOM when allocating tensor")

    lines = run(mixed_bucket, pool, MIXED, model=Broken()).lines
    assert lines[0]["error"]["type"] == "InferenceError"
    assert "OOM" in lines[0]["error"]["message"]
    assert [line["error"]["type"] for line in lines[1:]] == [
        "EmptyObject",
        "UnsupportedFormat",
        "ObjectMissing",
    ]
    assert output_objects(mixed_bucket) == []


def test_a_model_returning_the_wrong_number_of_outputs_is_an_error(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor, png: bytes
) -> None:
    mixed_bucket.put_bytes(BUCKET, "incoming/b.png", png)

    class Short(FakeModel):
        def infer(self, pixels: np.ndarray) -> np.ndarray:
            return np.tile(PROBABILITIES, (len(pixels) - 1, 1))

    lines = run(mixed_bucket, pool, ["incoming/a/good.png", "incoming/b.png"], model=Short()).lines
    assert [line["status"] for line in lines] == ["error", "error"]
    assert {line["error"]["type"] for line in lines} == {"InferenceError"}


def test_an_upload_failure_is_an_error_line(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor
) -> None:
    lines = run(
        mixed_bucket, pool, ["incoming/a/good.png"], output=S3Uri("no-such-bucket", "out/")
    ).lines
    assert lines[0]["status"] == "error"
    assert lines[0]["error"]["type"] == "UploadError"
    assert lines[0]["result"] is None


def test_a_decoder_crash_on_one_item_does_not_fail_the_batch(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bucketvision.worker.item_steps as pipeline

    real_decode = pipeline.decode_image

    def flaky_decode(data: bytes, **options: Any) -> Any:
        if data.startswith(b"\x89PNG"):
            raise MemoryError("decoder exploded")
        return real_decode(data, **options)

    monkeypatch.setattr(pipeline, "decode_image", flaky_decode)
    lines = run(mixed_bucket, pool, MIXED).lines
    assert lines[0]["error"]["type"] == "DecodeError"
    assert "MemoryError" in lines[0]["error"]["message"]
    assert [line["status"] for line in lines] == ["error"] * 4


class _BrokenBody:
    def read(self, *args: Any) -> bytes:
        from botocore.exceptions import ReadTimeoutError

        raise ReadTimeoutError(endpoint_url="http://s3.test/unit-bucket/incoming/page.png")

    def close(self) -> None:
        pass


def test_a_body_read_timeout_hands_the_whole_batch_back_for_a_retry(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timeout says nothing about the image: no item may become an error for it."""
    client = mixed_bucket.client
    real_get_object = client.get_object

    def get_object(**kwargs: Any) -> dict[str, Any]:
        response = real_get_object(**kwargs)
        if kwargs["Key"] == "incoming/page.png":
            response["Body"].close()
            response["Body"] = _BrokenBody()
        return response

    monkeypatch.setattr(client, "get_object", get_object)
    with pytest.raises(StorageUnavailable, match=r"incoming/page\.png"):
        run(mixed_bucket, pool, MIXED)


@pytest.mark.parametrize("operation", ["get_object", "put_object"])
def test_s3_unreachable_or_5xx_raises_instead_of_failing_items(
    mixed_bucket: S3Store,
    pool: ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
) -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    calls = {"count": 0}

    def unavailable(**kwargs: Any) -> Any:
        calls["count"] += 1
        if calls["count"] % 2:
            raise EndpointConnectionError(endpoint_url="http://s3.test")
        response = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
        raise ClientError(response, operation)

    monkeypatch.setattr(mixed_bucket.client, operation, unavailable)
    with pytest.raises(StorageUnavailable):
        run(mixed_bucket, pool, MIXED)


def test_access_denied_on_one_object_is_an_item_error(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    client = mixed_bucket.client
    real_get_object = client.get_object

    def get_object(**kwargs: Any) -> dict[str, Any]:
        if kwargs["Key"] == "incoming/page.png":
            denied = {"Code": "AccessDenied"}
            raise ClientError({"Error": denied, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Get")
        return real_get_object(**kwargs)

    monkeypatch.setattr(client, "get_object", get_object)
    lines = {line["key"]: line for line in run(mixed_bucket, pool, MIXED).lines}
    assert lines["incoming/page.png"]["status"] == "error"
    assert "access denied" in lines["incoming/page.png"]["error"]["message"]


def test_dead_letter_makes_every_line_an_error() -> None:
    outcome = dead_letter(message(MIXED), attempt=5, deaths=5, max_attempts=5)
    assert [line["key"] for line in outcome.lines] == MIXED
    for line in outcome.lines:
        assert set(line) == MANIFEST_FIELDS
        assert line["status"] == "error"
        assert line["error"]["type"] == "DeadLetter"
        assert "BV_MAX_ATTEMPTS=5" in line["error"]["message"]
        assert "died 5 times" in line["error"]["message"]
        assert line["attempts"] == 5
        assert line["output"] is None and line["result"] is None
    assert outcome.failure is None


def test_empty_batch(store: S3Store, pool: ThreadPoolExecutor) -> None:
    outcome = run(store, pool, [])
    assert outcome.lines == []
    assert outcome.failure is None


class GroupedModel(FakeModel):
    """A model whose compiled forward takes ``forward_batch`` images at a time."""

    forward_batch = 3


def test_a_batch_streams_through_the_forward_pass_in_groups(
    store: S3Store, pool: ThreadPoolExecutor, png: bytes
) -> None:
    keys = put_pngs(store, png, [f"incoming/g/{index:02d}.png" for index in range(10)])
    store.put_bytes(BUCKET, "incoming/g/bad.png", b"not an image")
    model = GroupedModel()
    outcome = run(store, pool, [*keys[:5], "incoming/g/bad.png", *keys[5:]], model=model)
    assert [len(batch) for batch in model.batches] == [3, 3, 3, 1]  # groups as they decode
    lines = {line["key"]: line for line in outcome.lines}
    assert [line["key"] for line in outcome.lines] == [*keys[:5], "incoming/g/bad.png", *keys[5:]]
    assert all(lines[key]["status"] == "ok" and lines[key]["output"] for key in keys)
    assert lines["incoming/g/bad.png"]["error"]["type"] == "UnsupportedFormat"
    for key in keys:  # every group's uploads were written
        assert store.exists(BUCKET, f"results/{key[len('incoming/') :]}.json")


def test_keys_that_used_to_share_an_output_get_one_line_each_and_overwrite_nothing(
    store: S3Store, pool: ThreadPoolExecutor, png: bytes
) -> None:
    """Issue 14: ``a//b``, ``a/./b`` and ``a/b`` wrote one ``a/b.png.json``; ``_jobs/`` inputs
    wrote over job files. Only the canonical key maps; the others are UnmappableKey lines."""
    keys = ["incoming/a//b.png", "incoming/a/./b.png", "incoming/a/b.png"]
    keys += ["incoming/_jobs/x/summary", "incoming/_jobs/x/summary.json"]
    for key in keys:
        store.put_bytes(BUCKET, key, png, "image/png")
    summary = b'{"job_id": "x"}'  # job x's own summary, under the same output prefix
    store.put_bytes(BUCKET, "results/_jobs/x/summary.json", summary, "application/json")
    outcome = run(store, pool, keys)
    assert [line["key"] for line in outcome.lines] == keys
    by_key = {line["key"]: line for line in outcome.lines}
    assert by_key["incoming/a/b.png"]["status"] == "ok"
    assert by_key["incoming/a/b.png"]["output"] == f"s3://{BUCKET}/results/a/b.png.json"
    for key in keys[:2] + keys[3:]:
        line = by_key[key]
        assert line["status"] == "error" and line["output"] is None, line
        assert line["error"]["type"] == "UnmappableKey" and "rename" in line["error"]["message"]
    assert output_objects(store) == ["results/_jobs/x/summary.json", "results/a/b.png.json"]
    written = json.loads(store.get_bytes(BUCKET, "results/a/b.png.json"))
    assert written["key"] == "incoming/a/b.png"  # written by its own key, not another's
    assert store.get_bytes(BUCKET, "results/_jobs/x/summary.json") == summary


def test_a_cancelled_batch_stops_after_its_forward_pass_with_lines_for_what_ran(
    store: S3Store, pool: ThreadPoolExecutor, png: bytes
) -> None:
    """Issue 14 (cancel): ``should_stop`` is asked before each forward pass, not per item;
    once it says stop, the items not inferred get no line and no outputs."""
    keys = [f"incoming/c/{index:02d}.png" for index in range(9)]
    for key in keys:
        store.put_bytes(BUCKET, key, png, "image/png")
    asked: list[int] = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 1  # the job is cancelled while the first group runs

    model = GroupedModel()
    outcome = run(store, pool, keys, model=model, should_stop=should_stop)
    assert outcome.stopped and len(asked) == 2
    assert [len(batch) for batch in model.batches] == [3]
    assert len(outcome.lines) == 3 and all(line["status"] == "ok" for line in outcome.lines)
    ran = sorted(line["key"] for line in outcome.lines)
    assert output_objects(store) == [f"results/{key[len('incoming/') :]}.json" for key in ran]
    whole = run(store, pool, keys, model=GroupedModel(), should_stop=lambda: False)
    assert not whole.stopped and len(whole.lines) == len(keys)


class DisagreeingModel(FakeModel):
    """A candidate that picks label 2 for every other image, with lower confidence."""

    def infer(self, pixels: np.ndarray) -> np.ndarray:
        rows = [
            [0.1, 0.6, 0.3] if index % 2 == 0 else [0.1, 0.3, 0.6] for index in range(len(pixels))
        ]
        return np.asarray(rows, dtype=np.float32)


def test_a_shadowed_batch_compares_the_candidate_and_writes_nothing_of_it(
    store: S3Store, pool: ThreadPoolExecutor, png: bytes
) -> None:
    keys = put_pngs(store, png, [f"incoming/{index}.png" for index in range(6)])
    current, candidate = FakeModel(), DisagreeingModel()
    models = {"digits@v1": current, "digits@v2": candidate}
    outcome = run_batch(
        message(keys, shadow="digits@v2"),
        store=store,
        load_model=models.__getitem__,
        pool=pool,
        limits=LIMITS,
        attempt=1,
    )
    assert [line["result"]["label"] for line in outcome.lines] == ["1"] * 6  # CURRENT's only
    tally = outcome.shadow
    assert tally is not None and (tally.items, tally.agreed, tally.errors) == (6, 3.0, 0)
    assert tally.current_confidence == pytest.approx(6 * 0.7)
    assert tally.candidate_confidence == pytest.approx(6 * 0.6)
    assert tally.current_histogram[7] == 6 and tally.candidate_histogram[6] == 6
    assert all(".json" in key for key in output_objects(store))  # only CURRENT's results


def test_a_candidate_that_fails_counts_errors_and_the_batch_is_untouched(
    store: S3Store, pool: ThreadPoolExecutor, png: bytes
) -> None:
    keys = put_pngs(store, png, ["incoming/a.png", "incoming/b.png"])

    def load_model(reference: str) -> Any:
        if reference == "digits@v2":
            raise ValueError("broken candidate")
        return FakeModel()

    outcome = run_batch(
        message(keys, shadow="digits@v2"),
        store=store,
        load_model=load_model,
        pool=pool,
        limits=LIMITS,
        attempt=1,
    )
    assert [line["status"] for line in outcome.lines] == ["ok", "ok"]
    assert outcome.shadow is not None and (outcome.shadow.items, outcome.shadow.errors) == (0, 2)
    assert run(store, pool, keys).shadow is None  # no shadow named: none run


class HeldUploads:
    """An S3Store whose PUTs wait until released: the uploads of a batch stay in flight."""

    def __init__(self, store: S3Store) -> None:
        self.store, self.released = store, threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_bytes(self, *args: Any, **kwargs: Any) -> Any:
        assert self.released.wait(10), "the uploads were never released"
        return self.store.put_bytes(*args, **kwargs)


def test_a_started_batch_returns_after_its_forward_pass_with_its_uploads_in_flight(
    mixed_bucket: S3Store, pool: ThreadPoolExecutor
) -> None:
    """What the task runs (start_batch) ends before the uploads; complete() waits for them."""
    held, model = HeldUploads(mixed_bucket), FakeModel()
    pending = start_batch(
        message(MIXED),
        store=held,  # type: ignore[arg-type]
        load_model=lambda reference: model,
        pool=pool,
        limits=LIMITS,
        attempt=1,
    )
    assert len(model.batches) == 1  # its forward pass ran
    assert pending.writes and not any(write.done() for write in pending.writes)
    assert output_objects(mixed_bucket) == []  # nothing uploaded yet
    held.released.set()
    outcome = pending.complete()
    assert [line["status"] for line in outcome.lines] == ["ok", "error", "error", "error"]
    assert outcome.lines[0]["output"] == f"s3://{BUCKET}/results/a/good.png.json"
    assert output_objects(mixed_bucket) == ["results/a/good.png.json"]
    assert pending.complete() is outcome  # made once
