"""Matplotlib helpers shared by the experiments' figures (headless, atomic writes)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..runner.files import file_mode  # noqa: E402

__all__ = ["plt", "save_figure", "weight_image"]


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
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.name


def weight_image(ax, w: np.ndarray, title: str) -> None:
    """A weight vector as an image on a symmetric diverging colour scale (red +, blue -)."""
    lim = float(np.abs(w).max()) or 1.0
    ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
