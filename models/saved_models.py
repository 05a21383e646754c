"""TensorFlow SavedModels: unpacking the files a user brings and calling a serving signature.

A SavedModel arrives as a directory, or as a ``.tar.gz``/``.tgz``/``.zip`` of one:
what ``keras.Model.export()``, ``tf.saved_model.save`` and the TF Object Detection
API write. The registry stores it as one normalised ``model.tar.gz``; workers
unpack it once into their model cache. A signature is called with named tensors
and answers a dict; :class:`SignatureModel` hides that behind the
``model(x, training=False)`` call the served families make of a Keras model, so
serving code is the same for both formats.

A SavedModel holds TensorFlow graphs, not Python: loading one runs no user code,
though its graph may use any TensorFlow op (file reads included), so register
only models from people you trust with the workers' data.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bucketvision.infra.errors import UserError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")
# What the TF Object Detection API's serving signature answers (num_detections may be absent).
TFOD_OUTPUTS_ALL = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
_MARKER = "saved_model.pb"


class SavedModelError(UserError):
    """A SavedModel that cannot be read or does not offer what its card asks for."""


@dataclass(frozen=True)
class TensorInfo:
    """A named input or output of a model: shape (None where dynamic) and dtype name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


def is_saved_model(path: str) -> bool:
    """Whether ``path`` names a SavedModel source: a directory or one of ARCHIVE_SUFFIXES."""
    return os.path.isdir(path) or path.lower().endswith(ARCHIVE_SUFFIXES)


def unpack(path: str, into: str) -> str:
    """The directory holding ``saved_model.pb`` from a directory or archive at ``path``.

    An archive is extracted under ``into`` (members that would land outside it, links
    and devices are refused). The SavedModel may sit at the top or one folder down.
    """
    if os.path.isdir(path):
        return _find_saved_model(path, path)
    os.makedirs(into, exist_ok=True)
    try:
        if path.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    target = os.path.realpath(os.path.join(into, member))
                    if not target.startswith(os.path.realpath(into) + os.sep):
                        raise SavedModelError(f"{path}: the member {member!r} escapes the archive")
                archive.extractall(into)  # nosec B202: every member checked above
        else:
            with tarfile.open(path, "r:gz") as archive:
                archive.extractall(into, filter="data")  # nosec B202: the data filter
    except SavedModelError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise SavedModelError(
            f"{path}: not a readable {_kind(path)} archive ({type(error).__name__}: {error});"
            " give a SavedModel directory, or a .tar.gz or .zip of one"
        ) from None
    return _find_saved_model(into, path)


def _kind(path: str) -> str:
    return "zip" if path.lower().endswith(".zip") else "tar.gz"


def _find_saved_model(directory: str, shown: str) -> str:
    if os.path.isfile(os.path.join(directory, _MARKER)):
        return directory
    entries = [os.path.join(directory, entry) for entry in sorted(os.listdir(directory))]
    nested = [entry for entry in entries if os.path.isfile(os.path.join(entry, _MARKER))]
    if len(nested) == 1:
        return nested[0]
    raise SavedModelError(
        f"{shown}: no {_MARKER} at its top or one folder down; is it a TensorFlow SavedModel"
        " (what model.export() or tf.saved_model.save write)?"
    )


def pack(directory: str, archive: str) -> None:
    """Write the SavedModel in ``directory`` as a ``.tar.gz`` with it at the top."""
    with tarfile.open(archive, "w:gz") as packed:
        for entry in sorted(os.listdir(directory)):
            packed.add(os.path.join(directory, entry), arcname=entry)


def unpack_stored(archive: str, directory: str) -> str:
    """Unpack a registry ``model.tar.gz`` into ``directory`` once (atomically, by rename)."""
    if os.path.isfile(os.path.join(directory, _MARKER)):
        return directory
    partial = f"{directory}.{os.getpid()}.part"
    shutil.rmtree(partial, ignore_errors=True)
    found = unpack(archive, partial)
    if found != partial:
        raise SavedModelError(f"{archive}: the stored SavedModel is not at the archive's top")
    try:
        os.replace(partial, directory)  # fails when another process got there first
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not os.path.isfile(os.path.join(directory, _MARKER)):
            raise
    return directory


@dataclass(frozen=True)
class Signature:
    """A loaded serving signature and what it takes and gives."""

    function: Any
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    owner: Any  # the loaded SavedModel: the function's variables live as long as it does


def _info(name: str, spec: Any) -> TensorInfo:
    dims = spec.shape.as_list() if spec.shape.rank is not None else []
    return TensorInfo(name, tuple(dims), spec.dtype.name)


def load_signature(directory: str, name: str) -> Signature:
    """Load the SavedModel in ``directory`` and its signature ``name``."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(directory)
    except Exception as error:
        raise SavedModelError(
            f"cannot load the SavedModel: {type(error).__name__}: {str(error)[:300]}"
        ) from None
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if name not in signatures:
        known = ", ".join(sorted(signatures)) or "none"
        raise SavedModelError(
            f"the SavedModel has no signature {name!r} (it has: {known}); pick one with"
            " --signature, or export the model with a serving signature"
        )
    function = signatures[name]
    _, keyword_specs = function.structured_input_signature
    outputs = function.structured_outputs
    return Signature(
        function,
        {key: _info(key, spec) for key, spec in keyword_specs.items()},
        {key: _info(key, spec) for key, spec in outputs.items()},
        loaded,
    )


class SignatureModel:
    """A signature called like a Keras model: ``model(x or [x, y], training=False)``.

    ``input_names`` say which named input each positional value feeds (cast to the
    input's dtype); ``outputs`` is one output name (a tensor is returned) or several
    (a dict of them is returned). ``fixed_batch`` is the batch size the signature
    insists on (the TF Object Detection API exports take one image), else None.
    """

    def __init__(
        self, signature: Signature, input_names: Sequence[str], outputs: str | Sequence[str]
    ) -> None:
        self.signature = signature
        self.input_names = list(input_names)
        self.outputs = outputs if isinstance(outputs, str) else tuple(outputs)
        first = signature.inputs[self.input_names[0]].shape
        self.fixed_batch: int | None = first[0] if first else None

    def __call__(self, inputs: Any, training: bool = False) -> Any:
        import tensorflow as tf

        values = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        feeds = {}
        for name, value in zip(self.input_names, values, strict=True):
            info = self.signature.inputs[name]
            value = tf.cast(value, info.dtype)
            if len(info.shape) and len(info.shape) != len(value.shape):
                value = tf.reshape(value, [-1 if d is None else d for d in info.shape])
            feeds[name] = value
        answer = self.signature.function(**feeds)
        if isinstance(self.outputs, str):
            return answer[self.outputs]
        return {name: answer[name] for name in self.outputs if name in answer}
