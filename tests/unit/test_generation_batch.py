"""worker.generation: generate messages, image keys and one batch over in-process moto."""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.infra.messages import GenerateItem, GenerateMessage, MessageError
from bucketvision.infra.outputs import generated_image_key
from bucketvision.infra.s3 import S3Store, S3Uri, StorageError, parse_s3_uri
from bucketvision.worker.generation import run_generate_batch

BUCKET = "unit-bucket"
OUTPUT = f"s3://{BUCKET}/out/run"
MODEL = "digits-gan@v2"
LINE_FIELDS = {"key", "status", "output", "result", "error", "model", "latency_ms", "attempts"}


@pytest.fixture
def store(shared_store: S3Store) -> S3Store:
    """conftest's module-wide moto S3, emptied for this test."""
    return shared_store


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def body(**changes: Any) -> dict[str, Any]:
    """A generate task body; keyword arguments replace its fields."""
    message = {
        "task": "generate",
        "job_id": "job-1",
        "batch": 3,
        "output": OUTPUT,
        "model": MODEL,
        "items": [
            {"index": 0, "seed": 11, "label": 1},
            {"index": 1, "seed": 12, "label": None},
            {"index": 2, "seed": 13},
        ],
    }
    message.update(changes)
    return message


class FakeGenerator:
    """A generator whose image depends only on (seed, label)."""

    def __init__(self, labels: list[str] | None = None, fail: Exception | None = None) -> None:
        self.labels = labels if labels is not None else ["zero", "one", "two"]
        self.fail = fail
        self.calls: list[tuple[list[int], list[int | None]]] = []

    def generate(self, seeds: list[int], labels: list[int | None]) -> list[np.ndarray]:
        self.calls.append((list(seeds), list(labels)))
        if self.fail is not None:
            raise self.fail
        images = []
        for seed, label in zip(seeds, labels, strict=True):
            rng = np.random.default_rng(seed)
            image = rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)
            image[0, 0] = (label if label is not None else 255, 0, 0)
            images.append(image)
        return images

    def encode_png(self, image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image, "RGB").save(buffer, "PNG")
        return buffer.getvalue()


def run(
    store: S3Store, pool: ThreadPoolExecutor, model: Any, message: GenerateMessage, attempt: int = 1
) -> tuple[Any, list[str]]:
    loaded: list[str] = []

    def load_model(ref: str) -> Any:
        loaded.append(ref)
        return model

    outcome = run_generate_batch(
        message, store=store, load_model=load_model, pool=pool, attempt=attempt
    )
    return outcome, loaded


# --- GenerateMessage and image_key -------------------------------------------------------------


def test_from_json_reads_a_message() -> None:
    message = GenerateMessage.from_json(body())
    assert message.job_id == "job-1"
    assert message.batch == 3
    assert message.output == parse_s3_uri(OUTPUT)
    assert message.output.prefix == "out/run/"
    assert message.model == MODEL
    assert message.items == (
        GenerateItem(0, 11, 1),
        GenerateItem(1, 12, None),
        GenerateItem(2, 13, None),
    )


def test_from_json_converts_numbers_given_as_text() -> None:
    message = GenerateMessage.from_json(
        body(items=[{"index": "4", "seed": "99", "label": "2"}], job_id=7, batch="0")
    )
    assert message.job_id == "7"
    assert message.batch == 0
    assert message.items == (GenerateItem(4, 99, 2),)


def test_from_json_with_no_items() -> None:
    message = GenerateMessage.from_json(body(items=[]))
    assert message.items == ()
    assert message.keys == []


@pytest.mark.parametrize(
    "broken",
    [
        {k: v for k, v in body().items() if k != "job_id"},
        {k: v for k, v in body().items() if k != "items"},
        {k: v for k, v in body().items() if k != "output"},
        {k: v for k, v in body().items() if k != "model"},
        body(batch="three"),
        body(batch=None),
        body(output="out/run"),  # not an s3:// URI
        body(output="s3:///prefix"),  # no bucket
        body(items=None),
        body(items=[{"seed": 1}]),
        body(items=[{"index": 0}]),
        body(items=[{"index": 0, "seed": "x"}]),
        body(items=[{"index": 0, "seed": 1, "label": "cat"}]),
        body(items=["not an item"]),
    ],
)
def test_from_json_refuses_a_malformed_message(broken: dict[str, Any]) -> None:
    with pytest.raises(MessageError, match="malformed generate message"):
        GenerateMessage.from_json(broken)


@pytest.mark.parametrize("output", [None, 42])
def test_from_json_refuses_an_output_that_is_not_text(output: Any) -> None:
    with pytest.raises(MessageError, match="malformed generate message"):
        GenerateMessage.from_json(body(output=output))


