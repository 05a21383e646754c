"""Shadow runs: a candidate version runs beside CURRENT on real jobs before it is promoted.

A shadow starts after training (a schedule entry's ``shadow_jobs = N``, ``train
--shadow-jobs N``) or by hand (``bucketvision models shadow NAME@vK``). It is written
to the registry as ``<name>/SHADOW`` (the plan: candidate, the CURRENT it runs
against, N, the agreement it must reach, promote ``auto`` or ``never``) and the
candidate's card gets ``status: shadow``.

The next N inference jobs of the model each take a slot (``INCR`` in Redis, so no
more than N do) and carry the candidate: their workers run it on the same decoded
images, compare item by item (:mod:`models.agreement`) and keep the figures out of
the user's output. Each such job's finaliser writes ``<name>/<candidate>/shadow/<job>.json``
and then *settles* the shadow under a Redis lock (:func:`settle`): the per-job files
are summed onto the candidate's card (``shadow.results``), and once N jobs are in,
``auto`` promotes the candidate if its agreement reached the plan's and CURRENT is
still the version it ran against, or marks it ``rejected`` saying why. Settling is
recomputed from the files every time, so a finaliser that dies before or during it
leaves nothing wrong: the job is finalised again and settles again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from bucketvision.infra.confidence import BINS, CONFIDENCE_TASKS, population_stability_index
from bucketvision.infra.errors import UserError
from bucketvision.infra.s3 import ObjectMissing, S3Uri
from bucketvision.infra.s3_streams import delete_keys
from bucketvision.models.registry import ModelRef, ModelRegistry, now_iso

SHADOW_FILE = "SHADOW"
SHADOW_FOLDER = "shadow"
PROMOTE_MODES = ("auto", "never")
SLOT_TTL_SECONDS = 30 * 24 * 3600
SETTLE_LOCK_SECONDS = 60


class ShadowError(UserError):
    """A shadow run that cannot start as asked."""


@dataclass(frozen=True)
class ShadowPlan:
    """What ``<name>/SHADOW`` holds: which candidate shadows which CURRENT, for how long."""

    name: str
    version: str  # the candidate
    against: str  # CURRENT's version when the shadow started
    jobs: int
    min_agreement: float | None = None
    promote: str = "auto"
    started_at: str = ""

    @property
    def candidate(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass
class ShadowTally:
    """Sums over compared items: agreement and both models' top confidence (histograms too)."""

    items: int = 0
    agreed: float = 0.0
    errors: int = 0  # items the candidate failed on (CURRENT's result stands)
    confidence_items: int = 0
    current_confidence: float = 0.0
    candidate_confidence: float = 0.0
    current_histogram: list[int] = field(default_factory=lambda: [0] * BINS)
    candidate_histogram: list[int] = field(default_factory=lambda: [0] * BINS)

    def merge(self, other: ShadowTally) -> None:
        self.items += other.items
        self.agreed += other.agreed
        self.errors += other.errors
        self.confidence_items += other.confidence_items
        self.current_confidence += other.current_confidence
        self.candidate_confidence += other.candidate_confidence
        for mine, theirs in (
            (self.current_histogram, other.current_histogram),
            (self.candidate_histogram, other.candidate_histogram),
        ):
            for index, count in enumerate(theirs[:BINS]):
                mine[index] += int(count)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ShadowTally:
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in body.items() if key in names})

    def digest(self) -> dict[str, Any]:
        """The figures a card shows: agreement, mean confidences, their shift and PSI."""
        counted = self.confidence_items
        current = self.current_confidence / counted if counted else None
        candidate = self.candidate_confidence / counted if counted else None
        return {
            "items": self.items,
            "agreement": round(self.agreed / self.items, 6) if self.items else None,
            "errors": self.errors,
            "current_mean_confidence": None if current is None else round(current, 6),
            "candidate_mean_confidence": None if candidate is None else round(candidate, 6),
            "confidence_shift": (
                None if current is None or candidate is None else round(candidate - current, 6)
            ),
            "confidence_psi": population_stability_index(
                self.current_histogram, self.candidate_histogram
            ),
        }


def _pointer(registry: ModelRegistry, name: str) -> tuple[str, str]:
    return registry.root.bucket, registry.root.key(name, SHADOW_FILE)


def shadow_plan(registry: ModelRegistry, name: str) -> ShadowPlan | None:
    """The shadow running for ``name``, if any."""
    try:
        body = registry.store.get_json(*_pointer(registry, name))
    except ObjectMissing:
        return None
    return ShadowPlan(**{key: body[key] for key in ShadowPlan.__dataclass_fields__ if key in body})


def start_shadow(
    registry: ModelRegistry,
    candidate: ModelRef,
    *,
    jobs: int,
    min_agreement: float | None = None,
    promote: str = "auto",
) -> ShadowPlan:
    """Put ``candidate`` in CURRENT's shadow for its next ``jobs`` jobs (replaces any other)."""
    if jobs < 1:
        raise ShadowError(f"a shadow needs at least 1 job, not {jobs}")
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise ShadowError(f"the agreement to reach is a share in [0, 1], not {min_agreement}")
    if promote not in PROMOTE_MODES:
        raise ShadowError(f"a shadow promotes {' or '.join(PROMOTE_MODES)}, not {promote!r}")
    current = registry.resolve(candidate.name)
    if current.version == candidate.version:
        raise ShadowError(f"{candidate} is CURRENT already; shadow a candidate version")
    if (task := candidate.card.get("task")) not in CONFIDENCE_TASKS:
        raise ShadowError(f"{candidate} is a {task} model: there are no images to compare on")
    for key in ("task", "input_shape", "resize"):
        if candidate.card.get(key) != current.card.get(key):
            raise ShadowError(
                f"{candidate} and CURRENT {current} differ in {key} ({candidate.card.get(key)} vs "
                f"{current.card.get(key)}): a shadow runs on the images decoded for CURRENT"
            )
    plan = ShadowPlan(
        candidate.name, candidate.version, current.version, jobs, min_agreement, promote, now_iso()
    )
    card = registry.card(candidate.name, candidate.version)
    card["status"] = "shadow"
    card["shadow"] = {"plan": asdict(plan), "results": ShadowTally().digest(), "jobs_seen": 0}
    registry.save_card(candidate.name, candidate.version, card)
    registry.store.put_json(*_pointer(registry, candidate.name), asdict(plan))
    return plan


