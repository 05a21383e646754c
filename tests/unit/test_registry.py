"""models.registry over in-process moto; models.commands labels and registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bucketvision.infra.s3 import S3Store
from bucketvision.models.registration import read_labels, register_model, show_model
from bucketvision.models.registry import (
    ModelNotFound,
    ModelRegistry,
    RegistryError,
    parse_model_ref,
)
from bucketvision.producer.model_views import format_model_list

BUCKET = "unit-bucket"
MODELS_URI = f"s3://{BUCKET}/models/"
CARD = {"task": "classify", "labels": ["a", "b"], "input_shape": [28, 28, 1]}

# --- references --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("digits", ("digits", None)),
        ("digits@3", ("digits", "v3")),
        ("digits@v3", ("digits", "v3")),
        ("digits@v12", ("digits", "v12")),
        ("shapes-detector.v2_b@1", ("shapes-detector.v2_b", "v1")),
        ("A" * 64, ("A" * 64, None)),
    ],
)
def test_parse_model_ref(text: str, expected: tuple[str, str | None]) -> None:
    assert parse_model_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "@3",
        "-digits",
        ".hidden",
        "../digits",
        "digits/v1",
        "dig its",
        "A" * 65,
        "digits@x",
        "digits@v",
        "digits@vv3",
        "digits@-1",
        "digits@3.0",
        "digits@v3/../v1",
        "digits@1@2",
    ],
)
def test_parse_model_ref_refuses_bad_names_and_versions(text: str) -> None:
    with pytest.raises(RegistryError):
        parse_model_ref(text)


# --- the registry over moto --------------------------------------------------------------------


@pytest.fixture
def registry(store: S3Store) -> ModelRegistry:
    return ModelRegistry(store, MODELS_URI)


@pytest.fixture
def model_file(tmp_path: Path) -> str:
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04 not really a model; the registry does not look inside")
    return str(path)


def current_pointer(store: S3Store, name: str) -> str:
    return store.get_text(BUCKET, f"models/{name}/CURRENT")


def test_first_version_is_promoted_by_default(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    ref = registry.add_version("digits", model_file, dict(CARD))
    assert str(ref) == "digits@v1"
    assert ref.card["status"] == "promoted"
    assert ref.card["parent"] is None
    assert current_pointer(store, "digits") == "v1"
    assert store.exists(BUCKET, "models/digits/v1/model.keras")
    card = store.get_json(BUCKET, "models/digits/v1/card.json")
    assert card == ref.card
    assert card["task"] == "classify"
    assert card["labels"] == ["a", "b"]
    assert (card["name"], card["version"]) == ("digits", "v1")


def test_later_versions_are_candidates_unless_promoted(
    registry: ModelRegistry, store: S3Store, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    v2 = registry.add_version("digits", model_file, dict(CARD))
    assert v2.version == "v2"
    assert v2.card["status"] == "candidate"
    assert v2.card["parent"] == "v1"
    assert current_pointer(store, "digits") == "v1"
    assert registry.resolve("digits").version == "v1"

    v3 = registry.add_version("digits", model_file, dict(CARD), promote=True)
    assert v3.card["status"] == "promoted"
    assert current_pointer(store, "digits") == "v3"
    assert registry.resolve("digits").version == "v3"


def test_a_first_version_can_be_registered_unpromoted(
    registry: ModelRegistry, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD), promote=False)
    assert registry.current("digits") is None
    with pytest.raises(ModelNotFound, match=r"bucketvision models promote digits@v1"):
        registry.resolve("digits")


def test_card_fields_cannot_override_the_status(registry: ModelRegistry, model_file: str) -> None:
    ref = registry.add_version("digits", model_file, {**CARD, "status": "promoted"}, promote=False)
    assert ref.card["status"] == "candidate"


def test_add_version_refuses_an_unknown_task(registry: ModelRegistry, model_file: str) -> None:
    with pytest.raises(RegistryError, match="task must be one of"):
        registry.add_version("digits", model_file, {"task": "translate"})
    with pytest.raises(RegistryError):
        registry.add_version("bad name", model_file, dict(CARD))


def test_add_version_refuses_a_name_with_a_version(
    registry: ModelRegistry, model_file: str
) -> None:
    with pytest.raises(RegistryError):
        registry.add_version("digits@3", model_file, dict(CARD))


def test_versions_sort_numerically(registry: ModelRegistry, model_file: str) -> None:
    for _ in range(11):
        registry.add_version("digits", model_file, dict(CARD))
    assert registry.versions("digits") == [f"v{n}" for n in range(1, 12)]
    assert registry.next_version("digits") == "v12"


def test_resolve_pins_an_explicit_version(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    registry.add_version("digits", model_file, dict(CARD))
    assert str(registry.resolve("digits@2")) == "digits@v2"
    assert str(registry.resolve("digits@v1")) == "digits@v1"
    assert registry.resolve("digits@v2").card["status"] == "candidate"


def test_resolve_unknown_name_names_the_register_command(
    registry: ModelRegistry, model_file: str
) -> None:
    registry.add_version("other", model_file, dict(CARD))
    with pytest.raises(ModelNotFound) as caught:
        registry.resolve("digits")
    message = str(caught.value)
    assert "bucketvision models register" in message
    assert "'digits'" in message
    assert "other" in message  # lists what is registered


def test_resolve_in_an_empty_registry(registry: ModelRegistry) -> None:
    with pytest.raises(ModelNotFound, match="bucketvision models register"):
        registry.resolve("digits", task="classify")


def test_resolve_unknown_version_lists_the_known_ones(
    registry: ModelRegistry, model_file: str
) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    with pytest.raises(ModelNotFound, match=r"digits@v9.*versions: v1"):
        registry.resolve("digits@9")


def test_resolve_checks_the_task(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    assert registry.resolve("digits", task="classify").version == "v1"
    with pytest.raises(RegistryError, match=r"'classify' model, not 'detect'"):
        registry.resolve("digits", task="detect")


def test_promote_moves_current(registry: ModelRegistry, store: S3Store, model_file: str) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    registry.add_version("digits", model_file, dict(CARD))
    ref = registry.promote("digits", "v2")
    assert ref.card["status"] == "promoted"
    assert "promoted_at" in ref.card
    assert current_pointer(store, "digits") == "v2"
    assert registry.resolve("digits").version == "v2"
    assert store.get_json(BUCKET, "models/digits/v2/card.json")["status"] == "promoted"
    # promoting back (a rollback) moves it again
    registry.promote("digits", "v1")
    assert registry.resolve("digits").version == "v1"


def test_promote_of_an_unknown_version(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    with pytest.raises(ModelNotFound):
        registry.promote("digits", "v7")
    assert registry.current("digits") == "v1"


def test_names_and_summary(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("digits", model_file, {**CARD, "metrics": {"accuracy": 0.98}})
    registry.add_version("digits", model_file, dict(CARD))
    registry.add_version("shapes-detector", model_file, {"task": "detect"})
    assert registry.names() == ["digits", "shapes-detector"]
    rows = {row["name"]: row for row in registry.summary()}
    assert rows["digits"]["current"] == "v1"
    assert rows["digits"]["versions"] == ["v1", "v2"]
    assert rows["digits"]["metrics"] == {"accuracy": 0.98}
    assert rows["shapes-detector"]["task"] == "detect"
    text = format_model_list(registry.summary())
    assert "digits" in text and "accuracy=0.98" in text
    assert "no models registered" in format_model_list([])


def test_show_model(registry: ModelRegistry, model_file: str) -> None:
    registry.add_version("digits", model_file, dict(CARD))
    registry.add_version("digits", model_file, dict(CARD))
    shown = show_model(registry, "digits")
    assert shown["version"] == "v1"
    assert shown["current"] == "v1"
    assert shown["versions"] == ["v1", "v2"]
    assert shown["model_file"] == f"s3://{BUCKET}/models/digits/v1/model.keras"
    assert show_model(registry, "digits@2")["version"] == "v2"


# --- read_labels -------------------------------------------------------------------------------


def test_labels_from_a_comma_list() -> None:
    assert read_labels("cat, dog,,bird ", None) == ["cat", "dog", "bird"]
    assert read_labels("0,1,2,3,4,5,6,7,8,9", None) == [str(n) for n in range(10)]


def test_labels_from_a_file_of_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\n  dog  \n\nbird\n", encoding="utf-8")
    assert read_labels(None, str(path)) == ["cat", "dog", "bird"]


def test_labels_from_a_json_list(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(["chat", "chien", 3]), encoding="utf-8")
    assert read_labels(None, str(path)) == ["chat", "chien", "3"]
    spaced = tmp_path / "spaced.json"
    spaced.write_text('\n  ["a", "b"]\n', encoding="utf-8")
    assert read_labels(None, str(spaced)) == ["a", "b"]


def test_labels_come_from_at_most_one_source() -> None:
    with pytest.raises(RegistryError, match="one of --labels or --labels-file, not both"):
        read_labels("a,b", "x.txt")
    # Neither: the card file may hold them, or the model (a generator) needs none.
    assert read_labels(None, None) is None and read_labels("", None) is None


def test_labels_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no such file"):
        read_labels(None, str(tmp_path / "missing.txt"))


def test_duplicate_labels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="duplicates"):
        read_labels("cat,dog, cat", None)
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\ncat\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="duplicates"):
        read_labels(None, str(path))


def test_a_line_file_whose_first_label_starts_with_a_bracket(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("[background]\ncat\ndog\n", encoding="utf-8")
    assert read_labels(None, str(path)) == ["[background]", "cat", "dog"]


def test_register_model_checks_before_loading(registry: ModelRegistry, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(RegistryError, match="no such file"):
        register_model(registry, "digits", task="classify", path=missing, labels=["a"])
    present = tmp_path / "m.onnx"
    present.write_bytes(b"x")
    with pytest.raises(RegistryError, match=r"give a \.keras file, or a TensorFlow SavedModel"):
        register_model(registry, "digits", task="classify", path=str(present), labels=["a"])
    with pytest.raises(RegistryError, match="--task must be one of"):
        register_model(registry, "digits", task="caption", path=str(present), labels=["a"])
    assert registry.names() == []


# --- TensorFlow: registering a real Keras model, and safe mode ----------------------------------


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The seed CNN and a model holding a Lambda layer, saved as .keras files."""
    keras = pytest.importorskip("keras")
    from bucketvision.models.cnn import build_mnist_cnn

    directory = tmp_path_factory.mktemp("keras")
    cnn = str(directory / "seed_cnn.keras")
    build_mnist_cnn().save(cnn)
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    lam = str(directory / "lambda.keras")
    keras.Model(inputs, outputs).save(lam)
    return {"cnn": cnn, "lambda": lam}