def image_key(output: S3Uri, job_id: str, item: GenerateItem) -> str:
    return generated_image_key(output, job_id, item.index, item.seed)


def test_image_key_is_stable_and_under_the_job() -> None:
    output = parse_s3_uri(OUTPUT)
    item = GenerateItem(7, 42, 3)
    key = image_key(output, "job-1", item)
    assert key == "out/run/generated/job-1/000007-seed42.png"
    assert image_key(parse_s3_uri(OUTPUT), "job-1", GenerateItem(7, 42, 3)) == key
    assert image_key(output, "job-1", GenerateItem(7, 42, None)) == key  # the label is not in it
    assert image_key(output, "job-2", item) != key
    assert image_key(output, "job-1", GenerateItem(8, 42)) != key
    assert image_key(output, "job-1", GenerateItem(7, 43)) != key


def test_image_key_at_the_bucket_root() -> None:
    key = image_key(parse_s3_uri("s3://bkt"), "j", GenerateItem(123456, 0))
    assert key == "generated/j/123456-seed0.png"


def test_message_keys_follow_the_items() -> None:
    message = GenerateMessage.from_json(body())
    assert message.keys == [
        "out/run/generated/job-1/000000-seed11.png",
        "out/run/generated/job-1/000001-seed12.png",
        "out/run/generated/job-1/000002-seed13.png",
    ]


# --- run_generate_batch ------------------------------------------------------------------------


def test_a_batch_writes_every_image_and_one_line_per_item(
    store: S3Store, pool: ThreadPoolExecutor
) -> None:
    model = FakeGenerator()
    message = GenerateMessage.from_json(body())
    outcome, loaded = run(store, pool, model, message, attempt=2)

    assert loaded == [MODEL]
    assert model.calls == [([11, 12, 13], [1, None, None])]
    assert [line["key"] for line in outcome.lines] == message.keys
    for line, item, image in zip(
        outcome.lines, message.items, model.generate([11, 12, 13], [1, None, None]), strict=True
    ):
        key = line["key"]
        assert set(line) == LINE_FIELDS
        assert key.startswith("out/run/generated/job-1/")
        assert line["status"] == "ok"
        assert line["error"] is None
        assert line["output"] == f"s3://{BUCKET}/{key}"
        assert line["model"] == MODEL
        assert line["attempts"] == 2
        assert line["latency_ms"] >= 0
        expected: dict[str, Any] = {"image": key, "seed": item.seed}
        if item.label is not None:
            expected["label"] = model.labels[item.label]
        assert line["result"] == expected
        head = store.client.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentType"] == "image/png"
        stored = Image.open(io.BytesIO(store.get_bytes(BUCKET, key)))
        np.testing.assert_array_equal(np.asarray(stored), image)
    assert outcome.lines[0]["result"]["label"] == "one"
    assert "label" not in outcome.lines[1]["result"]
    assert set(outcome.stage_seconds) == {"download", "decode", "infer", "upload"}
    assert outcome.stage_seconds["download"] == outcome.stage_seconds["decode"] == 0.0
    assert outcome.failure is None


def test_a_batch_writes_nothing_outside_its_job(store: S3Store, pool: ThreadPoolExecutor) -> None:
    run(store, pool, FakeGenerator(), GenerateMessage.from_json(body()))
    listed = store.client.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert sorted(entry["Key"] for entry in listed) == GenerateMessage.from_json(body()).keys


def test_a_redelivered_batch_overwrites_the_same_keys_with_the_same_bytes(
    store: S3Store, pool: ThreadPoolExecutor
) -> None:
    message = GenerateMessage.from_json(body())
    run(store, pool, FakeGenerator(), message)
    first = {key: store.get_bytes(BUCKET, key) for key in message.keys}
    outcome, _ = run(store, pool, FakeGenerator(), message, attempt=2)
    assert {key: store.get_bytes(BUCKET, key) for key in message.keys} == first
    assert [line["status"] for line in outcome.lines] == ["ok"] * 3


def test_lines_keep_the_item_order_of_a_larger_batch(
    store: S3Store, pool: ThreadPoolExecutor
) -> None:
    items = [{"index": n, "seed": 1000 - n, "label": n % 3} for n in range(25)]
    message = GenerateMessage.from_json(body(items=items))
    outcome, _ = run(store, pool, FakeGenerator(), message)
    assert [line["key"] for line in outcome.lines] == message.keys
    assert [line["result"]["seed"] for line in outcome.lines] == [1000 - n for n in range(25)]
    assert [line["result"]["label"] for line in outcome.lines] == [
        ["zero", "one", "two"][n % 3] for n in range(25)
    ]