@dataclass(frozen=True)
class ShadowSlot:
    """A job's place in a shadow: the candidate it also runs, and the registry it is in."""

    candidate: str  # NAME@VERSION
    models_uri: str  # where the job's finaliser writes its comparison


def claim_slot(registry: ModelRegistry, client: redis.Redis, model: str) -> ShadowSlot | None:
    """The candidate a new job of ``model`` (pinned NAME@VERSION) also runs; takes a slot.

    None unless a shadow of that name runs against that very version.
    """
    name, version = model.split("@", 1)
    plan = shadow_plan(registry, name)
    if plan is None or plan.against != version:
        return None
    slots = f"bv:shadow:slots:{plan.candidate}"
    taken = int(client.incr(slots))
    client.expire(slots, SLOT_TTL_SECONDS)
    return ShadowSlot(plan.candidate, str(registry.root)) if taken <= plan.jobs else None


def _job_key(registry: ModelRegistry, name: str, version: str, job_id: str) -> str:
    return registry.root.key(name, version, SHADOW_FOLDER, f"{job_id}.json")


def record_job(
    registry: ModelRegistry, candidate: str, job_id: str, against: str, tally: ShadowTally
) -> None:
    """Write one finished job's comparison beside the candidate (replaced if written again)."""
    name, version = candidate.split("@", 1)
    body = {"job_id": job_id, "against": against, "tally": tally.to_json(), "at": now_iso()}
    registry.store.put_json(registry.root.bucket, _job_key(registry, name, version, job_id), body)


def _job_tallies(registry: ModelRegistry, name: str, version: str) -> Iterable[ShadowTally]:
    folder = S3Uri(registry.root.bucket, registry.root.key(name, version, SHADOW_FOLDER) + "/")
    for info in registry.store.list_objects(folder):
        if info.key.endswith(".json"):
            body = json.loads(registry.store.get_text(folder.bucket, info.key))
            yield ShadowTally.from_json(body["tally"])


def settle(
    registry: ModelRegistry, client: redis.Redis, candidate: str, *, force: bool = False
) -> dict[str, Any]:
    """Sum the candidate's shadowed jobs onto its card; decide once N are in (or ``force``).

    Serialised per model by a Redis lock (a lease that lapses should its holder die).
    Returns the card's ``shadow`` section.
    """
    name, version = candidate.split("@", 1)
    with client.lock(f"bv:shadow:lock:{name}", timeout=SETTLE_LOCK_SECONDS, blocking_timeout=120):
        total, jobs_seen = ShadowTally(), 0
        for tally in _job_tallies(registry, name, version):
            total.merge(tally)
            jobs_seen += 1
        card = registry.card(name, version)
        section = dict(card.get("shadow") or {})
        section.update(results=total.digest(), jobs_seen=jobs_seen)
        plan = shadow_plan(registry, name)
        running = plan is not None and plan.version == version
        if running and plan is not None and (force or jobs_seen >= plan.jobs):
            status, decision = _decide(registry, plan, section["results"], jobs_seen)
            section.update(decision=decision, ended_at=now_iso())
            card.update(status=status, decision=decision)
        card["shadow"] = section
        ended = running and plan is not None and "ended_at" in section
        if ended and card["status"] == "promoted":
            registry.promote(name, version, card)  # the card, saved once, then CURRENT
        else:
            registry.save_card(name, version, card)
        if ended:
            bucket, pointer = _pointer(registry, name)
            delete_keys(registry.store, bucket, [pointer])
    return section


def _decide(
    registry: ModelRegistry, plan: ShadowPlan, results: dict[str, Any], jobs_seen: int
) -> tuple[str, str]:
    """The candidate's status once its shadow ends, and why."""
    agreement = results.get("agreement")
    shown = "n/a" if agreement is None else f"{agreement:.4f}"
    over = f"over {jobs_seen} job(s), {results.get('items', 0)} items, against {plan.against}"
    if plan.promote != "auto":
        return "candidate", f"shadow ended: agreement {shown} {over}; promote by hand"
    current = registry.current(plan.name)
    if current not in (plan.against, plan.version):
        return "candidate", (
            f"kept as a candidate: CURRENT moved from {plan.against} to {current} during the "
            f"shadow (agreement {shown} {over})"
        )
    if agreement is None:
        return "candidate", f"kept as a candidate: no item was compared {over}"
    wanted = plan.min_agreement
    if wanted is not None and agreement < wanted:
        return "rejected", f"rejected: shadow agreement {shown} < {wanted} {over}"
    reached = "" if wanted is None else f" >= {wanted}"
    return "promoted", f"promoted: shadow agreement {shown}{reached} {over}"
