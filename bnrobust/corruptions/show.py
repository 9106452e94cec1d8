"""Images to corrupt when no dataset is on disk (tests, the CLI) and the grid figure of a suite."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .common import SEVERITIES, _suite, corrupt


def synthetic_digits(n: int, seed: int = 0) -> np.ndarray:
    """`n` digit-like uint8 images [n, 28, 28]: 2-px anti-aliased strokes (a ring, a bar, a '7',
    a cross) in the central 20x20 box on black, like MNIST."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    out = np.empty((n, 28, 28))
    for i in range(n):
        cx, cy = 14 + rng.uniform(-1.5, 1.5), 14 + rng.uniform(-1.5, 1.5)
        kind = i % 4
        if kind == 0:  # ring
            r = np.hypot((xx - cx) / rng.uniform(5, 6.5), (yy - cy) / rng.uniform(7, 8.5))
            d = np.abs(r - 1) * 6
        else:
            segs = {1: [((0.5, -8), (-0.5, 8))], 2: [((-5, -7), (5, -7)), ((5, -7), (-1, 8))],
                    3: [((-6, 0), (6, 0)), ((0, -8), (0, 8))]}[kind]
            d = np.full((28, 28), np.inf)
            for (x0, y0), (x1, y1) in segs:
                p0, p1 = np.array([cx + x0, cy + y0]), np.array([cx + x1, cy + y1])
                v = p1 - p0
                t = np.clip(((xx - p0[0]) * v[0] + (yy - p0[1]) * v[1]) / (v @ v), 0, 1)
                d = np.minimum(d, np.hypot(xx - p0[0] - t * v[0], yy - p0[1] - t * v[1]))
        out[i] = np.clip(2.2 - d, 0, 1)
    return np.rint(out * 255).astype(np.uint8)


def synthetic_color_images(n: int, seed: int = 0) -> np.ndarray:
    """`n` smooth random colour uint8 images [n, 32, 32, 3] (4x4 random colours, cubic upsampling)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0.1, 0.9, (n, 4, 4, 3))
    img = ndimage.zoom(low, (1, 8, 8, 1), order=3, mode="nearest")
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


# ---------------------------------------------------------------------------
# Figure


def show_grid(images: np.ndarray, suite: str, out_path: Path, seed: int = 0) -> Path:
    """Write a PNG of every corruption of `suite` applied to a few clean images.

    mnist: one row per image (up to 4), columns clean + each corruption (one severity).
    cifar10: one row per corruption, columns clean + severities 1..5, on the first image."""
    from ..report.figures import subplots, save_figure
    table = _suite(suite)
    out_path = Path(out_path)
    names = list(table)
    if suite == "mnist":
        imgs = images[:4]
        cols = [("clean", imgs)] + [(nm, corrupt(imgs, nm, 1, seed, suite)) for nm in names]
        fig, axes = subplots(len(imgs), len(cols), figsize=(1.0 * len(cols), 1.1 * len(imgs)),
                             squeeze=False)
        for j, (title, batch) in enumerate(cols):
            for i in range(len(imgs)):
                ax = axes[i, j]
                ax.imshow(np.asarray(batch[i]).squeeze(), cmap="gray", vmin=0, vmax=255)
                ax.axis("off")
                if i == 0:
                    ax.set_title(title.replace("_", "\n"), fontsize=6)
    else:
        img = images[:1]
        fig, axes = subplots(len(names), 6, figsize=(6 * 1.0, len(names) * 1.0), squeeze=False)
        for i, nm in enumerate(names):
            row = [img[0]] + [corrupt(img, nm, s, seed, suite)[0] for s in SEVERITIES[suite]]
            for j, im in enumerate(row):
                ax = axes[i, j]
                ax.imshow(np.asarray(im).astype(np.uint8))
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title("clean" if j == 0 else f"severity {j}", fontsize=7)
                if j == 0:
                    ax.set_ylabel(nm.replace("_", " "), fontsize=6)
    save_figure(fig, out_path)
    return out_path
