"""Train the segmenter with its DEFAULTS on synthetic scenes and score it on held-out seeds.

``.venv/bin/python -m tests.perf.tune_segmentation`` trains on
``make_scenes(N, seed=1)`` (90 % train, 10 % validation), evaluates on 500 scenes
of seed 2026 (never used for tuning) and of seed 7777, prints miou,
pixel_accuracy, per-class IoU and the training seconds, and writes a
side-by-side (image | truth | prediction) PNG to ``/tmp/seg_sample.png``.
``--set key=value`` overrides a recipe value (``options.extra`` or
epochs/batch_size/learning_rate) for experiments; the acceptance figure is the
run without ``--set``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
from PIL import Image

from bucketvision.models.family import DatasetInfo, TrainOptions
from bucketvision.models.scenes import Scenes, make_scenes

TRAIN_SCENES = 2000
HELD_OUT = ((2026, 500), (7777, 500))
PALETTE = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 60], [70, 110, 240]], dtype=np.uint8)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _dataset(scenes: Scenes, start: int = 0, stop: int | None = None) -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((scenes.images[start:stop], scenes.masks[start:stop]))


def _options(overrides: dict[str, Any]) -> TrainOptions:
    explicit = {k: overrides.pop(k) for k in ("epochs", "learning_rate") if k in overrides}
    if "batch_size" in overrides:  # the card's name for the training minibatch
        explicit["minibatch_size"] = overrides.pop("batch_size")
    return TrainOptions(verbose=2, extra=overrides, **explicit)


def sample_png(model: Any, card: dict[str, Any], scenes: Scenes, path: str, rows: int = 6) -> None:
    """Rows of image | truth | prediction, the masks coloured by class."""
    from bucketvision.models.segmentation.metrics import predict_ids

    predicted = predict_ids(model, card)(scenes.images[:rows]).numpy()
    tiles = [
        np.concatenate([scenes.images[i], PALETTE[scenes.masks[i]], PALETTE[predicted[i]]], axis=1)
        for i in range(rows)
    ]
    Image.fromarray(np.concatenate(tiles, axis=0)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=TRAIN_SCENES, help="scenes generated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sample", default="/tmp/seg_sample.png")
    args = parser.parse_args()
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}

    from bucketvision.models.segmentation.metrics import evaluate_segmenter
    from bucketvision.models.segmentation.train import train_segmenter

    scenes = make_scenes(args.train, seed=1)
    val_count = args.train // 10
    train_count = args.train - val_count
    info = DatasetInfo(
        task="segment",
        labels=scenes.mask_labels,
        input_shape=(128, 128, 3),
        train_count=train_count,
        val_count=val_count,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    trained = train_segmenter(
        _dataset(scenes, 0, train_count),
        _dataset(scenes, train_count),
        info,
        _options(dict(overrides)),
    )
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    print(f"overrides: {overrides or 'none (defaults)'}")
    print(f"hyperparameters: {trained.card['hyperparameters']}")
    print(
        f"training: {train_count} train + {val_count} val scenes, {seconds:.1f} s wall, "
        f"{cpu_seconds:.1f} s CPU (all threads; the machine has {os.cpu_count()} cores)"
    )
    figures: dict[str, Any] = {
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "overrides": overrides,
    }
    for seed, count in HELD_OUT:
        held_out = make_scenes(count, seed=seed)
        scores = evaluate_segmenter(trained.model, trained.card, _dataset(held_out))
        per_class = ", ".join(
            f"{label} {iou:.4f}"
            for label, iou in scores["per_class_iou"].items()
            if iou is not None
        )
        print(
            f"seed {seed} ({scores['count']} scenes): miou {scores['miou']:.4f}  "
            f"pixel_accuracy {scores['pixel_accuracy']:.4f}  [{per_class}]"
        )
        figures[f"seed{seed}"] = scores
        if seed == HELD_OUT[0][0]:
            sample_png(trained.model, trained.card, held_out, args.sample)
    print(f"sample: {args.sample}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
