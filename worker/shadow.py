"""The worker's side of a shadow run (:mod:`models.shadow`): run the candidate, compare, settle.

A batch whose message names a ``shadow`` candidate runs it on the very pixels CURRENT
got (one more forward pass per group), compares each item's result with CURRENT's
(:func:`models.agreement.item_agreement`) and tallies agreement and confidence. Nothing
of the candidate reaches the user's outputs: the tally goes to the batch's shadow part
(``_jobs/<id>/shadow/<batch>.json``, written before the batch is recorded, like its
manifest part), and the job's finaliser sums the parts of the recorded batches, writes
the job's file beside the candidate and settles the shadow. A candidate that fails (to
load, to run, on one item) never fails the user's batch: it counts as ``errors``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bucketvision.infra.confidence import bin_of, top_confidence
from bucketvision.infra.jobs import JobStore
from bucketvision.infra.outages import OUTAGE_ERRORS
from bucketvision.infra.outputs import shadow_part_key
from bucketvision.infra.s3 import ObjectMissing, S3Store, S3Uri, StorageUnavailable, parse_s3_uri
from bucketvision.models.agreement import item_agreement
from bucketvision.models.family import ItemResult, ServedModel
from bucketvision.models.registry import ModelRegistry
from bucketvision.models.shadow import ShadowTally, record_job, settle

log = logging.getLogger("bucketvision.worker")


class ShadowRun:
    """A candidate running beside CURRENT in one batch, and the tally of what it found."""

    def __init__(self, reference: str, model: ServedModel | None, items: int = 0) -> None:
        self.reference, self.model = reference, model
        self.tally = ShadowTally(errors=0 if model is not None else items)
        self._lock = threading.Lock()

    def infer(self, pixels: np.ndarray, count: int) -> Sequence[Any] | None:
        """The candidate's raw outputs for ``pixels``; None (all ``count`` errors) if it failed."""
        if self.model is None:
            return None
        try:
            outputs = self.model.infer(pixels)
            if len(outputs) == count:
                return outputs
            log.warning("shadow %s returned %d outputs for %d", self.reference, len(outputs), count)
        except Exception as error:
            log.warning("shadow %s failed a forward pass: %s", self.reference, error)
        with self._lock:
            self.tally.errors += count
        return None

    def compare(self, task: str, current: ItemResult, output: Any, image: Any) -> None:
        """Tally one item: the candidate's result for ``output`` against CURRENT's."""
        assert self.model is not None  # infer() gave an output only with a model
        try:
            candidate = self.model.result(output, image)
            agreement = item_agreement(task, current, candidate)
        except Exception as error:
            log.debug("shadow %s failed on an item: %s", self.reference, error)
            with self._lock:
                self.tally.errors += 1
            return
        ours = top_confidence(task, current.result)
        theirs = top_confidence(task, candidate.result)
        with self._lock:
            self.tally.items += 1
            self.tally.agreed += agreement
            if ours is not None and theirs is not None:
                self.tally.confidence_items += 1
                self.tally.current_confidence += ours
                self.tally.candidate_confidence += theirs
                self.tally.current_histogram[bin_of(ours)] += 1
                self.tally.candidate_histogram[bin_of(theirs)] += 1


def load_shadow(
    reference: str | None, load_model: Callable[[str], Any], current: ServedModel, items: int
) -> ShadowRun | None:
    """The batch's shadow run, if its message names one; one that cannot run counts errors."""
    if reference is None:
        return None
    try:
        model = load_model(reference)
    except StorageUnavailable:
        raise
    except Exception as error:
        log.warning("shadow %s could not be loaded: %s", reference, error)
        return ShadowRun(reference, None, items)
    feeds = ("mode", "size", "resize")
    if any(getattr(model, name, None) != getattr(current, name) for name in feeds):
        log.warning("shadow %s does not take the images decoded for CURRENT", reference)
        return ShadowRun(reference, None, items)
    return ShadowRun(reference, model)


def write_shadow_part(
    store: S3Store, output: S3Uri, job_id: str, batch: int, tally: ShadowTally
) -> None:
    """PUT one batch's shadow tally (before the batch is recorded, like its manifest part)."""
    store.put_json(output.bucket, shadow_part_key(output, job_id, batch), tally.to_json())


def _job_tally(store: S3Store, output: S3Uri, job_id: str, batches: Sequence[int]) -> ShadowTally:
    """The sum of the shadow parts of ``batches`` (a batch without one compared nothing)."""

    def read(batch: int) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = store.get_json(
                output.bucket, shadow_part_key(output, job_id, int(batch))
            )
            return found
        except ObjectMissing:
            return None

    total = ShadowTally()
    with ThreadPoolExecutor(8, thread_name_prefix="bv-shadow") as pool:
        for body in pool.map(read, batches):
            if body is not None:
                total.merge(ShadowTally.from_json(body))
    return total


def finish_shadow(
    store: S3Store, jobs: JobStore, record: dict[str, Any], batches: Sequence[int]
) -> dict[str, Any] | None:
    """For a shadowed job (finaliser, under its lease): write its comparison, settle the shadow.

    An outage is raised (the finalisation is retried); any other failure is logged: the
    user's job does not fail because the candidate's bookkeeping did.
    """
    candidate = record.get("shadow")
    if not candidate:
        return None
    output, job_id = parse_s3_uri(str(record["output"])), str(record["job_id"])
    try:
        tally = _job_tally(store, output, job_id, batches)
        registry = ModelRegistry(store, str(record["shadow_models"]))
        against = str(record["model"])
        record_job(registry, str(candidate), job_id, against, tally)
        section = settle(registry, jobs.redis, str(candidate))
    except OUTAGE_ERRORS:
        raise
    except Exception as error:
        log.warning("job %s: shadow %s not recorded: %s", job_id, candidate, error)
        return None
    log.info("job %s: shadow %s %s", job_id, candidate, section.get("results"))
    return section
