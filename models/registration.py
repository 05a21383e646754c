"""Adding a user's model to the registry after validating it, and reading a card back.

``register_model`` takes a ``.keras`` file or a TensorFlow SavedModel (a
directory, or a ``.tar.gz``/``.zip`` of one; local or ``s3://``), builds its
serving card (:mod:`bucketvision.models.cards`), and runs one forward pass on a
blank input through the same served class a worker will use. Only a model that
passes is uploaded, and its card is written last, so a refusal leaves nothing
in the registry. The CLI formatting lives in :mod:`bucketvision.producer.model_views`.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from bucketvision.infra.s3 import S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.vocabulary import FAMILY_TASKS
from bucketvision.models.cards import CARD_FIELDS, generator_card, image_card
from bucketvision.models.registry import (
    ModelRef,
    ModelRegistry,
    RegistryError,
    parse_model_ref,
)


def read_labels(labels: str | None, labels_file: str | None) -> list[str] | None:
    """Labels from ``--labels a,b,c`` or a file with one label per line (or a JSON list).

    None when neither is given (the card file may hold them, or the model needs none).
    """
    if labels and labels_file:
        raise RegistryError("give the class labels with one of --labels or --labels-file, not both")
    if not labels and not labels_file:
        return None
    if labels:
        found = [label.strip() for label in labels.split(",") if label.strip()]
    elif labels_file is not None:
        if not os.path.exists(labels_file):
            raise RegistryError(f"--labels-file {labels_file}: no such file")
        with open(labels_file, encoding="utf-8") as handle:
            text = handle.read()
        found = [line.strip() for line in text.splitlines() if line.strip()]
        if text.lstrip().startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                found = [str(label) for label in parsed]
    if len(set(found)) != len(found):
        raise RegistryError("the labels contain duplicates")
    return found


def read_card_file(path: str | None) -> dict[str, Any]:
    """The fields of ``--card card.json`` (the flags' names, e.g. ``input_size``)."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            fields = json.load(handle)
    except FileNotFoundError:
        raise RegistryError(f"--card {path}: no such file") from None
    except json.JSONDecodeError as error:
        raise RegistryError(f"--card {path}: not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise RegistryError(f"--card {path}: expected a JSON object of card fields")
    return fields


def _fetch(store: S3Store, source: str, scratch: str) -> str:
    """A local path for ``source``: itself, or a download of an s3:// file or folder."""
    if not source.startswith("s3://"):
        if not os.path.exists(source):
            raise RegistryError(f"--file {source}: no such file or directory")
        return source
    uri = parse_s3_uri(source, directory=False)
    name = uri.prefix.rstrip("/").rsplit("/", 1)[-1] or "model"
    if not uri.prefix.endswith("/") and store.exists(uri.bucket, uri.prefix):
        local = os.path.join(scratch, name)
        store.download_file(uri.bucket, uri.prefix, local)
        return local
    folder = S3Uri(uri.bucket, uri.prefix.rstrip("/") + "/")
    local = os.path.join(scratch, "download", name)
    found = 0
    for info in store.list_objects(folder):
        target = os.path.join(local, *info.key[len(folder.prefix) :].split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        store.download_file(uri.bucket, info.key, target)
        found += 1
    if not found:
        raise RegistryError(f"--file {source}: no such object or folder")
    return local


def _loaded(
    task: str, path: str, fields: dict[str, Any], scratch: str, unsafe: bool, name: str
) -> tuple[Any, dict[str, Any], str]:
    """(callable model, card, file to store) for a .keras file or a SavedModel."""
    from bucketvision.models import loading, saved_models

    build = generator_card if task == "generate" else None
    if saved_models.is_saved_model(path):
        directory = saved_models.unpack(path, os.path.join(scratch, "unpacked"))
        signature_name = str(fields.get("signature") or "serving_default")
        signature = saved_models.load_signature(directory, signature_name)
        inputs, outputs = signature.inputs, signature.outputs
        card = (
            build(fields, inputs, outputs) if build else image_card(task, fields, inputs, outputs)
        )
        card.update(format="savedmodel", signature=signature_name)
        archive = os.path.join(scratch, "model.tar.gz")
        saved_models.pack(directory, archive)
        return loading.bind_signature(signature, card), card, archive
    if not path.endswith(".keras"):
        raise RegistryError(
            f"--file {path}: give a .keras file, or a TensorFlow SavedModel: a directory or a"
            " .tar.gz/.zip of one"
        )
    model = loading.load_keras_model(path, allow_unsafe=unsafe, name=name)
    inputs, outputs = loading.describe_keras(model)
    if len(outputs) != 1:
        raise RegistryError(
            f"the Keras model has {len(outputs)} outputs; export it as a SavedModel"
            " (model.export(path)) and register that, naming the output with --output-name"
        )
    card = build(fields, inputs, outputs) if build else image_card(task, fields, inputs, outputs)
    card["format"] = "keras"
    return model, card, path


def _probe(task: str, model: Any, card: dict[str, Any]) -> None:
    """One forward pass on a blank input through the worker's served class; fills image_shape."""
    from bucketvision.models.families import family

    try:
        served = family(task).resolve("serve")(model, card, 1)
        served.warm_up()
        if task == "generate":
            image = served.generate([0], [0] if card.get("conditional") else None)[0]
            served.check_output(image)
            card["image_shape"] = [int(v) for v in image.shape]
            return
        blank = np.zeros((1, *served.size[::-1], len(served.mode)), dtype=np.uint8)
        served.check_output(served.infer(blank)[0])
    except RegistryError:
        raise
    except Exception as error:  # shape or dtype errors from TensorFlow, ValueError from checks
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:400]
        raise RegistryError(f"the model does not fit its card: {first}") from None


def register_model(
    registry: ModelRegistry,
    name: str,
    *,
    task: str,
    path: str,
    labels: list[str] | None = None,
    preprocess: str | None = None,
    fields: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    promote: bool | None = None,
    allow_unsafe: bool = False,
) -> ModelRef:
    """Validate the model at ``path`` against its card, then add it as a version.

    ``fields`` are the card's fields (``cards.CARD_FIELDS``); ``labels`` and
    ``preprocess`` override theirs. A Keras file loads in safe mode unless
    ``allow_unsafe``; such a model is recorded as unsafe on its card and workers still
    refuse it unless the operator lists its name in ``BV_UNSAFE_MODELS``.
    """
    if parse_model_ref(name)[1] is not None:
        raise RegistryError(f"{name!r}: give the model name without @version")
    if task not in FAMILY_TASKS:
        raise RegistryError(f"--task must be one of {', '.join(FAMILY_TASKS)}")
    given = dict(fields or {})
    unknown = sorted(set(given) - set(CARD_FIELDS))
    if unknown:
        raise RegistryError(
            f"unknown card fields {', '.join(unknown)}; known: {', '.join(CARD_FIELDS)}"
        )
    given.update(
        {key: value for key, value in (("labels", labels), ("preprocess", preprocess)) if value}
    )
    with tempfile.TemporaryDirectory(prefix="bv-register-") as scratch:
        local = _fetch(registry.store, path, scratch)
        model, card, stored = _loaded(task, local, given, scratch, allow_unsafe, name)
        _probe(task, model, card)
        card.update(metrics=metrics or {}, **({"unsafe": True} if allow_unsafe else {}))
        return registry.add_version(name, stored, card, promote=promote)


def show_model(registry: ModelRegistry, reference: str) -> dict[str, Any]:
    """The card of ``NAME[@V]`` plus where its files are."""
    ref = registry.resolve(reference)
    bucket, key = registry.model_key(ref.name, ref.version)
    files = {
        filename: registry.file_uri(ref.name, ref.version, filename)
        for filename in ref.card.get("files", [])
    }
    return {
        **ref.card,
        "current": registry.current(ref.name),
        "versions": registry.versions(ref.name),
        "model_file": f"s3://{bucket}/{key}",
        "file_uris": files,
    }
