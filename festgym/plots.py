"""The figure factory every festgym plot uses (matplotlib is imported on the first figure)."""

from __future__ import annotations

from typing import Any


def figure(width: float, height: float, rows: int = 1, cols: int = 1, **subplots: Any):
    """(figure, axes) on the Agg canvas, without pyplot: no global backend switch, nothing kept
    open after the figure is dropped. ``subplots`` go to ``Figure.subplots`` (``sharex=True``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=rows * cols == 1, **subplots)
