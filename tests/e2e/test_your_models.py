"""Users' SavedModels of all four families, registered with the CLI and served by jobs.

Each model is built here (tests/user_models.py) and exported as users' tools do;
``bucketvision models register`` records its card; a job through a real worker
must then answer what the model called directly answers on the same decoded
pixels: classify scores within 1e-4, detect boxes within 1 px of the direct
call mapped back, segment masks agreeing on 99.9% of pixels, generate images
equal for the same seed. The images are scikit-learn's two sample photos and
scenes drawn here.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bucketvision.models.decoding import decode_image
from tests import user_models
from tests.contracts import check_job_outputs
from tests.helpers import printed_job_id, run_cli, run_job

pytestmark = pytest.mark.e2e

BUCKET = "e2e-your-models"
MAX_PIXELS = 40_000_000


def _jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _scenes() -> dict[str, bytes]:
    """The two sample photos (cut down) and dark scenes with one bright rectangle."""
    from sklearn.datasets import load_sample_images

    images = {
        f"in/photo{i}.jpg": _jpeg(photo[::2, ::2].copy())
        for i, photo in enumerate(load_sample_images().images)
    }
    rng = np.random.default_rng(8)
    for index, (height, width) in enumerate([(200, 300), (480, 360), (123, 457)]):
        scene = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        scene[top : top + height // 3, left : left + width // 4] = (240, 230, 220)
        images[f"in/scene{index}.png"] = _png(scene)
    return images


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(
    service_env: dict[str, str], s3_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The inputs uploaded, the four models exported and registered, and a worker running."""
    from tests.workers import WorkerProcess

    s3_client.create_bucket(Bucket=BUCKET)
    images = _scenes()
    for key, data in images.items():
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=data)
    root = tmp_path_factory.mktemp("your-models")
    classifier, segmenter = user_models.classifier(), user_models.segmenter()
    paths = {
        "classify": user_models.export_keras(classifier, root / "classifier"),
        "segment": user_models.export_keras(segmenter, root / "segmenter"),
        "detect": user_models.tfod_detector(root / "detector"),
        "generate": root / "generator",
    }
    generator = user_models.generator(paths["generate"])
    flags = {
        "classify": [
            "--labels",
            ",".join(user_models.CLASSIFIER_LABELS),
            "--preprocess",
            "imagenet",
        ],
        "detect": [
            "--labels",
            ",".join(user_models.DETECTOR_LABELS),
            "--outputs",
            "tfod",
            "--input-size",
            "128x160",
        ],
        "segment": ["--labels", ",".join(user_models.SEGMENTER_LABELS), "--outputs", "logits"],
        "generate": ["--output-range", "unit"],
    }
    for task, path in paths.items():
        done = run_cli(
            service_env, "models", "register", f"my-{task}", "--task", task, "--file", str(path),
            *flags[task], "--promote",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    worker = WorkerProcess(
        service_env, root / "worker.log", "--queues", "inference", "--cpu", "--concurrency", "1"
    )
    worker.wait_for_children(1)
    yield {
        "images": images,
        "classifier": classifier,
        "segmenter": segmenter,
        "detector_dir": paths["detect"],
        "generator": generator,
        "worker": worker,
    }
    worker.stop()


def _job(service_env: dict[str, str], s3_client: Any, task: str) -> list[dict]:
    output = f"out-{task}/"
    job_id = run_job(
        service_env, task, f"my-{task}", f"s3://{BUCKET}/in/", f"s3://{BUCKET}/{output}"
    )
    lines, summary = check_job_outputs(s3_client, BUCKET, output, job_id, task)
    assert summary["ok"] == len(lines) == 5, [line.get("error") for line in lines]
    return sorted(lines, key=lambda line: line["key"])


def _decoded(data: bytes, size: tuple[int, int], resize: str) -> Any:
    return decode_image(data, mode="RGB", size=size, max_pixels=MAX_PIXELS, resize=resize)


def test_a_savedmodel_classifier_scores_as_the_model_called_directly(
    service_env: dict[str, str], s3_client: Any, served: dict[str, Any]
) -> None:
    for line in _job(service_env, s3_client, "classify"):
        pixels = _decoded(served["images"][line["key"]], (96, 96), "stretch").pixels
        direct = np.asarray(served["classifier"](user_models.imagenet_scaled(pixels)[None]))[0]
        scores = {entry["label"]: entry["score"] for entry in line["result"]["top_k"]}
        assert line["result"]["label"] == user_models.CLASSIFIER_LABELS[int(np.argmax(direct))]
        for label, score in scores.items():
            expected = direct[user_models.CLASSIFIER_LABELS.index(label)]
            assert abs(score - expected) <= 1e-4, (line["key"], label, score, expected)


def test_a_tfod_detector_gives_the_direct_boxes_in_original_pixels(
    service_env: dict[str, str], s3_client: Any, served: dict[str, Any]
) -> None:
    import tensorflow as tf

    signature = tf.saved_model.load(str(served["detector_dir"])).signatures["serving_default"]
    for line in _job(service_env, s3_client, "detect"):
        decoded = _decoded(served["images"][line["key"]], (160, 128), "letterbox")
        answer = signature(input_tensor=tf.constant(decoded.pixels[None]))
        count = int(answer["num_detections"][0])
        normalised = np.asarray(answer["detection_boxes"][0][:count])
        in_input = normalised[:, [1, 0, 3, 2]] * np.array([160, 128, 160, 128], np.float32)
        expected = decoded.placement.boxes_to_original(in_input)
        found = line["result"]["detections"]
        assert [d["label"] for d in found] == ["bright", "corner"]
        boxes = np.array([d["box"] for d in found])
        assert np.abs(boxes - expected).max() <= 1.0, (line["key"], boxes, expected)
        assert found[0]["score"] == pytest.approx(0.9, abs=1e-4)
        assert boxes[:, 2].max() <= decoded.original_width
        assert boxes[:, 3].max() <= decoded.original_height


def test_a_logits_segmenter_gives_the_direct_mask_at_the_original_size(
    service_env: dict[str, str], s3_client: Any, served: dict[str, Any]
) -> None:
    from bucketvision.models.segmentation.serve import mask_at_original, softmax

    for line in _job(service_env, s3_client, "segment"):
        decoded = _decoded(served["images"][line["key"]], (64, 64), "letterbox")
        logits = np.asarray(served["segmenter"](decoded.pixels[None].astype(np.float32) / 255.0))
        expected = mask_at_original(softmax(logits[0]), decoded.placement)
        body = s3_client.get_object(Bucket=BUCKET, Key=line["result"]["mask"])["Body"].read()
        mask = np.asarray(Image.open(io.BytesIO(body)))
        assert mask.shape == (decoded.original_height, decoded.original_width)
        agreement = float((mask == expected).mean())
        assert agreement >= 0.999, (line["key"], agreement)


def test_a_savedmodel_generator_makes_the_direct_image_for_each_seed(
    service_env: dict[str, str], s3_client: Any, served: dict[str, Any], tmp_path: Path
) -> None:
    from bucketvision.models.generation.serve import latent_for_seed

    done = run_cli(
        service_env, "generate", "--count", "4", "--seed", "11", "--model", "my-generate",
        "--output", f"s3://{BUCKET}/gen/", "--wait", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines, _ = check_job_outputs(s3_client, BUCKET, "gen/", printed_job_id(done), "generate")
    signature = served["generator"].sample
    for line in lines:
        seed = line["result"]["seed"]
        direct = np.asarray(signature(latent_for_seed(seed, 16)[None])["image"][0])
        expected = np.clip(np.round(direct * 255.0), 0, 255).astype(np.uint8)
        body = s3_client.get_object(Bucket=BUCKET, Key=line["result"]["image"])["Body"].read()
        image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        assert image.shape == (16, 16, 3)
        assert int(np.abs(image.astype(int) - expected).max()) <= 1, seed
        assert float((image == expected).mean()) >= 0.99, seed
