"""The service's shared words, defined once: tasks, final states, image formats.

Every list of task names, every "is this record done?" and every "is this key
an image?" in the code reads from here, so adding a task or a format is one
edit. Nothing here imports more than the standard library.
"""

from __future__ import annotations

# The model families: a model, a dataset and a job each have exactly one of these.
FAMILY_TASKS = ("classify", "detect", "segment", "generate")
# The tasks of a job over images listed from S3 (submit and watch).
INFERENCE_TASKS = ("classify", "detect", "segment")
# Tasks whose message is one batch of a job (see infra.messages).
BATCH_TASKS = FAMILY_TASKS
TRAINING_TASKS = ("train", "scheduled_train")
# The Celery task name of each task: the name a message is sent under, stable across releases.
TASK_NAMES = {task: f"bucketvision.{task}" for task in (*BATCH_TASKS, *TRAINING_TASKS)}

# A job or a training run in one of these states changes no more.
FINAL_STATES = ("finished", "failed", "skipped", "cancelled")
# A job asked to stop (``bucketvision cancel``): no batch of it starts, running ones stop
# after their forward pass, and once none runs it is finalised as ``cancelled``.
CANCELLING = "cancelling"
# Every state of a job, in the order a job goes through them (``jobs --state``).
JOB_STATES = ("queued", "running", CANCELLING, "finished", "failed", "cancelled")

# Image formats the decoder hands to Pillow (its format names) and the key suffixes that
# select an object as an image by default. HEIF (phones' HEIC) is read with the `heif`
# extra (pillow-heif); AVIF by Pillow itself (11.3 or newer, which the extra asks for).
ALLOWED_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg"),
    "PNG": (".png",),
    "GIF": (".gif",),
    "WEBP": (".webp",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
    "HEIF": (".heic", ".heif", ".hif"),
    "AVIF": (".avif",),
}
IMAGE_SUFFIXES = tuple(suffix for suffixes in ALLOWED_FORMATS.values() for suffix in suffixes)
IMAGE_PATTERNS = tuple(f"*{suffix}" for suffix in IMAGE_SUFFIXES)


def short_task_name(task_name: str) -> str:
    """``bucketvision.classify`` -> ``classify``."""
    return task_name.rsplit(".", 1)[-1]
