"""models.registry: statuses, extra files, rollback and file URIs; models.commands show/format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bucketvision.infra.s3 import S3Store
from bucketvision.models.registration import show_model
from bucketvision.models.registry import ModelNotFound, ModelRegistry, RegistryError
from bucketvision.producer.model_views import format_model_card

BUCKET = "unit-bucket"
MODELS_URI = f"s3://{BUCKET}/models/"
CARD = {"task": "classify", "labels": ["a", "b"], "input_shape": [28, 28, 1]}
FILES = {
    "history.json": (b'{"loss": [1.0, 0.5]}', "application/json"),
    "training_curves.png": (b"\x89PNG curves", "image/png"),
}


@pytest.fixture
def store(shared_store: S3Store) -> S3Store:
    """conftest's module-wide moto S3, emptied for this test."""
    return shared_store


@pytest.fixture
def registry(store: S3Store) -> ModelRegistry:
    return ModelRegistry(store, MODELS_URI)


@pytest.fixture
def model_file(tmp_path: Path) -> str:
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04 not really a model")
    return str(path)


def card_in_s3(store: S3Store, name: str, version: str) -> dict[str, Any]:
    card: dict[str, Any] = store.get_json(BUCKET, f"models/{name}/{version}/card.json")
    return card


def statuses(store: S3Store, name: str, *versions: str) -> list[str]:
    return [card_in_s3(store, name, version)["status"] for version in versions]


# --- add_version: status, files, promoted_at ---------------------------------------------------


def test_a_promoted_first_version_records_when(registry: ModelRegistry, model_file: str) -> None:
    ref = registry.add_version("digits", model_file, dict(CARD))
    assert ref.card["status"] == "promoted"
    assert ref.card["promoted_at"] == ref.card["registered_at"]
    assert ref.card["files"] == []


