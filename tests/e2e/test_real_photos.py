"""Real phone photos through classify, detect and segment jobs, at the default settings.

scikit-learn's sample photos (china.jpg and flower.jpg, camera JPEGs) and photos made
from them: EXIF-rotated (orientation 6), 48 MP (8000 x 6000), CMYK, HEIC and AVIF,
plus two headers far beyond BV_MAX_IMAGE_PIXELS. One worker child serves three small
untrained models registered here (a 224 x 224 classifier, a 256 x 256 detector and a
128 x 128 segmenter): the subject is the decoding and the mapping back to the
original pixels, not the answers. A 48 MP photo must cost the child's peak memory
less than 300 MB: it is decoded at 1/8 of each side.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, features

from tests.contracts import check_job_outputs
from tests.helpers import run_job
from tests.hostile_corpus import exif_bytes, jpeg_with_size, png
from tests.workers import WorkerProcess

pytestmark = pytest.mark.e2e

BUCKET = "e2e-photos"
MODELS = {"classify": "photo-classifier", "detect": "photo-detector", "segment": "photo-segmenter"}
LABELS = {
    "classify": ["city", "flower", "other"],
    "detect": ["roof", "petal"],
    "segment": ["background", "sky", "ground"],
}
PEAK_GROWTH_LIMIT = 300 * 2**20  # bytes the 48 MP photo may add to the child's peak RSS
MIB = 2**20


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _sample(name: str) -> bytes:
    """A sample photo's own bytes (a camera JPEG, 640 x 427)."""
    import sklearn.datasets

    return (Path(sklearn.datasets.__file__).parent / "images" / name).read_bytes()


def photo_files() -> tuple[dict[str, bytes], dict[str, tuple[int, int]], dict[str, str]]:
    """(name -> bytes, name -> original size as displayed, name -> expected error type)."""
    china, flower = _sample("china.jpg"), _sample("flower.jpg")
    china_image = Image.open(io.BytesIO(china))
    files = {
        "china.jpg": china,
        "flower.jpg": flower,
        "china-rotated.jpg": _encode(china_image, "JPEG", quality=90, exif=exif_bytes(6)),
        "china-48mp.jpg": _encode(
            china_image.resize((8000, 6000), Image.Resampling.BILINEAR), "JPEG", quality=85
        ),
        "flower-cmyk.jpg": _encode(
            Image.open(io.BytesIO(flower)).convert("CMYK"), "JPEG", quality=90
        ),
    }
    sizes = {name: (640, 427) for name in files} | {
        "china-rotated.jpg": (427, 640),
        "china-48mp.jpg": (8000, 6000),
    }
    from bucketvision.models.decode_limits import heif_support

    # `make test` installs the heif extra, and Pillow >= 11.3 reads AVIF: neither is optional here.
    assert heif_support(), "install the heif extra: pip install -e '.[heif]'"
    assert features.check_module("avif"), "this Pillow cannot read AVIF; pillow>=11.3 can"
    files["flower.heic"] = _encode(Image.open(io.BytesIO(flower)), "HEIF", quality=85)
    sizes["flower.heic"] = (640, 427)
    files["china.avif"] = _encode(china_image, "AVIF", quality=80, exif=exif_bytes(6))
    sizes["china.avif"] = (427, 640)
    errors = {
        "header-100000x100000.png": "TooManyPixels",
        "header-65535x65535.jpg": "TooManyPixels",  # the most a JPEG header can claim
    }
    files["header-100000x100000.png"] = png(100_000, 100_000, zlib.compress(bytes(17)))
    small = _encode(Image.new("RGB", (16, 16)), "JPEG")
    files["header-65535x65535.jpg"] = jpeg_with_size(small, 65535, 65535)
    return files, sizes, errors


