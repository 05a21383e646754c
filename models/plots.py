"""Training-curve plots as PNG bytes (matplotlib, headless Agg backend).

Losses go on the left panel and every other per-epoch metric on the right, with
validation series dashed beside their training series, so a person sees at a
glance whether a run converged or over-fitted.
"""

from __future__ import annotations

import io


def _is_loss(name: str) -> bool:
    return "loss" in name


def training_curves_png(history: dict[str, list[float]], title: str) -> bytes:
    """A PNG of the per-epoch ``history`` (Keras History.history shape)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = {name: values for name, values in history.items() if values and name != "lr"}
    losses = {name: values for name, values in series.items() if _is_loss(name)}
    others = {name: values for name, values in series.items() if not _is_loss(name)}
    panels = [(losses, "loss"), (others, "metric")] if others else [(losses, "loss")]
    figure = Figure(figsize=(5.5 * len(panels), 4), dpi=100, layout="constrained")
    for index, (group, ylabel) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for name, values in sorted(group.items()):
            epochs = range(1, len(values) + 1)
            style = "--" if name.startswith("val_") else "-"
            axes.plot(epochs, values, style, marker="o", markersize=3, label=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if group:
            axes.legend(fontsize=8)
    figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
