"""The model registry in S3: versions, cards and the CURRENT pointer.

Layout under ``BV_MODELS_URI``::

    <name>/<version>/model.keras   the Keras 3 model, or
    <name>/<version>/model.tar.gz  a TensorFlow SavedModel (card ``format: savedmodel``)
    <name>/<version>/card.json     task, input shape, labels, preprocessing, metrics, status
    <name>/<version>/history.json  per-epoch training history (trained versions)
    <name>/<version>/*.png         training curves, sample grid (trained versions)
    <name>/<version>/shadow/<job>.json  a shadowed job's agreement with CURRENT (models.shadow)
    <name>/CURRENT                 the promoted version
    <name>/SHADOW                  the candidate running in CURRENT's shadow, if any

Versions are ``v1``, ``v2``, ... in registration order. This module never
imports TensorFlow; validating a model file is done by :mod:`models.loading`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import ObjectInfo, ObjectMissing, S3Store, S3Uri, parse_s3_uri
from bucketvision.infra.vocabulary import FAMILY_TASKS

STATUSES = ("candidate", "shadow", "promoted", "rejected")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^v(\d+)$")


class ModelNotFound(UserError):
    """The named model or version is not in the registry."""


class RegistryError(UserError):
    """A registry request that cannot be carried out as asked."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved ``name@version`` with its card."""

    name: str
    version: str
    card: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def parse_model_ref(text: str) -> tuple[str, str | None]:
    """Split ``NAME[@VERSION]``; accepts ``3`` or ``v3`` as the version."""
    name, _, version = text.partition("@")
    if not _NAME.match(name):
        raise RegistryError(
            f"{name!r} is not a valid model name (letters, digits, '.', '_', '-'; at most 64)"
        )
    if not version:
        return name, None
    if version.isdigit():
        version = f"v{version}"
    if not _VERSION.match(version):
        raise RegistryError(f"{version!r} is not a version; versions look like v1, v2, ...")
    return name, version


def model_filename(card: dict[str, Any]) -> str:
    """The file a version's model is stored in, by the card's ``format``."""
    return "model.tar.gz" if card.get("format") == "savedmodel" else "model.keras"


