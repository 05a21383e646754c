"""``make bench-real``: default training judged on data the project did not generate.

Everything goes through the product, on a private service (:mod:`tests.perf.training_bench`:
its own Redis on a free port, a moto S3 server, one worker child on the ``training``
queue): the datasets are written to S3 in the dataset layouts (:mod:`tests.perf.real_data`),
``bucketvision train NAME --task T --dataset ... --wait`` trains each with DEFAULT settings,
and the card's metrics are computed on the held-out ``test/`` split.

- ``sklearn-digits`` (classify): scikit-learn's 1,797 scanned 8x8 digits, upsampled to
  28x28; 80 % in ``train/`` (10 % of it held out for validation by the layout), 20 % in
  ``test/``; held-out accuracy >= 0.985.
- ``other-style-scenes`` (detect, segment): 600 training scenes and 200 held-out ones of
  :mod:`tests.perf.other_scenes` (textured and gradient backgrounds, noise, 4:3 images,
  other shapes, objects 1/8 to 1/3 of the image); mAP@0.5 >= 0.9 and mIoU >= 0.9.

Prints the table (dataset, task, metric, value, target, steps trained, why training
stopped, seconds) and, as its last line, one JSON object with every row.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.perf.real_data import write_other_scenes, write_sklearn_digits
from tests.perf.training_bench import format_table, table_row, train_and_show, training_service

BUCKET = "bench-real"
# task: (dataset name, model name, main metric, target)
PLANS = {
    "classify": ("sklearn-digits", "real-digits", "accuracy", 0.985),
    "detect": ("other-style-scenes", "real-detector", "map50", 0.9),
    "segment": ("other-style-scenes", "real-segmenter", "miou", 0.9),
}


def run_real(tasks: list[str], log_dir: Path) -> list[dict[str, Any]]:
    """Write, train and score each task of ``tasks``; one table row each."""
    rows = []
    with training_service(log_dir, f"{BUCKET}-models") as service:
        service.store.ensure_bucket(BUCKET)
        for task in tasks:
            dataset_name, model, metric, target = PLANS[task]
            uri = f"s3://{BUCKET}/{dataset_name}-{task}/"
            if task == "classify":
                written = write_sklearn_digits(service.store, uri)
            else:
                written = write_other_scenes(service.store, uri, task)
            print(f"wrote {uri}: {written}", file=sys.stderr, flush=True)
            card = train_and_show(service, model, task, uri)
            row = table_row(dataset_name, card, metric, target)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="classify,detect,segment")
    options = parser.parse_args()
    tasks = [task.strip() for task in options.tasks.split(",") if task.strip()]
    rows = run_real(tasks, Path(tempfile.gettempdir()))
    print()
    print(format_table(rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