def test_register_the_seed_cnn(
    registry: ModelRegistry, store: S3Store, keras_files: dict[str, str]
) -> None:
    labels = [str(digit) for digit in range(10)]
    ref = register_model(
        registry, "digits", task="classify", path=keras_files["cnn"], labels=labels
    )
    assert str(ref) == "digits@v1"
    card: dict[str, Any] = store.get_json(BUCKET, "models/digits/v1/card.json")
    assert card["input_shape"] == [28, 28, 1]
    assert card["labels"] == labels
    assert card["task"] == "classify"
    assert card["preprocess"] == "unit"
    assert card["format"] == "keras"
    assert card["status"] == "promoted"
    with open(keras_files["cnn"], "rb") as handle:
        assert store.get_bytes(BUCKET, "models/digits/v1/model.keras") == handle.read()

    with pytest.raises(RegistryError, match="10 outputs but 3 labels"):
        register_model(
            registry, "digits", task="classify", path=keras_files["cnn"], labels=["a", "b", "c"]
        )
    assert registry.versions("digits") == ["v1"]


def test_a_lambda_layer_is_refused_in_safe_mode(keras_files: dict[str, str]) -> None:
    from bucketvision.models.loading import ModelLoadError, load_keras_model

    with pytest.raises(ModelLoadError, match="safe mode"):
        load_keras_model(keras_files["lambda"])
    # the same loader accepts a plain model
    assert load_keras_model(keras_files["cnn"]).count_params() > 0


def test_a_file_that_is_not_a_model_is_a_load_error(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from bucketvision.models.loading import ModelLoadError, load_keras_model

    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(ModelLoadError, match=str(junk)):
        load_keras_model(str(junk))
