"""Adding a user's model file to the registry after validating it, and reading a card back.

The CLI formatting of these lives in :mod:`bucketvision.producer.model_views`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from bucketvision.models.pixels import PREPROCESS_MODES
from bucketvision.models.registry import (
    ModelRef,
    ModelRegistry,
    RegistryError,
    parse_model_ref,
)


def read_labels(labels: str | None, labels_file: str | None) -> list[str]:
    """Labels from ``--labels a,b,c`` or a file with one label per line (or a JSON list)."""
    if bool(labels) == bool(labels_file):
        raise RegistryError("give the class labels with exactly one of --labels or --labels-file")
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


def register_model(
    registry: ModelRegistry,
    name: str,
    *,
    task: str,
    path: str,
    labels: list[str],
    preprocess: str = "unit",
    metrics: dict[str, Any] | None = None,
    dataset: str | None = None,
    trained_at: str | None = None,
    promote: bool | None = None,
    allow_unsafe: bool = False,
) -> ModelRef:
    """Validate ``path`` (in Keras safe mode unless ``allow_unsafe``), then add it as a version.

    A model that needs unsafe loading is recorded as such on its card; workers still
    refuse it unless the operator lists its name in ``BV_UNSAFE_MODELS``.
    """
    from bucketvision.models.loading import describe_model, load_keras_model

    parse_model_ref(name)
    if preprocess not in PREPROCESS_MODES:
        raise RegistryError(f"--preprocess must be one of {', '.join(PREPROCESS_MODES)}")
    if not os.path.exists(path):
        raise RegistryError(f"--file {path}: no such file")
    if task != "classify":
        raise RegistryError(f"registering {task!r} models is not supported yet; use classify")
    shape = describe_model(load_keras_model(path, allow_unsafe=allow_unsafe, name=name))
    if shape.outputs != len(labels):
        raise RegistryError(
            f"the model has {shape.outputs} outputs but {len(labels)} labels were given"
        )
    card = {
        "task": task,
        "input_shape": [shape.height, shape.width, shape.channels],
        "labels": labels,
        "preprocess": preprocess,
        "metrics": metrics or {},
        "dataset": dataset,
        "trained_at": trained_at,
        "format": "keras",
        **({"unsafe": True} if allow_unsafe else {}),
    }
    return registry.add_version(name, path, card, promote=promote)


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
