"""The bench's two models, built, saved and registered (run as a subprocess).

``python -m tests.perf.bench_models --out DIR --models cnn,mobilenet``

* ``cnn``: the seed CNN (``models.cnn.build_mnist_cnn``) for 28x28 grey digits,
  untrained (throughput does not depend on the weights), preprocess ``unit``.
* ``mobilenet``: ``keras.applications.MobileNetV2(weights=None)`` at 224x224x3
  with 10 classes, preprocess ``symmetric``.

Both go into the registry with ``models.commands.register_model`` as classify
models and are promoted. The registry and S3 come from the environment
(``BV_MODELS_URI``, ``BV_S3_ENDPOINT_URL``, ``AWS_*``). Prints one JSON object:
``{key: {"ref", "path", "input_shape", "preprocess"}}``. This runs in its own
process so that the bench's orchestrator never imports TensorFlow.
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
    for key in [part.strip() for part in options.models.split(",") if part.strip()]:
        plan = PLANS[key]
        path = os.path.join(options.out, f"{plan.name}.keras")
        build(key).save(path)  # type: ignore[attr-defined]
        ref = register_model(
            registry,
            plan.name,
            task="classify",
            path=path,
            labels=LABELS,
            preprocess=plan.preprocess,
            promote=True,
        )
        made[key] = {
            "ref": str(ref),
            "path": path,
            "input_shape": list(plan.input_shape),
            "preprocess": plan.preprocess,
        }
    print(json.dumps(made))


if __name__ == "__main__":
    main()
