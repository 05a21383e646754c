"""``bucketvision models shadow``: run a candidate version in CURRENT's shadow, show it, end it.

``models shadow NAME@vK --jobs N [--min-agreement A] [--promote auto|never]`` starts one
(:mod:`models.shadow`); ``models shadow NAME`` shows the running shadow and the figures
so far; ``models shadow NAME --stop`` decides now on the jobs that came in.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bucketvision.infra.settings import Settings
from bucketvision.producer.cli_support import CommandError, clients, whole_number


def add_shadow(models_sub: Any) -> None:
    shadow = models_sub.add_parser(
        "shadow",
        help="run a candidate beside CURRENT on the next jobs; promote it if they agree",
        description=(
            "NAME@VERSION starts a shadow: the next --jobs inference jobs of NAME also run that "
            "version on the same images, and its card records how often it agrees with "
            "CURRENT. NAME alone shows the running shadow; with --stop it ends it now."
        ),
    )
    shadow.add_argument(
        "reference", metavar="NAME[@V]", help="NAME@V: start a shadow of that version; NAME: show"
    )
    shadow.add_argument("--jobs", type=whole_number(), default=3, help="jobs to shadow (default 3)")
    shadow.add_argument(
        "--min-agreement",
        type=float,
        help="with --promote auto: the share of items on which it must agree (default: none)",
    )
    shadow.add_argument(
        "--promote",
        default="auto",
        choices=["auto", "never"],
        help="auto: promote it when the jobs are in and it agrees enough (default auto)",
    )
    shadow.add_argument("--stop", action="store_true", help="end the running shadow now")
    shadow.add_argument("--json", action="store_true", help="print the shadow as JSON")


def cmd_shadow(args: argparse.Namespace, settings: Settings) -> int:
    from bucketvision.models.registry import parse_model_ref
    from bucketvision.models.shadow import settle, shadow_plan, start_shadow

    found = clients(settings)
    registry = found["registry"]
    name, version = parse_model_ref(args.reference)
    if version is not None:
        if args.stop:
            raise CommandError("--stop takes the model NAME: `models shadow NAME --stop`")
        plan = start_shadow(
            registry,
            registry.resolve(args.reference),
            jobs=args.jobs,
            min_agreement=args.min_agreement,
            promote=args.promote,
        )
        shown: dict[str, Any] = {"plan": plan.__dict__}
        text = f"{plan.candidate} runs in the shadow of {name}@{plan.against} for {plan.jobs} jobs"
    else:
        plan = shadow_plan(registry, name)
        if plan is None:
            raise CommandError(f"no shadow is running for {name}; start one with NAME@VERSION")
        section = settle(registry, found["jobs"].redis, plan.candidate, force=args.stop)
        shown = {"plan": plan.__dict__, **section}
        text = _describe(plan.candidate, section)
    print(json.dumps(shown, indent=2) if args.json else text)
    return 0


def _describe(candidate: str, section: dict[str, Any]) -> str:
    results = section.get("results") or {}
    agreement = results.get("agreement")
    figures = (
        f"{section.get('jobs_seen', 0)} job(s) in, {results.get('items', 0)} items, agreement "
        + ("n/a" if agreement is None else f"{agreement:.4f}")
        + f", confidence shift {results.get('confidence_shift')}"
    )
    if "decision" in section:
        return f"{candidate}: {figures}\n{section['decision']}"
    return f"{candidate}: {figures}; still running"
