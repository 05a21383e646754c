"""Pretrained weights for a training run: ``imagenet``, a local file, or an ``s3://`` file.

``bucketvision train --backbone X --weights W`` passes ``W`` in the request's
options. ``imagenet`` is handed to keras.applications, which downloads it (the
worker needs internet for that). A weights file (``.weights.h5``, saved with
``save_weights()`` from the same backbone without its top) is read from S3 into
a temporary folder for the length of the run; the CLI uploads a local file
there first, so the worker need not share the submitter's disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import ObjectMissing, S3Store, parse_s3_uri

WEIGHTS_SUFFIX = ".weights.h5"


class WeightsError(UserError):
    """Pretrained weights that cannot be used as given."""


def check_weights_name(weights: str) -> str:
    """``weights`` when it is ``imagenet`` or names a ``.weights.h5`` file; WeightsError if not."""
    if weights == "imagenet" or weights.endswith(WEIGHTS_SUFFIX):
        return weights
    raise WeightsError(
        f"--weights {weights}: give imagenet, or a {WEIGHTS_SUFFIX} file saved with"
        " save_weights() from the same backbone without its top (local path or s3://)"
    )


@contextmanager
def local_weights(store: S3Store, options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``options`` with an ``s3://`` ``weights`` replaced by a local copy while in the block."""
    weights = options.get("weights")
    if not isinstance(weights, str) or not weights.startswith("s3://"):
        if isinstance(weights, str) and weights != "imagenet" and not os.path.isfile(weights):
            raise WeightsError(f"--weights {weights}: no such file on this worker")
        yield options
        return
    uri = parse_s3_uri(check_weights_name(weights), directory=False)
    with tempfile.TemporaryDirectory(prefix="bv-weights-") as directory:
        local = os.path.join(directory, uri.prefix.rsplit("/", 1)[-1])
        try:
            store.download_file(uri.bucket, uri.prefix, local)
        except ObjectMissing:
            raise WeightsError(f"--weights {weights}: no such object") from None
        yield {**options, "weights": local, "weights_source": weights}
