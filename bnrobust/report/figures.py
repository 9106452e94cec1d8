"""Matplotlib helpers shared by the experiments' figures (headless, atomic writes)."""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..runner.files import file_mode

__all__ = ["focus_limits", "legend", "mark_outliers", "save_figure", "subplots", "weight_image"]


@functools.cache
def _pyplot():
    """matplotlib.pyplot, headless; imported on the first figure, not with the experiments (it
    takes ~0.3 s, a sizeable share of a small experiment's run)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def subplots(*args, **kwargs):
    """`plt.subplots` (headless)."""
    return _pyplot().subplots(*args, **kwargs)


def legend(ax, **kwargs) -> None:
    """`ax.legend(**kwargs)` where the axes have labelled artists (a panel whose runs all failed to
    train has none, and matplotlib would warn)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def save_figure(fig, path: Path) -> str:
    """Save atomically as PNG, close the figure, and return the file name for Markdown links."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.fchmod(fd, file_mode())  # mkstemp's 0600 -> what a plain open() gives under the umask
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        _pyplot().close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.name


def weight_image(ax, w: np.ndarray, title: str) -> None:
    """A weight vector as an image on a symmetric diverging colour scale (red +, blue -)."""
    lim = float(np.abs(w).max()) or 1.0
    ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def focus_limits(values: Sequence[float], floor: float, pad: float = 0.12,
                 min_span: float = 1.0) -> tuple[tuple[float, float], list[int]]:
    """Axis limits that keep the informative points readable, and the indices of the points
    left outside them. Points at or below `floor` (e.g. a model at chance) are not allowed to
    stretch the axis: one such point would squeeze all others into a sliver of it. If every
    point is at or below the floor, all of them set the range."""
    finite = [(i, float(v)) for i, v in enumerate(values) if v is not None and np.isfinite(v)]
    keep = [v for _, v in finite if v > floor] or [v for _, v in finite]
    if not keep:
        return (0.0, 1.0), []
    lo, hi = min(keep), max(keep)
    span = max(hi - lo, min_span)
    lim = (lo - pad * span, hi + pad * span)
    return lim, [i for i, v in finite if not lim[0] <= v <= lim[1]]


def mark_outliers(ax, points: Sequence[tuple[float, float, str]], xlim: tuple[float, float], color=None) -> None:
    """Draw points (x, y, label) that lie left or right of `xlim` as arrowheads on that edge of
    the axis, at their own y, with their label (which should give the true x): an off-scale
    point is shown, not silently dropped."""
    for x, y, name in points:
        left = x < xlim[0]
        edge = xlim[0] if left else xlim[1]
        ax.plot([edge], [y], "<" if left else ">", color=color, ms=9, clip_on=False, zorder=5)
        ax.annotate(name, (edge, y), xytext=(8 if left else -8, 6),
                    textcoords="offset points", ha="left" if left else "right", fontsize=7, color=color)
