"""``make bench-loop``: does routing the unsure items to review pay, on real handwritten digits?

scikit-learn's 1,797 scanned digits (:func:`tests.perf.real_data.sklearn_digits`: 8x8
upsampled to 28x28, 20 % held out as the fixed test split). A run starts from 10
labelled digits a class and the rest of the training split as the unlabelled pool,
then five rounds of: train (the classify family's trainer with its default stopping,
:func:`models.classification.train.train_classifier`), score on the test split, predict
the pool, choose 50 items, "correct" them with their true labels and add them to the
labelled set. Two ways to choose the 50, side by side from the same start (round 0 is
trained once per seed and shared):

- ``uncertainty``: what ``--review-below 1 --review-max 50`` routes
  (:class:`worker.review_select.ReviewSelector`, the least confident first);
- ``random``: 50 drawn at random from the pool.

Three seeds each. Prints the table of accuracy by labels (mean and spread over the
seeds) and, as its last line, a JSON object; the check is that uncertainty selection
beats random selection at equal labels in the last round (and on average over rounds 1-5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from bucketvision.infra.review import ReviewPolicy
from bucketvision.models.dataset_layouts import held_out
from bucketvision.models.family import DatasetInfo, TrainOptions
from bucketvision.worker.review_select import ReviewSelector
from tests.perf.real_data import sklearn_digits

START_PER_CLASS = 10
ROUND_LABELS = 50
ROUNDS = 5
STRATEGIES = ("uncertainty", "random")


def _dataset(images: np.ndarray, labels: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images[..., np.newaxis], labels.astype(np.int32)))


def _train(images: np.ndarray, labels: np.ndarray, seed: int) -> tuple[Any, dict[str, Any]]:
    """The classify family's default training on the labelled set (10 % held out, as the layout)."""
    from bucketvision.models.classification.train import train_classifier

    keys = [f"train/{label}/{index}.png" for index, label in enumerate(labels)]
    val = np.array([held_out(key) for key in keys])
    if val.all() or not val.any():
        val[: max(1, len(val) // 10)] = True
    info = DatasetInfo(
        task="classify",
        labels=[str(n) for n in range(10)],
        input_shape=(28, 28, 1),
        train_count=int((~val).sum()),
        val_count=int(val.sum()),
    )
    options = TrainOptions(seed=seed, verbose=0)
    trained = train_classifier(
        _dataset(images[~val], labels[~val]), _dataset(images[val], labels[val]), info, options
    )
    return trained.model, trained.card


def _probabilities(model: Any, images: np.ndarray) -> np.ndarray:
    from bucketvision.models.classification.preprocess import as_probabilities

    outputs = [
        np.asarray(model(images[start : start + 512, ..., np.newaxis].astype(np.float32)))
        for start in range(0, len(images), 512)
    ]
    return as_probabilities(np.concatenate(outputs), "probabilities")


def _uncertain(probabilities: np.ndarray, pool: np.ndarray, count: int) -> np.ndarray:
    """The pool items ``--review-below 1 --review-max count`` routes (manifest-line form)."""
    selector = ReviewSelector("classify", ReviewPolicy(below=1.0, limit=count))
    for index in pool:
        ranked = np.argsort(probabilities[index])[::-1][:5]
        top_k = [{"label": str(c), "score": float(probabilities[index][c])} for c in ranked]
        result = {"label": top_k[0]["label"], "score": top_k[0]["score"], "top_k": top_k}
        selector.add({"key": f"{index:06d}", "status": "ok", "result": result})
    return np.array([int(item.key) for item in selector.selected()], dtype=np.int64)


def _round(
    seed: int, labelled: np.ndarray, data: tuple[np.ndarray, ...]
) -> tuple[Any, dict[str, Any]]:
    """Train on ``labelled`` and score on the test split: the model and the round's figures."""
    train_images, train_labels, test_images, test_labels = data
    began = time.perf_counter()
    model, card = _train(train_images[labelled], train_labels[labelled], seed)
    accuracy = float((_probabilities(model, test_images).argmax(axis=1) == test_labels).mean())
    return model, {
        "labels": len(labelled),
        "accuracy": accuracy,
        "steps": card.get("stopping", {}).get("steps_trained"),
        "seconds": round(time.perf_counter() - began, 1),
    }


def run_seed(seed: int, data: tuple[np.ndarray, ...]) -> Iterator[dict[str, Any]]:
    """Both strategies from one start (round 0 trained once): a row per strategy and round."""
    train_labels = data[1]
    rng = np.random.default_rng(seed)
    labelled = np.concatenate(
        [
            rng.choice(np.flatnonzero(train_labels == digit), START_PER_CLASS, replace=False)
            for digit in range(10)
        ]
    )
    start = _round(seed, labelled, data)
    for strategy in STRATEGIES:
        yield from run_one(seed, strategy, data, labelled, start)


def run_one(
    seed: int,
    strategy: str,
    data: tuple[np.ndarray, ...],
    labelled: np.ndarray,
    start: tuple[Any, dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """The rounds of one seed and strategy from ``start``: labels used and test accuracy."""
    train_images, train_labels = data[0], data[1]
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    model, figures = start
    for round_number in range(ROUNDS + 1):
        if round_number:
            model, figures = _round(seed, labelled, data)
        yield {"seed": seed, "strategy": strategy, "round": round_number, **figures}
        if round_number == ROUNDS:
            return
        pool = np.setdiff1d(np.arange(len(train_labels)), labelled)
        if strategy == "uncertainty":
            chosen = _uncertain(_probabilities(model, train_images), pool, ROUND_LABELS)
        else:
            chosen = rng.choice(pool, ROUND_LABELS, replace=False)
        labelled = np.concatenate([labelled, chosen])  # corrected with the true labels


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of accuracy by strategy and round, and the verdict."""
    table: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        table.setdefault(row["strategy"], {}).setdefault(row["round"], []).append(row["accuracy"])
    means = {s: {r: float(np.mean(v)) for r, v in rounds.items()} for s, rounds in table.items()}
    later = range(1, ROUNDS + 1)
    gains = [means["uncertainty"][r] - means["random"][r] for r in later]
    return {
        "means": means,
        "spread": {
            s: {r: float(np.std(v)) for r, v in rounds.items()} for s, rounds in table.items()
        },
        "last_round_gain": gains[-1],
        "mean_gain_rounds_1_5": float(np.mean(gains)),
        "pass": gains[-1] > 0 and float(np.mean(gains)) > 0,
    }


def format_table(summary: dict[str, Any]) -> str:
    lines = [
        "labels  uncertainty (mean ± sd)  random (mean ± sd)  gain",
        "------  -----------------------  ------------------  ------",
    ]
    means, spread = summary["means"], summary["spread"]
    for r in range(ROUNDS + 1):
        labels = START_PER_CLASS * 10 + ROUND_LABELS * r
        u, x = means["uncertainty"][r], means["random"][r]
        lines.append(
            f"{labels:6d}  {u:.4f} ± {spread['uncertainty'][r]:.4f}          "
            f"{x:.4f} ± {spread['random'][r]:.4f}     {u - x:+.4f}"
        )
    verdict = "PASS" if summary["pass"] else "FAIL"
    final = START_PER_CLASS * 10 + ROUND_LABELS * ROUNDS
    lines.append(
        f"{verdict}  uncertainty - random at {final} labels: "
        f"{summary['last_round_gain']:+.4f}; mean over rounds 1-{ROUNDS}: "
        f"{summary['mean_gain_rounds_1_5']:+.4f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    options = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    data = sklearn_digits()
    rows: list[dict[str, Any]] = []
    for seed in range(options.seeds):
        for row in run_seed(seed, data):
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    summary = summarise(rows)
    print()
    print(format_table(summary))
    print(json.dumps({"rows": rows, "summary": summary}))


if __name__ == "__main__":
    main()
