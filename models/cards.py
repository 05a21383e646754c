"""The serving card of a model a user registers: how to feed it and how to read its outputs.

``bucketvision models register`` takes the card's fields from flags or from
``--card card.json`` (the same names), fills the rest from the model's own
inputs and outputs, and refuses what cannot fit (an input that is not an image,
an output name the model does not have, a dynamic size nobody gave). The card
is what workers read, for a Keras file and a SavedModel alike. Nothing here
imports TensorFlow: the model is described by :class:`TensorInfo` values.

Fields (docs/bring-your-own-model.md has the user's version):
``input_size`` "HxW", ``channels``, ``input_dtype``, ``preprocess``, ``resize``,
``labels``, ``outputs``, ``input_name``, ``output_name``, ``signature``;
detect adds ``score_threshold``, ``nms_iou``, ``max_detections``; generate takes
``latent_dim``, ``latent_input``, ``label_input``, ``output_range``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bucketvision.models.imaging import RESIZE_MODES
from bucketvision.models.pixels import PREPROCESS_MODES, RGB_ONLY_MODES
from bucketvision.models.registry import RegistryError
from bucketvision.models.saved_models import TFOD_OUTPUTS_ALL, TensorInfo

IMAGE_TASKS = ("classify", "detect", "segment")
OUTPUT_KINDS: dict[str, tuple[str, ...]] = {
    "classify": ("probabilities", "logits"),
    "detect": ("native", "tfod"),
    "segment": ("probabilities", "logits", "class-map"),
}
DEFAULT_RESIZE = {"classify": "stretch", "detect": "letterbox", "segment": "letterbox"}
# A center crop cuts off the edges that boxes and masks must still cover.
TASK_RESIZE = {"classify": RESIZE_MODES, "detect": RESIZE_MODES[:2], "segment": RESIZE_MODES[:2]}
INPUT_DTYPES = ("float32", "uint8")
OUTPUT_RANGES = ("symmetric", "unit")
TFOD_OUTPUTS = TFOD_OUTPUTS_ALL[:3]  # required; num_detections is optional
DETECT_FIELDS = ("score_threshold", "nms_iou", "max_detections", "stride")
CARD_FIELDS = (
    "input_size",
    "channels",
    "input_dtype",
    "preprocess",
    "resize",
    "labels",
    "outputs",
    "input_name",
    "output_name",
    "signature",
    "latent_dim",
    "latent_input",
    "label_input",
    "output_range",
    "review_below",
    *DETECT_FIELDS,
)
_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_input_size(value: Any) -> tuple[int, int]:
    """``"224x224"`` (height x width) or ``[224, 224]`` as (height, width)."""
    if isinstance(value, list | tuple) and len(value) in (2, 3):
        height, width = int(value[0]), int(value[1])
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise RegistryError(f"--input-size {value!r}: give it as HxW, e.g. 224x224")
        height, width = int(match[1]), int(match[2])
    if not (1 <= height <= 8192 and 1 <= width <= 8192):
        raise RegistryError(f"--input-size {value!r}: each side must be 1..8192 pixels")
    return height, width


def _choice(fields: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = str(fields.get(name) or default)
    if value not in allowed:
        flag = "--" + name.replace("_", "-")
        raise RegistryError(f"{flag} {value!r}: must be one of {', '.join(allowed)}")
    return value


def _named(
    kind: str, tensors: Mapping[str, TensorInfo], wanted: str | None, flag: str
) -> TensorInfo:
    """The tensor called ``wanted``, or the only one; a clear refusal otherwise."""
    names = ", ".join(tensors) or "none"
    if wanted:
        if wanted not in tensors:
            raise RegistryError(f"the model has no {kind} named {wanted!r} (it has: {names})")
        return tensors[wanted]
    if len(tensors) != 1:
        raise RegistryError(f"the model has {len(tensors)} {kind}s ({names}); pick one with {flag}")
    return next(iter(tensors.values()))


def _image_input(fields: Mapping[str, Any], info: TensorInfo) -> tuple[list[int], str]:
    """The card's ``input_shape`` [H, W, C] and ``input_dtype`` from the fields and ``info``."""
    shape = info.shape
    if len(shape) != 4:
        raise RegistryError(
            f"the model input {info.name!r} has shape {_shown(shape)}: an image model takes"
            " (batch, height, width, channels); flatten inside the model, not before it"
        )
    channels = int(fields.get("channels") or shape[3] or 3)
    if channels not in (1, 3) or (shape[3] is not None and shape[3] != channels):
        raise RegistryError(
            f"the model input takes {shape[3]} channels and the card says {channels};"
            " images are fed as 1 (grey) or 3 (RGB) channels"
        )
    if fields.get("input_size"):
        height, width = parse_input_size(fields["input_size"])
        for given, own, side in ((height, shape[1], "height"), (width, shape[2], "width")):
            if own is not None and own != given:
                raise RegistryError(f"--input-size {side} {given} differs from the model's {own}")
    elif shape[1] is None or shape[2] is None:
        raise RegistryError(
            f"the model's input size is dynamic {_shown(shape)}; give --input-size HxW"
        )
    else:
        height, width = int(shape[1]), int(shape[2])
    dtype = "uint8" if info.dtype == "uint8" else "float32"
    return [height, width, channels], _choice(fields, "input_dtype", INPUT_DTYPES, dtype)


