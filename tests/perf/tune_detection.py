"""Tuning check of the detection family: defaults of ``train_detector`` on synthetic scenes.

Run ``.venv/bin/python -m tests.perf.tune_detection``. Trains with the defaults
on ``make_scenes(N, seed=1)`` (10% of them as the validation split), then
evaluates on held-out scenes from seeds that are never tuned on (2026, 7777),
prints map50, map and the training seconds, and saves an annotated sample grid
to /tmp/det_sample.png. ``--extra '{"epochs": 10}'`` overrides hyperparameters
for experiments only; the acceptance figures are the run without it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace
from typing import Any

from bucketvision.models.family import DatasetInfo, TrainOptions
from bucketvision.models.imaging import Placement
from bucketvision.models.scenes import Scenes, make_scenes

SAMPLE_PATH = "/tmp/det_sample.png"


def scenes_dataset(scenes: Scenes, start: int = 0, stop: int | None = None) -> Any:
    """An unbatched ``(image, boxes, classes)`` tf.data of ``scenes[start:stop]``."""
    import tensorflow as tf

    stop = len(scenes.images) if stop is None else stop

    def generate() -> Any:
        for index in range(start, stop):
            yield scenes.images[index], scenes.boxes[index], scenes.classes[index]

    height, width = scenes.images.shape[1:3]
    return tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((height, width, 3), tf.uint8),
            tf.TensorSpec((None, 4), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ),
    )


def save_sample(model: Any, card: dict[str, Any], scenes: Scenes, count: int = 6) -> None:
    """Annotate ``count`` held-out scenes the way the worker does and tile them into a PNG."""
    import io

    from PIL import Image

    from bucketvision.models.detection.serve import ServedDetector

    served = ServedDetector(model, card, forward_batch=count)
    outputs = served.infer(scenes.images[:count])
    tiles = []
    for pixels, output in zip(scenes.images[:count], outputs, strict=True):
        height, width = pixels.shape[:2]
        image = SimpleNamespace(
            pixels=pixels, placement=Placement.identity(width, height), preview=None
        )
        item = served.result(output, image)
        tiles.append(Image.open(io.BytesIO(item.files[0].data)).convert("RGB"))
    columns = 3
    tile_w, tile_h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    grid = Image.new("RGB", (columns * tile_w, rows * tile_h), (255, 255, 255))
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * tile_w, (index // columns) * tile_h))
    grid.save(SAMPLE_PATH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=2500, help="train + val scenes (seed 1)")
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[2026, 7777])
    parser.add_argument("--test-count", type=int, default=500)
    parser.add_argument("--extra", default="{}", help="JSON hyperparameter overrides")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from bucketvision.models.detection.metrics import evaluate_detector
    from bucketvision.models.detection.train import train_detector

    scenes = make_scenes(args.scenes, seed=1)
    val_count = args.scenes // 10
    train_count = args.scenes - val_count
    info = DatasetInfo(
        "detect", list(scenes.labels), scenes.images.shape[1:], train_count, val_count
    )
    options = TrainOptions(verbose=args.verbose, extra=json.loads(args.extra))
    start, cpu_start = time.perf_counter(), time.process_time()
    trained = train_detector(
        scenes_dataset(scenes, 0, train_count),
        scenes_dataset(scenes, train_count),
        info,
        options,
    )
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    figures: dict[str, Any] = {
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "epochs": trained.card["hyperparameters"]["epochs"],
        "score_threshold": trained.card["score_threshold"],
        "extra": options.extra,
    }
    for seed in args.test_seeds:
        held_out = make_scenes(args.test_count, seed=seed)
        metrics = evaluate_detector(trained.model, trained.card, scenes_dataset(held_out))
        figures[f"seed{seed}"] = {k: round(v, 4) for k, v in metrics.items()}
        print(f"seed {seed}: map50 {metrics['map50']:.4f}  map {metrics['map']:.4f}  {metrics}")
        if seed == args.test_seeds[0]:
            save_sample(trained.model, trained.card, held_out)
    print(
        f"training seconds {seconds:.1f} wall, {cpu_seconds:.1f} CPU"
        f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(f"sample: {SAMPLE_PATH}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