def _models() -> dict[str, tuple[Any, dict[str, Any]]]:
    """task -> (an untrained Keras model, its card)."""
    import keras

    from bucketvision.models.detection.builders import build_detector
    from bucketvision.models.segmentation.builders import build_unet

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    features_ = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features_)
    outputs = keras.layers.Dense(len(LABELS["classify"]), activation="softmax")(pooled)
    base = {"preprocess": "unit", "format": "keras"}
    return {
        "classify": (
            keras.Model(inputs, outputs),
            {**base, "task": "classify", "input_shape": [224, 224, 3], "resize": "stretch"},
        ),
        "detect": (
            build_detector((256, 256, 3), len(LABELS["detect"])),
            # a low threshold, so the untrained heatmap gives boxes to map back
            {**base, "task": "detect", "input_shape": [256, 256, 3], "resize": "letterbox"}
            | {"stride": 4, "score_threshold": 0.05, "max_detections": 20},
        ),
        "segment": (
            build_unet((128, 128, 3), len(LABELS["segment"]), base_filters=8, depth=3),
            {**base, "task": "segment", "input_shape": [128, 128, 3], "resize": "letterbox"},
        ),
    }


@pytest.fixture(scope="module")
def photo_models(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """task -> name@version of a promoted model of that task."""
    from bucketvision.infra.s3 import S3Store
    from bucketvision.models.registry import ModelRegistry

    store = S3Store.from_settings(settings)
    registry = ModelRegistry(store, settings.models_uri)
    store.ensure_bucket(registry.root.bucket)
    directory = tmp_path_factory.mktemp("photo-models")
    registered = {}
    for task, (model, card) in _models().items():
        path = directory / f"{task}.keras"
        model.save(path)
        card = {**card, "labels": LABELS[task]}
        registered[task] = str(registry.add_version(MODELS[task], str(path), card, promote=True))
    return registered


@pytest.fixture(scope="module")
def photos(s3_client: Any) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Uploads the photos under photos/; returns (key -> size, key -> error type)."""
    s3_client.create_bucket(Bucket=BUCKET)
    files, sizes, errors = photo_files()
    for name, body in files.items():
        s3_client.put_object(Bucket=BUCKET, Key=f"photos/{name}", Body=body)
    s3_client.put_object(Bucket=BUCKET, Key="warm/china.jpg", Body=files["china.jpg"])
    s3_client.put_object(Bucket=BUCKET, Key="big/china-48mp.jpg", Body=files["china-48mp.jpg"])
    return (
        {f"photos/{name}": size for name, size in sizes.items()},
        {f"photos/{name}": kind for name, kind in errors.items()},
    )


@pytest.fixture(scope="module")
def photo_worker(
    service_env: dict[str, str], photo_models: dict[str, str], tmp_path_factory: Any
) -> Iterator[WorkerProcess]:
    """One worker with one pool child (whose memory is measured), default settings."""
    log = tmp_path_factory.mktemp("photos") / "worker.log"
    worker = WorkerProcess(service_env, log, "--cpu", "--concurrency", "1")
    worker.wait_for_children(1)
    yield worker
    worker.stop()


def _run_job(service_env: dict[str, str], task: str, prefix: str, output: str) -> str:
    return run_job(
        service_env, task, MODELS[task], f"s3://{BUCKET}/{prefix}", f"s3://{BUCKET}/{output}"
    )


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status.read().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}


def _reset_peak(pid: int) -> bool:
    """Set the peak RSS of ``pid`` back to its RSS (``clear_refs`` 5); False when not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def test_a_48_mp_photo_classifies_at_default_settings_in_little_memory(
    service_env: dict[str, str], s3_client: Any, photos: Any, photo_worker: WorkerProcess
) -> None:
    (child,) = photo_worker.children()
    warm = _run_job(service_env, "classify", "warm/", "warm-out/")  # loads and traces the model
    lines, _ = check_job_outputs(s3_client, BUCKET, "warm-out/", warm, "classify")
    assert [line["status"] for line in lines] == ["ok"], lines
    before = _memory(child)
    baseline = before["VmRSS"] if _reset_peak(child) else before["VmHWM"]

    job_id = _run_job(service_env, "classify", "big/", "big-out/")
    peak = _memory(child)["VmHWM"]
    lines, summary = check_job_outputs(s3_client, BUCKET, "big-out/", job_id, "classify")
    assert photo_worker.children() == [child], "the pool child was replaced"
    assert [line["status"] for line in lines] == ["ok"], lines
    assert lines[0]["result"]["label"] in LABELS["classify"]
    growth = peak - baseline
    print(
        f"\n48 MP JPEG classify job: child peak RSS {baseline / MIB:.0f} -> {peak / MIB:.0f} MiB"
        f" (+{growth / MIB:.1f} MiB), decode stage {summary['stage_seconds']['decode']:.3f} s"
    )
    assert growth < PEAK_GROWTH_LIMIT, f"the peak RSS grew by {growth / MIB:.0f} MiB"


@pytest.mark.parametrize("task", ["classify", "detect", "segment"])
def test_real_photos_give_results_in_their_original_pixels(
    task: str,
    service_env: dict[str, str],
    s3_client: Any,
    photos: Any,
    photo_worker: WorkerProcess,
) -> None:
    sizes, errors = photos
    job_id = _run_job(service_env, task, "photos/", f"{task}-out/")
    lines, summary = check_job_outputs(s3_client, BUCKET, f"{task}-out/", job_id, task)
    by_key = {line["key"]: line for line in lines}
    assert set(by_key) == set(sizes) | set(errors)
    assert summary["state"] == "finished" and summary["ok"] == len(sizes), summary
    for key, kind in errors.items():
        assert by_key[key]["status"] == "error" and by_key[key]["error"]["type"] == kind, key
    for key, (width, height) in sizes.items():
        line = by_key[key]
        assert line["status"] == "ok", line
        result = line["result"]
        assert result["image_size"] == [width, height], line
        if task == "classify":
            assert result["label"] in LABELS["classify"], line
        elif task == "detect":
            assert result["detections"], f"{key}: the low threshold gives boxes to check"
            for detection in result["detections"]:
                x0, y0, x1, y1 = detection["box"]
                assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height, (key, detection)
            annotated = Image.open(io.BytesIO(_object(s3_client, result["annotated"])))
            # drawn on the original as displayed (long side 640): its aspect, its orientation
            assert abs(annotated.height - annotated.width * height / width) <= 1, key
        else:
            mask = Image.open(io.BytesIO(_object(s3_client, result["mask"])))
            assert mask.mode == "L" and mask.size == (width, height), (key, mask.size)
            assert int(np.asarray(mask).max()) < len(LABELS["segment"])
    assert photo_worker.process.poll() is None, photo_worker.log()


def _object(s3_client: Any, key: str) -> bytes:
    return s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_without_the_heif_extra_a_heic_photo_is_an_error_line_that_names_it(
    service_env: dict[str, str],
    s3_client: Any,
    photos: Any,
    photo_worker: WorkerProcess,
    tmp_path: Path,
) -> None:
    """A worker where pillow_heif cannot be imported: the HEIC item fails, the JPEG does not."""
    photo_worker.stop()  # the last test of the module: this worker takes the queue alone
    shadow = tmp_path / "no-heif"
    shadow.mkdir()
    (shadow / "pillow_heif.py").write_text("raise ImportError('the heif extra is not installed')\n")
    environment = {**service_env, "PYTHONPATH": str(shadow)}
    worker = WorkerProcess(environment, tmp_path / "worker.log", "--cpu", "--concurrency", "1")
    try:
        worker.wait_for_children(1)
        for name in ("flower.heic", "china.jpg"):
            s3_client.copy_object(
                Bucket=BUCKET,
                Key=f"no-heif/{name}",
                CopySource={"Bucket": BUCKET, "Key": f"photos/{name}"},
            )
        job_id = _run_job(service_env, "classify", "no-heif/", "no-heif-out/")
    finally:
        worker.stop()
    lines, _ = check_job_outputs(s3_client, BUCKET, "no-heif-out/", job_id, "classify")
    by_key = {line["key"]: line for line in lines}
    assert by_key["no-heif/china.jpg"]["status"] == "ok"
    heic = by_key["no-heif/flower.heic"]
    assert heic["status"] == "error" and heic["error"]["type"] == "UnsupportedFormat", heic
    assert "bucketvision[heif]" in heic["error"]["message"], heic