def _shown(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def image_card(
    task: str,
    fields: Mapping[str, Any],
    inputs: Mapping[str, TensorInfo],
    outputs: Mapping[str, TensorInfo],
) -> dict[str, Any]:
    """The serving card of a classify, detect or segment model (see the module docstring)."""
    info = _named("input", inputs, fields.get("input_name"), "--input-name")
    input_shape, input_dtype = _image_input(fields, info)
    preprocess = _choice(
        fields, "preprocess", PREPROCESS_MODES, "raw" if input_dtype == "uint8" else "unit"
    )
    if input_dtype == "uint8" and preprocess != "raw":
        raise RegistryError("a uint8 input takes the pixels as they are: use --preprocess raw")
    if preprocess in RGB_ONLY_MODES and input_shape[2] != 3:
        raise RegistryError(f"--preprocess {preprocess} is defined for RGB (3-channel) input")
    outputs_kind = _choice(fields, "outputs", OUTPUT_KINDS[task], OUTPUT_KINDS[task][0])
    card: dict[str, Any] = {
        "task": task,
        "input_name": info.name,
        "input_shape": input_shape,
        "input_dtype": input_dtype,
        "preprocess": preprocess,
        "resize": _choice(fields, "resize", TASK_RESIZE[task], DEFAULT_RESIZE[task]),
        "labels": _labels(fields),
        "outputs": outputs_kind,
    }
    if outputs_kind == "tfod":
        missing = [name for name in TFOD_OUTPUTS if name not in outputs]
        if missing:
            raise RegistryError(
                f"--outputs tfod needs the outputs {', '.join(TFOD_OUTPUTS)}; the model has no"
                f" {', '.join(missing)} (it has: {', '.join(outputs) or 'none'})"
            )
    else:
        card["output_name"] = _named(
            "output", outputs, fields.get("output_name"), "--output-name"
        ).name
    card.update({key: fields[key] for key in DETECT_FIELDS if task == "detect" and key in fields})
    if fields.get("review_below") is not None:
        below = float(fields["review_below"])
        if not 0.0 < below <= 1.0:
            raise RegistryError(f"--review-below must be a probability in (0, 1], not {below}")
        card["review_below"] = below  # jobs route items below it to review (docs/review.md)
    return card


def _labels(fields: Mapping[str, Any]) -> list[str]:
    labels = [str(label) for label in fields.get("labels") or []]
    if not labels:
        raise RegistryError("give the class labels with --labels a,b,c or --labels-file")
    return labels


def generator_card(
    fields: Mapping[str, Any],
    inputs: Mapping[str, TensorInfo],
    outputs: Mapping[str, TensorInfo],
) -> dict[str, Any]:
    """The serving card of a generator: a latent input, maybe a class-label input."""
    latent_name, label_name = fields.get("latent_input"), fields.get("label_input")
    if not latent_name:
        floats = [info.name for info in inputs.values() if info.dtype.startswith(("float", "half"))]
        latent_name = floats[0] if len(floats) == 1 else None
    latent = _named("input", inputs, latent_name, "--latent-input")
    if len(latent.shape) != 2:
        raise RegistryError(
            f"the latent input {latent.name!r} has shape {_shown(latent.shape)};"
            " a generator takes (batch, latent_dim)"
        )
    latent_dim = int(fields.get("latent_dim") or latent.shape[1] or 0)
    if latent_dim < 1 or (latent.shape[1] is not None and latent.shape[1] != latent_dim):
        raise RegistryError(
            f"--latent-dim {fields.get('latent_dim')} does not fit the latent input"
            f" {_shown(latent.shape)}; give the size of the latent vector"
        )
    others = [name for name in inputs if name != latent.name]
    if label_name is None and len(others) == 1:
        label_name = others[0]
    if label_name is not None and label_name not in others:
        raise RegistryError(f"the model has no class-label input {label_name!r}")
    card: dict[str, Any] = {
        "task": "generate",
        "latent_input": latent.name,
        "latent_dim": latent_dim,
        "conditional": label_name is not None,
        "labels": _labels(fields) if label_name is not None else list(fields.get("labels") or []),
        "output_range": _choice(fields, "output_range", OUTPUT_RANGES, "symmetric"),
        "output_name": _named("output", outputs, fields.get("output_name"), "--output-name").name,
    }
    if label_name is not None:
        card["label_input"] = label_name
    return card