def file_sha256(path: str) -> str:
    """The hex SHA-256 of a file: a version's identity on workers' disks, checked on download."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelRegistry:
    """Reads and writes the registry through an :class:`S3Store`."""

    def __init__(self, store: S3Store, models_uri: str) -> None:
        self.store = store
        self.root: S3Uri = parse_s3_uri(models_uri)

    def _key(self, *parts: str) -> str:
        return self.root.key(*parts)

    def _listed(self, uri: S3Uri) -> list[ObjectInfo]:
        """The objects under ``uri``; none while the models bucket does not exist yet."""
        try:
            return list(self.store.list_objects(uri))
        except ObjectMissing:
            return []

    def names(self) -> list[str]:
        names: set[str] = set()
        for info in self._listed(self.root):
            relative = info.key[len(self.root.prefix) :]
            name = relative.split("/", 1)[0]
            if "/" in relative and _NAME.match(name):  # not _weights/ and other service folders
                names.add(name)
        return sorted(names)

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` that have a card, oldest first."""
        found: list[str] = []
        prefix = S3Uri(self.root.bucket, self._key(name) + "/")
        for info in self._listed(prefix):
            parts = info.key[len(prefix.prefix) :].split("/")
            if len(parts) == 2 and parts[1] == "card.json" and _VERSION.match(parts[0]):
                found.append(parts[0])
        return sorted(found, key=lambda version: int(version[1:]))

    def current(self, name: str) -> str | None:
        try:
            return self.store.get_text(self.root.bucket, self._key(name, "CURRENT")).strip()
        except ObjectMissing:
            return None

    def card(self, name: str, version: str) -> dict[str, Any]:
        try:
            card: dict[str, Any] = self.store.get_json(
                self.root.bucket, self._key(name, version, "card.json")
            )
        except ObjectMissing:
            known = ", ".join(self.versions(name)) or "none"
            raise ModelNotFound(
                f"model {name}@{version} is not in {self.root} (versions: {known})"
            ) from None
        return card

    def resolve(self, text: str, *, task: str | None = None) -> ModelRef:
        """Resolve ``NAME[@VERSION]`` to a pinned version; checks the task when given."""
        name, version = parse_model_ref(text)
        if version is None:
            version = self.current(name)
            if version is None:
                versions = self.versions(name)
                if versions:
                    raise ModelNotFound(
                        f"model {name!r} has versions {', '.join(versions)} but none is promoted;"
                        f" run `bucketvision models promote {name}@{versions[-1]}`"
                    )
                known = ", ".join(self.names()) or "none registered yet"
                raise ModelNotFound(
                    f"no model named {name!r} in {self.root} (models: {known}); train one"
                    " (`bucketvision train NAME --task T --dataset s3://...`) or register one"
                    " (`bucketvision models register NAME --task T --file model.keras`)"
                )
        card = self.card(name, version)
        if task is not None and card.get("task") != task:
            raise RegistryError(
                f"model {name}@{version} is a {card.get('task')!r} model, not {task!r}"
            )
        return ModelRef(name, version, card)

    def model_key(
        self, name: str, version: str, card: dict[str, Any] | None = None
    ) -> tuple[str, str]:
        """(bucket, key) of a version's model file (``model_filename`` of its card)."""
        filename = model_filename(card if card is not None else self.card(name, version))
        return self.root.bucket, self._key(name, version, filename)

    def next_version(self, name: str) -> str:
        versions = self.versions(name)
        return f"v{int(versions[-1][1:]) + 1}" if versions else "v1"

    def add_version(
        self,
        name: str,
        model_path: str,
        card_fields: dict[str, Any],
        *,
        promote: bool | None = None,
        status: str | None = None,
        files: dict[str, tuple[bytes, str]] | None = None,
    ) -> ModelRef:
        """Upload a model file, its card and extra ``files`` as the next version of ``name``.

        ``promote=None`` promotes the first version only; True or False forces it.
        ``status`` overrides the card status of a version that is not promoted
        ("rejected" when it failed the promotion gate). ``files`` maps a file name
        to (bytes, content type), e.g. ``history.json`` and the training plots.
        """
        if parse_model_ref(name)[1] is not None:
            raise RegistryError(f"{name!r}: give the model name without @version")
        if card_fields.get("task") not in FAMILY_TASKS:
            raise RegistryError(f"task must be one of {', '.join(FAMILY_TASKS)}")
        self.store.ensure_bucket(self.root.bucket)
        parent = self.current(name)
        version = self.next_version(name)
        should_promote = parent is None if promote is None else promote
        card = {
            "name": name,
            "version": version,
            "metrics": {},
            "dataset": None,
            "trained_at": None,
            "registered_at": now_iso(),
            "parent": parent,
            **card_fields,
            "sha256": file_sha256(model_path),
            "status": "promoted" if should_promote else (status or "candidate"),
            "files": sorted(files or {}),
        }
        if should_promote:
            card["promoted_at"] = card["registered_at"]
        if card["status"] not in STATUSES:
            raise RegistryError(f"status must be one of {', '.join(STATUSES)}")
        for filename, (body, content_type) in (files or {}).items():
            self.store.put_bytes(
                self.root.bucket, self._key(name, version, filename), body, content_type
            )
        self.store.upload_file(model_path, *self.model_key(name, version, card))
        self.store.put_json(self.root.bucket, self._key(name, version, "card.json"), card)
        if should_promote:
            self._set_current(name, version)
        return ModelRef(name, version, card)

    def promote(self, name: str, version: str, card: dict[str, Any] | None = None) -> ModelRef:
        """Point CURRENT at ``version`` (by hand, or after the promotion gate); ``card``: its
        card as the caller just changed it, saved once with the promotion (not read again)."""
        card = dict(card) if card is not None else self.card(name, version)
        card["status"] = "promoted"
        card["promoted_at"] = now_iso()
        self.save_card(name, version, card)
        self._set_current(name, version)
        return ModelRef(name, version, card)

    def save_card(self, name: str, version: str, card: dict[str, Any]) -> None:
        """Replace a version's card (its status, a shadow run's results)."""
        self.store.put_json(self.root.bucket, self._key(name, version, "card.json"), card)

    def rollback(self, name: str) -> ModelRef:
        """Move CURRENT back to the newest earlier version that was ever promoted."""
        current = self.current(name)
        if current is None:
            raise ModelNotFound(f"model {name!r} has no CURRENT version to roll back from")
        earlier = [v for v in self.versions(name) if int(v[1:]) < int(current[1:])]
        for version in reversed(earlier):
            card = self.card(name, version)
            if card.get("promoted_at") or card.get("status") == "promoted":
                rolled_back = self.card(name, current)
                rolled_back["status"] = "candidate"
                rolled_back["rolled_back_at"] = now_iso()
                self.save_card(name, current, rolled_back)
                return self.promote(name, version)
        raise RegistryError(
            f"{name}@{current} is the first promoted version; there is nothing to roll back to"
            f" (promote another version with `bucketvision models promote {name}@V`)"
        )

    def weights_uri(self, digest: str, filename: str) -> str:
        """Where the CLI puts a local pretrained-weights file for workers to read."""
        return f"s3://{self.root.bucket}/{self._key('_weights', digest, filename)}"

    def file_uri(self, name: str, version: str, filename: str) -> str:
        """The s3:// URI of a file stored beside a version (plots, history)."""
        return f"s3://{self.root.bucket}/{self._key(name, version, filename)}"

    def _set_current(self, name: str, version: str) -> None:
        self.store.put_bytes(
            self.root.bucket, self._key(name, "CURRENT"), version.encode(), "text/plain"
        )

    def summary(self) -> list[dict[str, Any]]:
        """One row per model: name, task, CURRENT and its versions."""
        rows = []
        for name in self.names():
            versions = self.versions(name)
            if not versions:
                continue
            current = self.current(name)
            card = self.card(name, current or versions[-1])
            rows.append(
                {
                    "name": name,
                    "task": card.get("task"),
                    "current": current,
                    "versions": versions,
                    "metrics": card.get("metrics", {}),
                    "main_metric": card.get("main_metric"),
                }
            )
        return rows
