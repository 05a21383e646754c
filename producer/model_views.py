"""How ``models list`` and ``models show`` print a model for a person to read."""

from __future__ import annotations

from typing import Any


def format_model_card(shown: dict[str, Any]) -> str:
    """``models show``: the card a person reads, with where the plots are."""
    metrics = shown.get("metrics") or {}
    main = shown.get("main_metric")
    lines = [
        f"{shown['name']}@{shown['version']}  {shown.get('task')}  {shown.get('status')}"
        f"  (CURRENT {shown.get('current') or '-'}; versions {', '.join(shown['versions'])})",
        f"  input      {shown.get('input_shape')}  preprocess {shown.get('preprocess', '-')}"
        f"  {shown.get('architecture', '')}",
        f"  labels     {', '.join(map(str, shown.get('labels') or [])) or '-'}",
        f"  dataset    {shown.get('dataset') or '-'}  {shown.get('dataset_counts') or ''}",
        f"  trained    {shown.get('trained_at') or '-'}  in {shown.get('training_seconds', '-')} s,"
        f" {shown.get('epochs_run', '-')} epochs",
    ]
    if shown.get("stopped_because"):
        lines[-1] += (
            f", {shown.get('steps_trained', '?')} steps, stopped: {shown['stopped_because']}"
        )
    lines.insert(2, "  serving    " + _serving(shown))
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    if scalars:
        text = ", ".join(
            f"{'*' if k == main else ''}{k}={v:.4g}" for k, v in sorted(scalars.items())
        )
        lines.append(f"  metrics    {text}  (on {shown.get('evaluated_on', '?')})")
    if shown.get("shadow"):
        lines.append("  shadow     " + _shadow(shown["shadow"]))
    if shown.get("decision"):
        lines.append(f"  decision   {shown['decision']}")
    lines.append(f"  model      {shown['model_file']}")
    for filename, uri in sorted(shown.get("file_uris", {}).items()):
        lines.append(f"  {filename:<10} {uri}" if len(filename) <= 10 else f"  {filename} {uri}")
    return "\n".join(lines)


def _shadow(section: dict[str, Any]) -> str:
    """A shadow run's figures: jobs in of planned, items, agreement, confidence shift."""
    plan, results = section.get("plan") or {}, section.get("results") or {}
    agreement = results.get("agreement")
    wanted = plan.get("min_agreement")
    return (
        f"{section.get('jobs_seen', 0)} of {plan.get('jobs', '?')} jobs against "
        f"{plan.get('against', '?')}, {results.get('items', 0)} items, agreement "
        + ("n/a" if agreement is None else f"{agreement:.4f}")
        + ("" if wanted is None else f" (needs {wanted})")
        + f", confidence shift {results.get('confidence_shift')}"
    )


def _serving(shown: dict[str, Any]) -> str:
    """How a worker feeds and reads the model: format, signature, resize, dtype, outputs."""
    parts = [str(shown.get("format", "keras"))]
    if shown.get("signature"):
        parts.append(f"signature {shown['signature']}")
    if shown.get("resize"):
        parts.append(f"resize {shown['resize']}")
    if shown.get("input_dtype"):
        parts.append(f"{shown['input_dtype']} input")
    if isinstance(shown.get("outputs"), str):
        parts.append(f"outputs {shown['outputs']}")
    if shown.get("latent_dim"):
        parts.append(
            f"latent {shown['latent_dim']}, output {shown.get('output_range', 'symmetric')}"
        )
    return ", ".join(parts)


def format_model_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no models registered (try `bucketvision demo` or `bucketvision models register`)"
    lines = [f"{'NAME':24} {'TASK':9} {'CURRENT':8} VERSIONS  METRICS"]
    for row in rows:
        scalars = {k: v for k, v in row["metrics"].items() if isinstance(v, int | float)}
        main = row.get("main_metric")
        ordered = sorted(scalars.items(), key=lambda item: (item[0] != main, item[0]))
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in ordered[:3])
        lines.append(
            f"{row['name']:24} {row['task'] or '?':9} {row['current'] or '-':8}"
            f" {len(row['versions']):<9} {metrics}"
        )
    return "\n".join(lines)
