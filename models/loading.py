"""Loading models (Keras files and SavedModels) safely, as their card says to call them.

Keras files load with Keras safe mode, so a file cannot run arbitrary Python (a
``Lambda`` layer holding bytecode is refused). An operator who trusts a model
that needs one names it in ``BV_UNSAFE_MODELS``; nothing else lifts safe mode.
A SavedModel is called through the serving signature its card names
(:mod:`bucketvision.models.saved_models`). TensorFlow is imported only when a
function here is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.models.saved_models import (
    TFOD_OUTPUTS_ALL,
    SignatureModel,
    TensorInfo,
    load_signature,
    unpack_stored,
)

FORMATS = ("keras", "savedmodel")


class ModelLoadError(UserError):
    """A model file could not be loaded or does not fit its card."""


@dataclass(frozen=True)
class ModelShape:
    """What a model takes and gives: input (height, width, channels) and output size."""

    height: int
    width: int
    channels: int
    outputs: int


def load_keras_model(path: str, *, allow_unsafe: bool = False, name: str | None = None) -> Any:
    """Load ``path`` uncompiled, in safe mode unless ``allow_unsafe``; or ModelLoadError."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not allow_unsafe)
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            allow = f"BV_UNSAFE_MODELS={name}" if name else "BV_UNSAFE_MODELS=<model name>"
            raise ModelLoadError(
                f"{path}: refused in Keras safe mode (the model holds Python code, e.g. a Lambda"
                " layer); rebuild it with standard or registered custom layers, or, if you"
                f" trust its author, set {allow} on the workers"
            ) from None
        raise ModelLoadError(f"{path}: not a loadable Keras model: {error}") from None
    except Exception as error:
        raise ModelLoadError(f"{path}: cannot load: {type(error).__name__}: {error}") from None


def describe_model(model: Any) -> ModelShape:
    """Read the single image input and output size from a loaded model."""
    if len(model.inputs) != 1:
        raise ModelLoadError(f"the model has {len(model.inputs)} inputs; one image input expected")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[3] not in (1, 3) or shape[1] is None or shape[2] is None:
        raise ModelLoadError(
            f"the model input shape is {shape}; expected (batch, height, width, 1 or 3)"
        )
    output_shape = tuple(model.outputs[0].shape)
    outputs = int(output_shape[-1]) if output_shape[-1] is not None else 0
    return ModelShape(int(shape[1]), int(shape[2]), int(shape[3]), outputs)


def _tensor(tensor: Any) -> TensorInfo:
    dtype = getattr(tensor.dtype, "name", tensor.dtype)
    return TensorInfo(str(tensor.name), tuple(tensor.shape), str(dtype))


def describe_keras(model: Any) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
    """A Keras model's inputs and outputs by name, as a card is built from them."""
    inputs = {info.name: info for info in map(_tensor, model.inputs)}
    outputs = {info.name: info for info in map(_tensor, model.outputs)}
    return inputs, outputs


def bind_signature(signature: Any, card: dict[str, Any]) -> SignatureModel:
    """The signature as the card calls it: which inputs it feeds, which outputs it reads."""
    if card["task"] == "generate":
        names = [card["latent_input"]] + ([card["label_input"]] if card.get("conditional") else [])
        return SignatureModel(signature, names, card["output_name"])
    if card.get("outputs") == "tfod":
        return SignatureModel(signature, [card["input_name"]], TFOD_OUTPUTS_ALL)
    return SignatureModel(signature, [card["input_name"]], card["output_name"])


def load_for_card(
    path: str, card: dict[str, Any], *, allow_unsafe: bool = False, name: str | None = None
) -> Any:
    """Load a registry file (``registry.model_filename(card)``) as the family will call it."""
    if card.get("format") != "savedmodel":
        return load_keras_model(path, allow_unsafe=allow_unsafe, name=name)
    directory = unpack_stored(path, path[: -len(".tar.gz")] + ".savedmodel")
    return bind_signature(load_signature(directory, card.get("signature", "serving_default")), card)
