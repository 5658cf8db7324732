"""What every report figure shares: a 9-inch Agg figure at 150 dpi, tidy axes, PNG bytes.

Figures are drawn on matplotlib `Figure` objects with the Agg canvas directly (no pyplot, no
global backend, no display needed), and shown 900 px wide. Text drawn into a PNG is not HTML,
so gene names and tissues need no escaping in any figure.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

WIDTH = 9.0
DPI = 150
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
HEAT = LinearSegmentedColormap.from_list("nofone_heat", ["#ffffff", "#c6dbef", "#4292c6", "#08306b"])


def new_figure(height: float, width: float = WIDTH, dpi: int = DPI, **kwargs) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def clean_axes(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=8.5)


def to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()
