"""The four model families end to end: `datasets make`, `train --wait`, registry, serving.

Each family trains for one short epoch on a tiny synthetic dataset (the
full-quality runs are `make bench-quality`), through a real worker on the
`training` queue; then classify, detect, segment and generate jobs run through
the same worker, and every manifest line, summary and item result they write is
checked against the published JSON Schemas (docs/schemas/, tests/contracts.py).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.models.scenes import make_scenes
from tests.contracts import check_job_outputs
from tests.helpers import bad_files, png_bytes, printed_job_id, run_cli, run_job, upload_digits

pytestmark = pytest.mark.e2e

BUCKET = "e2e-families"
TINY = {"classify": 80, "detect": 24, "segment": 24, "generate": 80}
NAMES = {
    "classify": "fam-digits",
    "detect": "fam-detector",
    "segment": "fam-segmenter",
    "generate": "fam-gan",
}


def _object(s3_client: Any, key: str) -> bytes:
    return s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _train(service_env: dict[str, str], task: str, *extra: str) -> Any:
    return run_cli(
        service_env,
        "train",
        NAMES[task],
        "--task",
        task,
        "--dataset",
        f"s3://{BUCKET}/datasets/{task}/",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--wait",
        "--quiet",
        *extra,
        timeout=600,
    )


@pytest.fixture(scope="module")
def family_worker(
    service_env: dict[str, str], s3_client: Any, tmp_path_factory: Any
) -> Iterator[Any]:
    from tests.workers import WorkerProcess

    s3_client.create_bucket(Bucket=BUCKET)
    for task, count in TINY.items():
        made = run_cli(
            service_env,
            "datasets",
            "make",
            "--task",
            task,
            "--count",
            str(count),
            "--output",
            f"s3://{BUCKET}/datasets/{task}/",
            "--size",
            "96",
        )
        assert made.returncode == 0, made.stderr
    log = tmp_path_factory.mktemp("families") / "worker.log"
    worker = WorkerProcess(
        service_env, log, "--queues", "inference,training", "--cpu", "--concurrency", "2"
    )
    worker.wait_for_children(2)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def trained(service_env: dict[str, str], family_worker: Any) -> dict[str, dict[str, Any]]:
    """Train every family once; returns `models show --json` per task."""
    shown = {}
    for task in TINY:
        done = _train(service_env, task)
        assert done.returncode == 0, done.stderr + family_worker.log()
        assert done.stdout.strip().startswith(f"train-{NAMES[task]}-")
        card = run_cli(service_env, "models", "show", NAMES[task], "--json")
        assert card.returncode == 0, card.stderr
        shown[task] = json.loads(card.stdout)
    return shown


MAIN_METRICS = {
    "classify": "accuracy",
    "detect": "map50",
    "segment": "miou",
    "generate": "mean_confidence",
}


@pytest.mark.parametrize("task", list(TINY))
def test_training_writes_a_promoted_version_with_metrics_and_plots(
    task: str, trained: dict[str, dict[str, Any]], s3_client: Any
) -> None:
    card = trained[task]
    assert card["version"] == "v1" and card["status"] == "promoted" and card["current"] == "v1"
    assert card["task"] == task and card["main_metric"] == MAIN_METRICS[task]
    assert 0.0 <= card["metrics"][MAIN_METRICS[task]] <= 1.0
    assert card["dataset"] == f"s3://{BUCKET}/datasets/{task}/"
    assert card["dataset_counts"]["train"] + card["dataset_counts"]["val"] == TINY[task]
    assert card["epochs_run"] == 1 and card["trained_at"]
    wanted = {"history.json", "training_curves.png"} | (
        {"samples.png"} if task == "generate" else set()
    )
    assert wanted <= set(card["file_uris"])
    bucket, key = card["file_uris"]["training_curves.png"][5:].split("/", 1)
    plot = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert Image.open(io.BytesIO(plot)).format == "PNG"
    history = json.loads(
        s3_client.get_object(Bucket=bucket, Key=key.replace("training_curves.png", "history.json"))[
            "Body"
        ].read()
    )
    assert all(len(values) == 1 for values in history.values()) and history


def test_a_worse_version_is_rejected_and_rollback_moves_current(
    service_env: dict[str, str], trained: dict[str, dict[str, Any]], family_worker: Any
) -> None:
    # A tolerance of -2 asks for a main metric above CURRENT's + 2: impossible, so rejected.
    rejected = _train(service_env, "classify", "--tolerance", "-2")
    assert rejected.returncode == 0, rejected.stderr + family_worker.log()
    assert "rejected" in rejected.stderr
    card = json.loads(run_cli(service_env, "models", "show", "fam-digits@v2", "--json").stdout)
    assert card["status"] == "rejected" and card["current"] == "v1"
    promoted = run_cli(service_env, "models", "promote", "fam-digits@v2")
    assert promoted.returncode == 0 and "fam-digits@v2 is now CURRENT" in promoted.stdout
    rolled = run_cli(service_env, "models", "rollback", "fam-digits")
    assert rolled.returncode == 0, rolled.stderr
    assert "fam-digits@v1 is now CURRENT" in rolled.stdout
    again = run_cli(service_env, "models", "rollback", "fam-digits")
    assert again.returncode == 2 and "nothing to roll back to" in again.stderr


def test_two_runs_of_one_model_never_overlap(
    service_env: dict[str, str], trained: dict[str, dict[str, Any]], family_worker: Any
) -> None:
    from bucketvision.infra.training_runs import TrainingRuns

    started = [
        run_cli(
            service_env,
            "train",
            "fam-lock",
            "--task",
            "classify",
            "--dataset",
            f"s3://{BUCKET}/datasets/classify/",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "4",
        )
        for _ in range(2)
    ]
    assert all(done.returncode == 0 for done in started), [d.stderr for d in started]
    runs = TrainingRuns.from_url(service_env["BV_BROKER_URL"])
    records = []
    for done in started:
        run_id = done.stdout.split()[0]
        deadline = time.monotonic() + 300
        while runs.get(run_id)["state"] not in ("finished", "failed", "skipped"):
            assert time.monotonic() < deadline, family_worker.log()
            time.sleep(0.5)
        records.append(runs.get(run_id))
    states = sorted(record["state"] for record in records)
    assert states in (["finished", "skipped"], ["finished", "finished"]), records
    if states == ["finished", "skipped"]:
        skipped = next(record for record in records if record["state"] == "skipped")
        assert "another training run of fam-lock is going" in skipped["error"]
    else:  # the second started only after the first had finished
        first, second = sorted(records, key=lambda record: record["started_at"])
        assert second["started_at"] >= first["finished_at"]


def test_training_errors_are_clear_at_submission(
    service_env: dict[str, str], trained: dict[str, dict[str, Any]]
) -> None:
    missing = run_cli(
        service_env, "train", "x", "--task", "detect", "--dataset", f"s3://{BUCKET}/nothing/"
    )
    assert missing.returncode == 2 and "annotations.json is missing" in missing.stderr
    wrong_task = run_cli(
        service_env,
        "train",
        "fam-digits",
        "--task",
        "segment",
        "--dataset",
        f"s3://{BUCKET}/datasets/segment/",
    )
    assert wrong_task.returncode == 2 and "is a classify model" in wrong_task.stderr
    versioned = run_cli(
        service_env,
        "train",
        "fam-digits@v3",
        "--task",
        "classify",
        "--dataset",
        f"s3://{BUCKET}/datasets/classify/",
    )
    assert versioned.returncode == 2 and "versions are made for you" in versioned.stderr
    backbone = run_cli(
        service_env,
        "train",
        "x",
        "--task",
        "detect",
        "--backbone",
        "MobileNetV2",
        "--dataset",
        f"s3://{BUCKET}/datasets/detect/",
    )
    assert backbone.returncode == 2 and "classify models only" in backbone.stderr


@pytest.fixture(scope="module")
def scene_inputs(s3_client: Any) -> dict[str, tuple[int, int]]:
    """Non-square scenes (letterboxed by the models) under incoming/scenes/."""
    scenes = make_scenes(5, seed=321, width=200, height=120)
    sizes = {}
    for index, image in enumerate(scenes.images):
        key = f"incoming/scenes/{index}.png"
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=png_bytes(image))
        sizes[key] = (200, 120)
    return sizes


def _submit(
    service_env: dict[str, str], task: str, output: str, input_prefix: str = "incoming/scenes/"
) -> str:
    return run_job(
        service_env, task, NAMES[task], f"s3://{BUCKET}/{input_prefix}", f"s3://{BUCKET}/{output}"
    )


def test_classify_job_outputs_match_the_schemas_with_errors_for_bad_files(
    service_env: dict[str, str], trained: Any, s3_client: Any
) -> None:
    labels = upload_digits(s3_client, BUCKET, "incoming/digits/", 12, seed=77)
    bad = {name: bad_files()[name] for name in ("empty.png", "notes.jpg", "truncated.png")}
    for name, (body, _) in bad.items():
        s3_client.put_object(Bucket=BUCKET, Key=f"incoming/digits/bad/{name}", Body=body)
    job_id = _submit(service_env, "classify", "classified/", "incoming/digits/")
    lines, summary = check_job_outputs(s3_client, BUCKET, "classified/", job_id, "classify")
    assert summary["state"] == "finished"
    assert (summary["ok"], summary["error"]) == (len(labels), len(bad))
    assert summary["errors_by_type"] == {
        "CorruptImage": 1,
        "EmptyObject": 1,
        "UnsupportedFormat": 1,
    }
    by_key = {line["key"]: line for line in lines}
    assert set(by_key) == set(labels) | {f"incoming/digits/bad/{name}" for name in bad}
    for name, (_, kind) in bad.items():
        assert by_key[f"incoming/digits/bad/{name}"]["error"]["type"] == kind
    classes = set(trained["classify"]["labels"])
    for key in labels:
        result = by_key[key]["result"]
        assert result["label"] in classes and result["top_k"][0]["label"] == result["label"]
        assert (
            by_key[key]["output"]
            == f"s3://{BUCKET}/classified/{key[len('incoming/digits/') :]}.json"
        )


def test_detect_job_writes_boxes_in_original_pixels_and_annotated_images(
    service_env: dict[str, str],
    trained: Any,
    scene_inputs: dict[str, tuple[int, int]],
    s3_client: Any,
) -> None:
    job_id = _submit(service_env, "detect", "detected/")
    lines, summary = check_job_outputs(s3_client, BUCKET, "detected/", job_id, "detect")
    assert summary["state"] == "finished" and summary["ok"] == len(scene_inputs)
    labels = set(trained["detect"]["labels"])
    for line in lines:
        assert line["status"] == "ok" and line["model"] == "fam-detector@v1", line
        width, height = scene_inputs[line["key"]]
        for detection in line["result"]["detections"]:
            assert set(detection) == {"label", "score", "box"} and detection["label"] in labels
            x0, y0, x1, y1 = detection["box"]
            assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
        annotated = line["result"]["annotated"]
        assert annotated == f"detected/{line['key'].rsplit('/', 1)[1]}.annotated.png"
        image = Image.open(io.BytesIO(_object(s3_client, annotated)))
        # The original's aspect; small images are enlarged so the captions can be read.
        assert image.width >= width and abs(image.height - image.width * height / width) <= 1
        item = json.loads(_object(s3_client, line["output"].split("/", 3)[3]))
        assert item["detections"] == line["result"]["detections"]


def test_segment_job_writes_masks_at_the_original_size(
    service_env: dict[str, str],
    trained: Any,
    scene_inputs: dict[str, tuple[int, int]],
    s3_client: Any,
) -> None:
    job_id = _submit(service_env, "segment", "segmented/")
    lines, summary = check_job_outputs(s3_client, BUCKET, "segmented/", job_id, "segment")
    assert summary["state"] == "finished" and summary["ok"] == len(scene_inputs)
    classes = trained["segment"]["labels"]
    for line in lines:
        result = line["result"]
        assert line["status"] == "ok" and set(result) >= {"mask", "classes", "pixel_fraction"}
        assert result["classes"] == classes
        assert abs(sum(result["pixel_fraction"].values()) - 1.0) < 1e-3
        mask = Image.open(io.BytesIO(_object(s3_client, result["mask"])))
        assert mask.mode == "L" and mask.size == scene_inputs[line["key"]]
        assert int(np.asarray(mask).max()) < len(classes)


def test_generate_job_writes_images_and_is_reproducible(
    service_env: dict[str, str], trained: Any, s3_client: Any
) -> None:
    jobs = []
    for output, report in (("gen-a/", "--quiet"), ("gen-b/", "--json")):
        done = run_cli(
            service_env,
            "generate",
            "--count",
            "12",
            "--model",
            NAMES["generate"],
            "--output",
            f"s3://{BUCKET}/{output}",
            "--seed",
            "5",
            "--wait",
            report,
        )
        assert done.returncode == 0, done.stderr
        if report == "--json":  # stdout is the final status alone: one JSON document
            status = json.loads(done.stdout)
            assert status["state"] == "finished" and status["ok"] == 12 and status["error"] == 0
            jobs.append(status["job_id"])
        else:
            jobs.append(printed_job_id(done))
    queued = run_cli(
        service_env, "generate", "--count", "3", "--model", NAMES["generate"],
        "--output", f"s3://{BUCKET}/gen-d/", "--json",
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    submitted = json.loads(queued.stdout)
    assert submitted["total"] == 3 and submitted["model"].startswith(f"{NAMES['generate']}@")
    assert submitted["output"] == f"s3://{BUCKET}/gen-d/" and not submitted["existing"]
    first, summary = check_job_outputs(s3_client, BUCKET, "gen-a/", jobs[0], "generate")
    second, _ = check_job_outputs(s3_client, BUCKET, "gen-b/", jobs[1], "generate")
    assert summary["task"] == "generate" and summary["ok"] == 12
    assert [line["result"]["seed"] for line in first] == list(range(5, 17))
    for one, two in zip(first, second, strict=True):
        assert one["key"].startswith(f"gen-a/generated/{jobs[0]}/")
        assert one["result"]["image"] == one["key"]
        assert _object(s3_client, one["result"]["image"]) == _object(
            s3_client, two["result"]["image"]
        )
    bad = run_cli(
        service_env,
        "generate",
        "--count",
        "0",
        "--output",
        f"s3://{BUCKET}/gen-c/",
        "--model",
        NAMES["generate"],
    )
    assert bad.returncode == 2 and "argument --count: must be at least 1, not 0" in bad.stderr


def test_a_backbone_starts_from_a_weights_file_the_test_made(
    service_env: dict[str, str], trained: Any, family_worker: Any, s3_client: Any, tmp_path: Any
) -> None:
    """`train --backbone --weights FILE`: the CLI uploads the file, the worker loads it.

    A pretrained backbone is frozen by default, so after training the registered model's
    backbone holds exactly the file's weights.
    """
    import keras

    keras.utils.set_random_seed(4)
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg"
    )
    path = tmp_path / "mine.weights.h5"
    backbone.save_weights(path)
    done = _train(
        service_env,
        "classify",
        "--backbone",
        "MobileNetV2",
        "--weights",
        str(path),
        "--image-size",
        "32",
        "--promote",
        "never",
    )
    assert done.returncode == 0, done.stderr + family_worker.log()
    card = json.loads(run_cli(service_env, "models", "show", NAMES["classify"], "--json").stdout)
    version = sorted(card["versions"], key=lambda v: int(v[1:]))[-1]
    shown = json.loads(
        run_cli(service_env, "models", "show", f"{NAMES['classify']}@{version}", "--json").stdout
    )
    recorded = shown["hyperparameters"]["weights"]
    assert recorded.startswith("s3://") and "/_weights/" in recorded, recorded
    bucket, key = shown["model_file"][5:].split("/", 1)
    local = tmp_path / "trained.keras"
    s3_client.download_file(bucket, key, str(local))
    model = keras.saving.load_model(local, compile=False)
    inner = next(layer for layer in model.layers if layer.name.startswith("mobilenetv2"))
    for mine, theirs in zip(backbone.get_weights(), inner.get_weights(), strict=True):
        assert np.array_equal(mine, theirs)
    missing = _train(service_env, "classify", "--backbone", "MobileNetV2", "--weights", "nope.h5")
    assert missing.returncode == 2 and ".weights.h5 file" in missing.stderr
