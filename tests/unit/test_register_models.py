"""Registering users' models of every family: SavedModels, cards, and each refusal.

Over in-process moto. Every refusal is checked for its message and for an empty
registry afterwards: a model that does not fit its card leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import S3Store
from bucketvision.models.registration import register_model
from bucketvision.models.registry import ModelRegistry, RegistryError
from tests import user_models

pytest.importorskip("tensorflow")

BUCKET = "unit-bucket"


@pytest.fixture
def registry(store: S3Store) -> ModelRegistry:
    return ModelRegistry(store, f"s3://{BUCKET}/models/")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SavedModels (and archives of them) of every family, built once for the module."""
    root = tmp_path_factory.mktemp("saved")
    made = {
        "classifier": user_models.export_keras(user_models.classifier(), root / "classifier"),
        "segmenter": user_models.export_keras(user_models.segmenter(), root / "segmenter"),
        "detector": user_models.tfod_detector(root / "detector"),
        "generator": root / "generator",
    }
    user_models.generator(made["generator"])
    made["classifier_tgz"] = root / "classifier.tar.gz"
    with tarfile.open(made["classifier_tgz"], "w:gz") as archive:
        archive.add(made["classifier"], arcname="exported")  # one folder down, as users pack
    made["classifier_zip"] = Path(
        shutil.make_archive(str(root / "classifier"), "zip", made["classifier"])
    )
    import keras

    flat = keras.Sequential([keras.Input((784,)), keras.layers.Dense(5, activation="softmax")])
    made["flat"] = root / "flat.keras"
    flat.save(made["flat"])
    return made


def _register(registry: ModelRegistry, task: str, path: Path, **fields: Any) -> Any:
    labels = fields.pop("labels", None)
    return register_model(registry, "mine", task=task, path=str(path), labels=labels, fields=fields)


@pytest.mark.parametrize("source", ["classifier", "classifier_tgz", "classifier_zip"])
def test_a_savedmodel_classifier_registers_from_a_folder_or_an_archive(
    registry: ModelRegistry, store: S3Store, saved: dict[str, Path], source: str
) -> None:
    ref = _register(
        registry,
        "classify",
        saved[source],
        labels=user_models.CLASSIFIER_LABELS,
        preprocess="imagenet",
    )
    card = ref.card
    assert card["format"] == "savedmodel" and card["signature"] == "serving_default"
    assert card["input_shape"] == [96, 96, 3] and card["preprocess"] == "imagenet"
    assert card["resize"] == "stretch" and card["outputs"] == "probabilities"
    assert store.exists(BUCKET, "models/mine/v1/model.tar.gz")


def test_every_family_registers_with_its_card(
    registry: ModelRegistry, saved: dict[str, Path]
) -> None:
    detector = _register(
        registry,
        "detect",
        saved["detector"],
        labels=user_models.DETECTOR_LABELS,
        outputs="tfod",
        input_size="128x160",
    )
    assert detector.card["input_shape"] == [128, 160, 3] and detector.card["input_dtype"] == "uint8"
    assert detector.card["preprocess"] == "raw" and detector.card["resize"] == "letterbox"
    segmenter = register_model(
        registry,
        "seg",
        task="segment",
        path=str(saved["segmenter"]),
        labels=user_models.SEGMENTER_LABELS,
        fields={"outputs": "logits"},
    )
    assert segmenter.card["outputs"] == "logits" and segmenter.card["input_shape"] == [64, 64, 3]
    generator = register_model(
        registry,
        "gen",
        task="generate",
        path=str(saved["generator"]),
        fields={"output_range": "unit"},
    )
    assert generator.card["latent_dim"] == 16 and generator.card["image_shape"] == [16, 16, 3]
    assert generator.card["conditional"] is False and generator.card["output_range"] == "unit"


REFUSALS = [
    ("classify", "classifier", {"labels": ["a", "b"]}, "5 outputs but 2 labels"),
    (
        "classify",
        "classifier",
        {"labels": user_models.CLASSIFIER_LABELS, "output_name": "scores"},
        "no output named 'scores' (it has: output_0)",
    ),
    ("classify", "flat", {"labels": user_models.CLASSIFIER_LABELS}, "has shape (None, 784)"),
    (
        "classify",
        "classifier",
        {"labels": user_models.CLASSIFIER_LABELS, "signature": "predict"},
        "no signature 'predict' (it has: serve, serving_default)",
    ),
    ("classify", "corrupt", {"labels": ["a"]}, "not a readable tar.gz archive"),
    ("classify", "empty_dir", {"labels": ["a"]}, "no saved_model.pb"),
    ("detect", "detector", {"labels": ["a"], "outputs": "tfod"}, "dynamic (1, None, None, 3)"),
    (
        "detect",
        "classifier",
        {"labels": ["a"], "outputs": "tfod"},
        "no detection_boxes, detection_scores, detection_classes",
    ),
    (
        "segment",
        "segmenter",
        {"labels": ["background", "x"], "outputs": "logits"},
        "expects [64, 64, 2]",
    ),
    ("segment", "segmenter", {"labels": ["a", "b", "c"], "outputs": "class-map"}, "class map"),
    (
        "classify",
        "classifier",
        {"labels": user_models.CLASSIFIER_LABELS, "preprocess": "imagenet", "channels": 1},
        "channels",
    ),
    ("segment", "segmenter", {"labels": ["a", "b", "c"], "resize": "center-crop"}, "--resize"),
    ("generate", "generator", {"latent_dim": 8}, "--latent-dim 8 does not fit"),
]