def test_a_candidate_has_no_promoted_at(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    ref = registry.add_version("digits", model_file, dict(CARD))
    assert ref.card["status"] == "candidate"
    assert "promoted_at" not in ref.card
    assert "promoted_at" not in card_in_s3(store, "digits", "v2")


def test_files_are_stored_under_the_version_and_listed_in_the_card(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    files = {**FILES, "samples.png": (b"\x89PNG samples", "image/png")}
    ref = registry.add_version("gen", model_file, {"task": "generate"}, files=files)
    assert ref.card["files"] == ["history.json", "samples.png", "training_curves.png"]
    assert card_in_s3(store, "gen", "v1")["files"] == ref.card["files"]
    for filename, (body, content_type) in files.items():
        key = f"models/gen/v1/{filename}"
        assert store.get_bytes(BUCKET, key) == body
        head = store.client.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentType"] == content_type
    assert store.exists(BUCKET, "models/gen/v1/model.keras")
    # the extra files are not mistaken for versions
    assert registry.versions("gen") == ["v1"]


def test_a_rejected_version(registry: ModelRegistry, store: S3Store, model_file: str) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    ref = registry.add_version(
        "digits", model_file, dict(CARD), promote=False, status="rejected", files=FILES
    )
    assert (ref.version, ref.card["status"]) == ("v2", "rejected")
    assert ref.card["parent"] == "v1"
    assert "promoted_at" not in ref.card
    assert card_in_s3(store, "digits", "v2")["status"] == "rejected"
    assert card_in_s3(store, "digits", "v2")["files"] == sorted(FILES)
    assert store.get_bytes(BUCKET, "models/digits/v2/history.json") == FILES["history.json"][0]
    assert registry.current("digits") == "v1"


def test_promotion_wins_over_a_status(registry: ModelRegistry, model_file: str) -> None:
    first = registry.add_version("digits", model_file, dict(CARD), status="rejected")
    assert first.card["status"] == "promoted"  # the first version is promoted regardless
    forced = registry.add_version("digits", model_file, dict(CARD), promote=True, status="rejected")
    assert forced.card["status"] == "promoted"
    assert registry.current("digits") == "v2"


def test_the_card_cannot_override_status_or_files(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    ref = registry.add_version(
        "digits",
        model_file,
        {**CARD, "status": "promoted", "files": ["fake.png"]},
        promote=False,
        status="rejected",
    )
    assert ref.card["status"] == "rejected"
    assert ref.card["files"] == []


def test_an_unknown_status_writes_nothing(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    statuses = "candidate, shadow, promoted, rejected"
    with pytest.raises(RegistryError, match=f"status must be one of {statuses}"):
        registry.add_version("digits", model_file, dict(CARD), status="archived", files=FILES)
    assert registry.versions("digits") == ["v1"]
    assert not store.exists(BUCKET, "models/digits/v2/model.keras")
    assert not store.exists(BUCKET, "models/digits/v2/history.json")


# --- rollback ----------------------------------------------------------------------------------


def test_rollback_to_the_previous_promoted_version_skips_rejected_ones(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))  # v1 promoted
    registry.add_version("digits", model_file, dict(CARD), promote=False, status="rejected")
    registry.add_version("digits", model_file, dict(CARD), promote=False)  # v3 candidate
    registry.add_version("digits", model_file, dict(CARD), promote=True)  # v4 promoted
    assert registry.current("digits") == "v4"

    ref = registry.rollback("digits")

    assert str(ref) == "digits@v1"
    assert ref.card["status"] == "promoted"
    assert registry.current("digits") == "v1"
    assert registry.resolve("digits").version == "v1"
    assert statuses(store, "digits", "v1", "v2", "v3", "v4") == [
        "promoted",
        "rejected",
        "candidate",
        "candidate",
    ]
    rolled_back = card_in_s3(store, "digits", "v4")
    assert "rolled_back_at" in rolled_back
    assert "promoted_at" in rolled_back  # it was promoted once


def test_rollback_steps_back_one_promotion_at_a_time(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))  # v1
    registry.add_version("digits", model_file, dict(CARD), promote=True)  # v2
    registry.add_version("digits", model_file, dict(CARD), promote=False)  # v3
    registry.promote("digits", "v3")  # promoted by hand later
    assert registry.rollback("digits").version == "v2"
    assert statuses(store, "digits", "v2", "v3") == ["promoted", "candidate"]
    # v2 was rolled back in turn; v1 is the only earlier promoted version
    assert registry.rollback("digits").version == "v1"
    assert statuses(store, "digits", "v1", "v2", "v3") == ["promoted", "candidate", "candidate"]
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback("digits")
    assert registry.current("digits") == "v1"


def test_a_rolled_back_version_that_was_promoted_once_can_be_returned_to(
    registry: ModelRegistry, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))  # v1
    registry.add_version("digits", model_file, dict(CARD), promote=True)  # v2
    registry.add_version("digits", model_file, dict(CARD), promote=True)  # v3
    assert registry.rollback("digits").version == "v2"
    registry.promote("digits", "v3")  # forward again
    assert registry.rollback("digits").version == "v2"  # v2 is 'candidate' again but was promoted


def test_rollback_of_the_first_version(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    registry.add_version("digits", model_file, dict(CARD), promote=False, status="rejected")
    with pytest.raises(RegistryError) as caught:
        registry.rollback("digits")
    message = str(caught.value)
    assert "digits@v1 is the first promoted version" in message
    assert "bucketvision models promote digits@V" in message
    assert registry.current("digits") == "v1"
    assert statuses(store, "digits", "v1") == ["promoted"]


def test_rollback_with_only_unpromoted_earlier_versions(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD), promote=False)  # v1 candidate
    registry.add_version("digits", model_file, dict(CARD), promote=False, status="rejected")
    registry.add_version("digits", model_file, dict(CARD), promote=True)  # v3
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback("digits")
    assert registry.current("digits") == "v3"
    assert statuses(store, "digits", "v3") == ["promoted"]


def test_rollback_without_current(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("digits", model_file, dict(CARD), promote=False)
    with pytest.raises(ModelNotFound, match="no CURRENT version to roll back from"):
        registry.rollback("digits")
    with pytest.raises(ModelNotFound, match="no CURRENT"):
        registry.rollback("unknown")


# --- file_uri ----------------------------------------------------------------------------------


def test_file_uri(registry: ModelRegistry) -> None:
    assert (
        registry.file_uri("digits", "v2", "training_curves.png")
        == f"s3://{BUCKET}/models/digits/v2/training_curves.png"
    )


@pytest.mark.parametrize(
    ("models_uri", "expected"),
    [
        ("s3://bkt/a/b", "s3://bkt/a/b/m/v1/history.json"),
        ("s3://bkt/a/b/", "s3://bkt/a/b/m/v1/history.json"),
        ("s3://bkt", "s3://bkt/m/v1/history.json"),
    ],
)
def test_file_uri_under_any_models_uri(store: S3Store, models_uri: str, expected: str) -> None:
    assert ModelRegistry(store, models_uri).file_uri("m", "v1", "history.json") == expected


# --- models.commands: show_model and format_model_card ------------------------------------------


TRAINED = {
    "task": "classify",
    "labels": ["cat", "dog"],
    "input_shape": [64, 64, 3],
    "preprocess": "unit",
    "architecture": "small-cnn",
    "metrics": {
        "accuracy": 0.912345,
        "loss": 0.3,
        "macro_f1": 0.9,
        "confusion": [[5, 1], [0, 6]],  # not a scalar: left out
    },
    "main_metric": "accuracy",
    "dataset": "s3://data/pets/",
    "dataset_counts": {"train": 90, "val": 10, "test": 12},
    "evaluated_on": "test",
    "trained_at": "2026-01-02T03:04:05+00:00",
    "training_seconds": 42.5,
    "epochs_run": 7,
    "decision": "promoted: the first version of this model",
}


def test_show_model_lists_the_file_uris(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("pets", model_file, dict(TRAINED), files=FILES)
    registry.add_version("pets", model_file, dict(CARD))  # v2: no files
    shown = show_model(registry, "pets")
    assert shown["version"] == "v1"
    assert shown["file_uris"] == {
        "history.json": f"s3://{BUCKET}/models/pets/v1/history.json",
        "training_curves.png": f"s3://{BUCKET}/models/pets/v1/training_curves.png",
    }
    assert shown["model_file"] == f"s3://{BUCKET}/models/pets/v1/model.keras"
    assert shown["versions"] == ["v1", "v2"]
    assert show_model(registry, "pets@v2")["file_uris"] == {}


def test_format_model_card_of_a_trained_version(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("pets", model_file, dict(TRAINED), files=FILES)
    text = format_model_card(show_model(registry, "pets"))
    lines = text.splitlines()
    assert lines[0].startswith("pets@v1  classify  promoted")
    assert "(CURRENT v1; versions v1)" in lines[0]
    metrics = next(line for line in lines if line.strip().startswith("metrics"))
    assert "*accuracy=0.9123" in metrics  # the main metric is starred
    assert "loss=0.3" in metrics and "*loss" not in metrics
    assert "macro_f1=0.9" in metrics and "*macro_f1" not in metrics
    assert "confusion" not in metrics
    assert "(on test)" in metrics
    assert "cat, dog" in text
    assert "s3://data/pets/" in text
    assert "small-cnn" in text
    assert "in 42.5 s, 7 epochs" in text
    assert "decision   promoted: the first version of this model" in text
    assert f"s3://{BUCKET}/models/pets/v1/model.keras" in text
    assert f"s3://{BUCKET}/models/pets/v1/history.json" in text
    assert f"s3://{BUCKET}/models/pets/v1/training_curves.png" in text


def test_format_model_card_of_a_hand_registered_version(
    registry: ModelRegistry, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    text = format_model_card(show_model(registry, "digits"))
    assert text.startswith("digits@v1  classify  promoted")
    assert "metrics" not in text
    assert "decision" not in text
    assert "labels     a, b" in text
    assert f"model      s3://{BUCKET}/models/digits/v1/model.keras" in text


def test_format_model_card_of_an_old_card(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    """A card written before training existed: no files, metrics, status or main metric."""
    store.put_json(BUCKET, "models/old/v1/card.json", {"name": "old", "version": "v1"})
    store.put_bytes(BUCKET, "models/old/CURRENT", b"v1")
    shown = show_model(registry, "old")
    assert shown["file_uris"] == {}
    text = format_model_card(shown)
    assert text.startswith("old@v1")
    assert "labels     -" in text


def test_format_model_card_with_metrics_but_no_main_metric() -> None:
    shown = {
        "name": "m",
        "version": "v2",
        "versions": ["v1", "v2"],
        "metrics": {"accuracy": 0.5, "note": "text is skipped"},
        "model_file": "s3://b/models/m/v2/model.keras",
        "file_uris": {"a_rather_long_name.png": "s3://b/models/m/v2/a_rather_long_name.png"},
    }
    text = format_model_card(shown)
    assert "accuracy=0.5" in text
    assert "*" not in text
    assert "note" not in text
    assert "(CURRENT -;" in text
    assert "a_rather_long_name.png s3://b/models/m/v2/a_rather_long_name.png" in text