def test_a_label_beyond_the_model_labels_is_kept_as_a_number(
    store: S3Store, pool: ThreadPoolExecutor
) -> None:
    message = GenerateMessage.from_json(body(items=[{"index": 0, "seed": 1, "label": 5}]))
    outcome, _ = run(store, pool, FakeGenerator(labels=["a", "b"]), message)
    assert outcome.lines[0]["result"] == {"image": message.keys[0], "seed": 1, "label": 5}


def test_a_model_that_raises_makes_every_line_an_error(
    store: S3Store, pool: ThreadPoolExecutor
) -> None:
    model = FakeGenerator(fail=RuntimeError("out of memory"))
    message = GenerateMessage.from_json(body())
    outcome, _ = run(store, pool, model, message)
    assert [line["key"] for line in outcome.lines] == message.keys
    for line in outcome.lines:
        assert line["status"] == "error"
        assert line["output"] is None
        assert line["result"] is None
        assert line["error"]["type"] == "RuntimeError"
        assert line["error"]["message"] == f"could not generate with {MODEL}: out of memory"
        assert not store.exists(BUCKET, line["key"])
    assert outcome.stage_seconds["upload"] == 0.0


def test_a_model_that_cannot_be_loaded_makes_every_line_an_error(
    store: S3Store, pool: ThreadPoolExecutor
) -> None:
    def load_model(ref: str) -> Any:
        raise LookupError(f"no model {ref}")

    message = GenerateMessage.from_json(body())
    outcome = run_generate_batch(message, store=store, load_model=load_model, pool=pool, attempt=1)
    assert [line["status"] for line in outcome.lines] == ["error"] * 3
    assert all(line["error"]["type"] == "LookupError" for line in outcome.lines)
    assert all(f"no model {MODEL}" in line["error"]["message"] for line in outcome.lines)


class FailingStore(S3Store):
    """An S3Store whose uploads of some keys fail."""

    def __init__(self, client: Any, failing: set[str]) -> None:
        super().__init__(client)
        self.failing = failing

    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        if key in self.failing:
            raise StorageError(f"writing s3://{bucket}/{key}: SlowDown")
        super().put_bytes(bucket, key, data, content_type)


def test_an_upload_failure_fails_only_its_item(store: S3Store, pool: ThreadPoolExecutor) -> None:
    message = GenerateMessage.from_json(body())
    bad = message.keys[1]
    outcome, _ = run(FailingStore(store.client, {bad}), pool, FakeGenerator(), message)
    assert [line["key"] for line in outcome.lines] == message.keys
    assert [line["status"] for line in outcome.lines] == ["ok", "error", "ok"]
    failed = outcome.lines[1]
    assert failed["output"] is None and failed["result"] is None
    assert failed["error"] == {
        "type": "UploadError",
        "message": f"writing s3://{BUCKET}/{bad}: SlowDown",
    }
    assert not store.exists(BUCKET, bad)
    assert store.exists(BUCKET, message.keys[0]) and store.exists(BUCKET, message.keys[2])


def test_a_missing_output_bucket_fails_every_item(store: S3Store, pool: ThreadPoolExecutor) -> None:
    message = GenerateMessage.from_json(body(output="s3://no-such-bucket/out/"))
    outcome, _ = run(store, pool, FakeGenerator(), message)
    assert [line["status"] for line in outcome.lines] == ["error"] * 3
    assert all(line["error"]["type"] == "UploadError" for line in outcome.lines)
    assert all("bucket does not exist" in line["error"]["message"] for line in outcome.lines)


class BadEncoder(FakeGenerator):
    def encode_png(self, image: np.ndarray) -> bytes:
        if image[0, 0, 0] == 1:  # the item with label 1
            raise ValueError("cannot encode this image")
        return super().encode_png(image)


def test_an_encoding_failure_fails_only_its_item(store: S3Store, pool: ThreadPoolExecutor) -> None:
    message = GenerateMessage.from_json(body())
    outcome, _ = run(store, pool, BadEncoder(), message)
    assert [line["status"] for line in outcome.lines] == ["error", "ok", "ok"]


class ShortGenerator(FakeGenerator):
    def generate(self, seeds: list[int], labels: list[int | None]) -> list[np.ndarray]:
        return super().generate(seeds, labels)[:-1]


def test_a_model_returning_too_few_images_gives_error_lines(
    store: S3Store, pool: ThreadPoolExecutor
) -> None:
    message = GenerateMessage.from_json(body())
    outcome, _ = run(store, pool, ShortGenerator(), message)
    assert [line["key"] for line in outcome.lines] == message.keys
    assert all(line["status"] == "error" for line in outcome.lines)
