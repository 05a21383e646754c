"""The bench's two models, built, saved and registered (run as a subprocess).

``python -m tests.perf.bench_models --out DIR --models cnn,mobilenet``

* ``cnn``: the seed CNN (``models.cnn.build_mnist_cnn``) for 28x28 grey digits,
  untrained (throughput does not depend on the weights), preprocess ``unit``.
* ``mobilenet``: ``keras.applications.MobileNetV2(weights=None)`` at 224x224x3
  with 10 classes, preprocess ``symmetric``.

Both go into the registry with ``models.commands.register_model`` as classify
models and are promoted, each with its **stand-in** (``bench-cnn-stand-in``,
``bench-mobilenet-stand-in``): the same input, preprocess and labels, and a forward pass
that costs next to nothing (global average pooling and one dense layer), so a job run on it
spends the worker's CPU on what feeds a model and not on the model. The registry and S3
come from the environment (``BV_MODELS_URI``, ``BV_S3_ENDPOINT_URL``, ``AWS_*``). Prints
one JSON object: ``{key: {"ref", "path", "input_shape", "preprocess", "stand_in_ref"}}``.
This runs in its own process so that the bench's orchestrator never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPlan:
    key: str
    name: str
    input_shape: tuple[int, int, int]
    preprocess: str


PLANS = {
    "cnn": ModelPlan("cnn", "bench-cnn", (28, 28, 1), "unit"),
    "mobilenet": ModelPlan("mobilenet", "bench-mobilenet", (224, 224, 3), "symmetric"),
}
LABELS = [str(digit) for digit in range(10)]


def build(key: str) -> object:
    import keras

    from bucketvision.models.cnn import build_mnist_cnn

    keras.utils.set_random_seed(0)
    if key == "cnn":
        return build_mnist_cnn(PLANS["cnn"].input_shape, len(LABELS))
    if key == "mobilenet":
        return keras.applications.MobileNetV2(
            weights=None, input_shape=PLANS["mobilenet"].input_shape, classes=len(LABELS)
        )
    raise ValueError(f"unknown bench model {key!r}")


def build_stand_in(input_shape: tuple[int, int, int], classes: int) -> object:
    """A model with ``input_shape`` and ``classes`` whose forward pass costs next to nothing."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(classes, activation="softmax")(pooled)
    return keras.Model(inputs, outputs, name="stand_in")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="directory for the .keras files")
    parser.add_argument("--models", default="cnn,mobilenet")
    options = parser.parse_args()

    from bucketvision.infra.s3 import S3Store
    from bucketvision.infra.settings import Settings
    from bucketvision.models.registration import register_model
    from bucketvision.models.registry import ModelRegistry

    settings = Settings.from_env()
    registry = ModelRegistry(S3Store.from_settings(settings), settings.models_uri)
    made = {}

    def save_and_register(name: str, model: object, preprocess: str) -> tuple[str, str]:
        """Save ``model`` as ``name``, register and promote it; its path and reference."""
        path = os.path.join(options.out, f"{name}.keras")
        model.save(path)  # type: ignore[attr-defined]
        ref = register_model(
            registry,
            name,
            task="classify",
            path=path,
            labels=LABELS,
            preprocess=preprocess,
            promote=True,
        )
        return path, str(ref)

    for key in [part.strip() for part in options.models.split(",") if part.strip()]:
        plan = PLANS[key]
        path, ref = save_and_register(plan.name, build(key), plan.preprocess)
        _, stand_in_ref = save_and_register(
            f"{plan.name}-stand-in",
            build_stand_in(plan.input_shape, len(LABELS)),
            plan.preprocess,
        )
        made[key] = {
            "ref": ref,
            "path": path,
            "input_shape": list(plan.input_shape),
            "preprocess": plan.preprocess,
            "stand_in_ref": stand_in_ref,
        }
    print(json.dumps(made))


if __name__ == "__main__":
    main()