@pytest.mark.parametrize(("task", "source", "fields", "message"), REFUSALS)
def test_a_model_that_does_not_fit_its_card_is_refused_and_nothing_is_left(
    registry: ModelRegistry,
    store: S3Store,
    saved: dict[str, Path],
    tmp_path: Path,
    task: str,
    source: str,
    fields: dict[str, Any],
    message: str,
) -> None:
    if source == "corrupt":
        path = tmp_path / "model.tar.gz"
        path.write_bytes(b"\x1f\x8b\x08\x00 this is no gzip stream at all")
    elif source == "empty_dir":
        path = tmp_path / "folder"
        path.mkdir()
    else:
        path = saved[source]
    with pytest.raises(UserError, match=re.escape(message)):
        _register(registry, task, path, **dict(fields))
    assert registry.names() == []
    assert list(store.list_objects(registry.root)) == []


def test_a_card_may_set_the_review_threshold_its_jobs_default_to(
    registry: ModelRegistry, saved: dict[str, Path]
) -> None:
    labels = user_models.CLASSIFIER_LABELS
    with pytest.raises(RegistryError, match=r"--review-below must be a probability in \(0, 1\]"):
        _register(registry, "classify", saved["classifier"], labels=labels, review_below=1.5)
    assert registry.names() == []
    ref = _register(registry, "classify", saved["classifier"], labels=labels, review_below=0.8)
    assert ref.card["review_below"] == 0.8


def test_unknown_card_fields_are_refused(registry: ModelRegistry, saved: dict[str, Path]) -> None:
    with pytest.raises(RegistryError, match="unknown card fields input_sise"):
        _register(registry, "classify", saved["classifier"], labels=["a"], input_sise="9x9")
    assert registry.names() == []


def test_a_savedmodel_registers_from_s3_as_an_archive_or_a_folder(
    registry: ModelRegistry, store: S3Store, saved: dict[str, Path]
) -> None:
    store.upload_file(str(saved["classifier_tgz"]), BUCKET, "in/classifier.tar.gz")
    folder = saved["classifier"]
    for path in folder.rglob("*"):
        if path.is_file():
            store.upload_file(str(path), BUCKET, f"in/exported/{path.relative_to(folder)}")
    labels = user_models.CLASSIFIER_LABELS
    for source in (f"s3://{BUCKET}/in/classifier.tar.gz", f"s3://{BUCKET}/in/exported/"):
        ref = register_model(registry, "mine", task="classify", path=source, labels=labels)
        assert ref.card["format"] == "savedmodel"
    assert registry.versions("mine") == ["v1", "v2"]
    with pytest.raises(RegistryError, match="no such object or folder"):
        register_model(registry, "mine", task="classify", path=f"s3://{BUCKET}/nope", labels=labels)


def test_a_conditional_savedmodel_generator_is_served_as_its_card_says(
    registry: ModelRegistry, store: S3Store, tmp_path: Path
) -> None:
    from bucketvision.models.generation.serve import ServedGenerator, latent_for_seed
    from bucketvision.models.loading import load_for_card

    module = user_models.conditional_generator(tmp_path / "cgan")
    with pytest.raises(RegistryError, match="--labels"):
        register_model(registry, "cgan", task="generate", path=str(tmp_path / "cgan"))
    assert registry.names() == []
    ref = register_model(
        registry, "cgan", task="generate", path=str(tmp_path / "cgan"), labels=["a", "b", "c"]
    )
    card = ref.card
    assert card["conditional"] and card["label_input"] == "class_id"
    assert card["latent_input"] == "noise" and card["image_shape"] == [8, 8, 1]
    # What a worker does: fetch the stored archive, load it through the card, generate.
    bucket, key = registry.model_key("cgan", ref.version, card)
    local = tmp_path / "cache" / "model.tar.gz"
    local.parent.mkdir()
    store.download_file(bucket, key, str(local))
    served = ServedGenerator(load_for_card(str(local), card), card, forward_batch=4)
    images = served.generate([7, 7, 7], [0, 1, 2])
    for label, image in enumerate(images):
        direct = module.sample(latent_for_seed(7, 8)[None], np.array([label], np.int32))["images"]
        expected = np.clip(np.round((np.asarray(direct[0]) + 1.0) * 127.5), 0, 255)
        assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(images[0], images[2])
