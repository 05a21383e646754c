"""worker.runtime.ModelCache: a version on disk is the version the registry holds.

Two registries (two buckets, or a registry rebuilt after a wipe) can both hold a
``digits@v1`` that are different models; a worker's disk cache, shared by every
registry it has ever served, must never answer one with the other's file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bucketvision.infra.s3 import S3Store
from bucketvision.models.registration import register_model
from bucketvision.models.registry import ModelRegistry
from bucketvision.worker.runtime import ModelCache

BUCKET = "unit-bucket"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """The seed CNN saved with 3 and with 5 classes."""
    pytest.importorskip("keras")
    from bucketvision.models.cnn import build_mnist_cnn

    directory = tmp_path_factory.mktemp("cache-models")
    paths = {}
    for classes in (3, 5):
        paths[classes] = str(directory / f"cnn{classes}.keras")
        build_mnist_cnn(num_classes=classes, conv_filters=(4, 4), dense_units=8).save(
            paths[classes]
        )
    return paths


def _cache(store: S3Store, root: str, cache_dir: Path) -> ModelCache:
    return ModelCache(ModelRegistry(store, root), store, str(cache_dir), 8, refresh_seconds=0)


def test_the_same_name_and_version_from_another_registry_is_loaded_afresh(
    store: S3Store, two_models: dict[int, str], tmp_path: Path
) -> None:
    for root, classes in (("s3://unit-bucket/first/", 3), ("s3://unit-bucket/second/", 5)):
        labels = [str(index) for index in range(classes)]
        register_model(
            ModelRegistry(store, root), "digits", task="classify", path=two_models[classes],
            labels=labels,
        )  # fmt: skip
    shared_disk = tmp_path / "cache"
    first = _cache(store, "s3://unit-bucket/first/", shared_disk).get("digits@v1")
    second = _cache(store, "s3://unit-bucket/second/", shared_disk).get("digits@v1")
    assert len(first.labels) == 3
    assert len(second.labels) == 5
    assert second.model.outputs[0].shape[-1] == 5


def test_a_model_file_that_differs_from_its_card_is_refused(
    store: S3Store, two_models: dict[int, str], tmp_path: Path
) -> None:
    from bucketvision.models.loading import ModelLoadError

    registry = ModelRegistry(store, "s3://unit-bucket/models/")
    register_model(registry, "digits", task="classify", path=two_models[3], labels=["a", "b", "c"])
    with open(two_models[5], "rb") as handle:
        store.put_bytes(BUCKET, "models/digits/v1/model.keras", handle.read(), "application/zip")
    with pytest.raises(ModelLoadError, match="sha256"):
        _cache(store, "s3://unit-bucket/models/", tmp_path / "cache").get("digits@v1")
